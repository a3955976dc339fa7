"""Hash-grid NeRF (Instant-NGP style): hash encoding, field, occupancy-grid sampler, trainer.

Submodules are imported on demand (``from reconstruct.nerf.field import NerfField``); nothing
heavy happens when this package is imported.
"""
