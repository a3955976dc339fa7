"""NeRF-specific training options (one typed dataclass; the shared ones live in TrainConfig).

Imports nothing heavy, so ``reconstruct.config.TrainConfig`` can embed it as ``nerf: NerfConfig``.
Until it does, ``recon train --method nerf`` uses these defaults (sparse-view regularizers on when
``--views`` <= 9) and records them in the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


EncodingImpl = Literal["auto", "tcnn", "torch", "numba", "reference"]
"""Hash-encoding implementations (reference: plain autograd, for tests)."""


@dataclass
class NerfConfig:
    """Hash-grid NeRF: model size, sampling, optimizer and sparse-view regularizers."""

    log2_hashmap_size: int | None = None
    """Entries per hash level = 2**this; None = 19 on CUDA, 17 on CPU (Adam over 12M floats costs
    ~0.6 s a step on 2 CPU cores)."""
    n_levels: int = 16
    """Hash-grid levels."""
    max_resolution: int = 2048
    """Finest hash-grid resolution (sets the per-level scale from the base resolution 16)."""
    encoding: EncodingImpl = "auto"
    """Hash-encoding implementation (auto: tcnn on CUDA when built, numba on CPU, else torch)."""
    space: Literal["auto", "aabb", "contract"] = "auto"
    """auto: AABB [-1.5, 1.5]^3 (dataset units) for Blender/synthetic scenes, contraction otherwise."""
    rays_per_batch: int | None = None
    """Rays per training step; None = 4096 on CUDA, 512 on CPU."""
    n_samples: int | None = None
    """Candidate samples per ray before occupancy/early-termination culling; None = 128 on CUDA, 64 on CPU."""
    grid_resolution: int | None = None
    """Occupancy-grid cells per side; None = 128 on CUDA, 48 on CPU."""
    grid_decay: float = 0.95
    """Occupancy EMA decay per update (Instant-NGP: 0.95 every 16 steps, tuned for ~30k-step runs; a few
    hundred CPU steps need a faster decay such as 0.8 or empty cells never drop below the threshold)."""
    early_stop_in_training: bool = False
    """Drop samples behind opaque surfaces during training (costs a no-grad density pass)."""
    lr: float = 1e-2
    """Adam learning rate (hash table and MLPs), exponentially decayed to 3% at the end."""
    weight_decay_mlp: float = 1e-6
    """L2 weight decay on the MLP weights."""
    regularize: Literal["auto", "on", "off"] = "auto"
    """Sparse-view regularizers: auto = on when the run has <= 9 training views."""
    freq_reg_fraction: float = 0.5
    """FreeNeRF frequency regularization: all hash levels visible after this fraction of the run."""
    freq_reg_start_levels: int = 4
    """Hash levels visible from step 0."""
    occ_reg_weight: float = 0.01
    """FreeNeRF occlusion regularization weight (density of the first samples of each ray)."""
    occ_reg_samples: int = 8
    """Candidate samples, from the near end, the occlusion regularizer covers."""
    s3im_weight: float = 0.5
    """S3IM loss weight."""
    depth_rank_weight: float = 0.1
    """SparseNeRF depth-ranking weight (used only with a depth prior)."""
    depth_prior: Path | None = None
    """Folder with one [H, W] float .npy camera-z depth map per training frame, named <frame>.npy."""
    depth_patch: int = 8
    """Side of the square patches the depth-ranking loss compares pixels in."""
    eval_chunk: int = 8192
    """Rays per chunk when rendering whole images."""
