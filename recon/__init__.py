"""The `recon` command line: the one place that composes scenes, reconstruct, pruning and viewer."""
