"""Reconstruction: Gaussian-splat rasterizer backends and trainer, hash-grid NeRF, priors, evaluation."""
