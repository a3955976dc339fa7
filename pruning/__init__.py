"""Compression (learnable masks, codebooks, ADMM grid pruning) and file exporters/readers."""
