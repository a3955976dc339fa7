"""Training configuration: one typed dataclass per concern, turned into the CLI by tyro.

The whole ``TrainConfig`` is saved with every run as JSON (``RUN/config.json``) and read back by
``recon train --config RUN/config.json``. Presets (``reconstruct.presets``) are derived from these
defaults; the common options carry short flags (``--iters``, ``--downscale``...).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import tyro

from reconstruct.nerf.config import NerfConfig
from reconstruct.priors.config import PriorsConfig

Short = tyro.conf.arg(prefix_name=False)
"""Marks a nested field whose flag has no prefix (``--iters`` rather than ``--optim.iters``)."""


@dataclass
class DataConfig:
    """Which frames, at which resolution."""

    downscale: Annotated[float | None, Short] = None
    """Divide image size by this factor (LLFF picks the matching images_N folder)."""
    resolution: Annotated[int | None, Short] = None
    """Target image width in pixels (alternative to --downscale)."""
    test_every: int = 1
    """Evaluate on every k-th test frame (Blender: 1 = all 200, 8 = the common 25-view subset)."""


@dataclass
class InitConfig:
    """Where the Gaussians start."""

    kind: Literal["sfm", "random"] = "sfm"
    """sfm: triangulate SIFT matches between the training views with their known poses (pycolmap);
    random: uniform points in the training frustums' bounds (also the fallback when sfm finds too few)."""
    n_random: int = 10_000
    """Number of random points."""
    min_sfm_points: int = 50
    """Fall back to random init below this many triangulated points."""
    initial_opacity: float = 0.1
    """Opacity of every initial Gaussian."""
    scale_neighbors: int = 3
    """Initial scale = mean distance to this many nearest neighbours."""


@dataclass
class OptimConfig:
    """Adam learning rates and schedule (3DGS defaults)."""

    iters: Annotated[int, Short] = 7_000
    """Training steps (one training view per step)."""
    lr_means: float = 1.6e-4
    """Initial position learning rate (times the scene extent)."""
    lr_means_final: float = 1.6e-6
    """Final position learning rate (exponential decay over the run)."""
    lr_scales: float = 5e-3
    """Log-scale learning rate."""
    lr_quats: float = 1e-3
    """Rotation learning rate."""
    lr_opacities: float = 5e-2
    """Opacity-logit learning rate."""
    lr_sh0: float = 2.5e-3
    """DC color learning rate."""
    lr_shN: float = 2.5e-3 / 20
    """Higher-order SH learning rate."""
    sh_degree: int = 3
    """Final spherical-harmonics degree."""
    sh_degree_interval: int = 1000
    """Raise the active SH degree by one every this many steps."""


@dataclass
class DensifyConfig:
    """gsplat DefaultStrategy: clone/split/prune/opacity reset (3DGS schedule)."""

    enabled: bool = True
    """Densify and prune at all."""
    grow_grad2d: float = 2e-4
    """Image-plane gradient threshold for cloning/splitting."""
    prune_opa: float = 5e-3
    """Prune Gaussians below this opacity."""
    refine_start_iter: int = 500
    """First densification step."""
    refine_stop_iter: int = 5_000
    """Last densification step."""
    refine_every: int = 100
    """Densify every this many steps."""
    reset_every: int = 3_000
    """Reset opacities every this many steps."""
    max_gaussians: int = 300_000
    """Stop growing beyond this many Gaussians (CPU memory/time guard)."""


@dataclass
class LossConfig:
    """Photometric loss: (1 - lambda) L1 + lambda D-SSIM."""

    ssim_lambda: float = 0.2
    """Weight of the D-SSIM term."""


@dataclass
class OutputConfig:
    """Where and how often results are written."""

    out: Annotated[Path | None, Short] = None
    """Run folder (default outputs/<scene>-<method>-<views>v)."""
    checkpoint_every: int = 1_000
    """Write an atomic checkpoint every this many steps (and at the end)."""
    log_every: int = 50
    """Record loss/PSNR for the curves every this many steps."""
    eval_at_end: bool = True
    """Render and score the test views when training ends."""


@dataclass
class TrainConfig:
    """Everything that defines a training run."""

    scene: tyro.conf.Positional[Path]
    """Scene folder (Blender, LLFF, COLMAP or nerfstudio layout)."""
    views: int | None = None
    """Training views (sparse-view split of the papers); None = every non-test frame."""
    method: Literal["splat", "nerf"] = "splat"
    """Gaussian splats or hash-grid NeRF."""
    preset: str = "vanilla"
    """Named recipe the defaults came from (recorded for the record; see reconstruct.presets)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto = CUDA when available."""
    seed: int = 0
    """Seed for every random choice (init, dropout, view order)."""
    masks: bool = False
    """Train learnable masks from the start (Compact 3DGS) and remove masked Gaussians."""
    viewer: bool = False
    """Serve a live viser viewer while training."""
    viewer_host: str = "127.0.0.1"
    """Address the live viewer binds (0.0.0.0 to reach it from other machines)."""
    viewer_port: int = 8080
    """Port of the live viewer (the next free one when taken)."""
    data: DataConfig = field(default_factory=DataConfig)
    init: InitConfig = field(default_factory=InitConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    densify: DensifyConfig = field(default_factory=DensifyConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    priors: PriorsConfig = field(default_factory=PriorsConfig)
    """Sparse-view priors (reconstruct.priors); all off in --preset vanilla."""
    nerf: NerfConfig = field(default_factory=NerfConfig)
    """Hash-grid NeRF model, sampler and regularizers (used with --method nerf)."""


def to_json(cfg: TrainConfig) -> str:
    """The config as JSON (paths as strings)."""
    return json.dumps(dataclasses.asdict(cfg), indent=2, default=str)


def from_dict(cls: type, data: dict):
    """Rebuild a (nested) config dataclass from ``dataclasses.asdict`` output; unknown keys are an error."""
    hints = typing.get_type_hints(cls, include_extras=True)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise KeyError(f"unknown config keys for {cls.__name__}: {sorted(unknown)}")
    kwargs = {}
    for name, value in data.items():
        kind = _strip(hints[name])
        if dataclasses.is_dataclass(kind):
            kwargs[name] = from_dict(kind, value)
        elif value is not None and _is_path(kind):
            kwargs[name] = Path(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _strip(hint):
    while typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    return hint


def _is_path(hint) -> bool:
    hint = _strip(hint)
    if hint is Path:
        return True
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_strip(a) is Path for a in typing.get_args(hint))
    return False
