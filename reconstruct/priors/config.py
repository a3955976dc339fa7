"""Typed configuration of the sparse-view priors: one sub-config per prior, each with an on/off flag.

Every loss-type prior carries the same schedule fields (weight, start, stop, warmup, every) so that
``--priors.<name>.enabled/--priors.<name>.weight/...`` work the same way on the command line.
Everything here is off by default: ``--preset vanilla`` is plain 3DGS, ``--preset sparse`` turns the
helpful ones on (``reconstruct.priors.presets``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class DropoutConfig:
    """DropGaussian: random Gaussians removed from each training render, survivors' opacity scaled 1/(1-p)."""

    enabled: bool = False
    """Apply Gaussian dropout to training renders (never at evaluation)."""
    rate: float = 0.1
    """Probability p that a Gaussian is dropped from one training render."""
    start: int = 0
    """First step with dropout."""
    stop: int | None = None
    """Last step with dropout (None = to the end)."""
    warmup: int = 0
    """Raise the rate linearly from 0 to ``rate`` over this many steps after ``start``."""


@dataclass
class BinocularConfig:
    """Binocular3DGS self-supervision: a virtual camera shifted along the x axis of a training camera
    is rendered, warped back into the training view with the training view's rendered depth and
    compared with the training photo."""

    enabled: bool = False
    """Add the binocular consistency loss."""
    weight: float = 0.3
    """Loss weight (after the schedule ramp)."""
    start: int = 200
    """First step with the loss (the depth is meaningless before a few hundred steps)."""
    stop: int | None = None
    """Last step with the loss (None = to the end)."""
    warmup: int = 0
    """Ramp the weight linearly from 0 over this many steps."""
    every: int = 1
    """Apply every this many steps (each application renders one more view)."""
    shift: float = 0.05
    """Baseline of the virtual camera as a fraction of the scene extent (random sign per step)."""
    ssim_lambda: float = 0.2
    """D-SSIM share of the warped-image loss (rest is L1)."""


@dataclass
class DenseInitConfig:
    """Dense initialization from matches between training views: plane-sweep stereo with normalized
    cross-correlation over pairs of training views (known poses), cross-checked, back-projected and
    added to the sparse SfM points."""

    enabled: bool = False
    """Replace the initial point cloud by SfM points plus plane-sweep matches."""
    depths: int = 64
    """Depth hypotheses between near and far (uniform in inverse depth)."""
    window: int = 7
    """NCC window size in pixels."""
    min_ncc: float = 0.6
    """Keep a pixel whose best NCC is at least this."""
    max_reproj_rel: float = 0.03
    """Cross-check: keep a match when the neighbour's depth agrees within this relative difference."""
    stride: int = 2
    """Keep every stride-th pixel in each direction (limits the point count)."""
    max_points: int = 60_000
    """Subsample the dense points to at most this many."""
    max_width: int = 256
    """Run the stereo on images at most this wide (resized copies)."""


@dataclass
class PseudoViewsConfig:
    """FSGS-style pseudo views: cameras interpolated between two training cameras, rendered and
    regularized without ground truth (depth smoothness, opacity toward 0 or 1)."""

    enabled: bool = False
    """Render a pseudo view and add its regularizers."""
    weight: float = 1.0
    """Overall weight (multiplies the two terms below)."""
    start: int = 300
    """First step with pseudo views."""
    stop: int | None = None
    """Last step (None = to the end)."""
    warmup: int = 0
    """Ramp the weight linearly from 0 over this many steps."""
    every: int = 2
    """Render a pseudo view every this many steps."""
    smooth_weight: float = 0.1
    """Edge-aware (rendered-color edges) total variation of the normalized pseudo-view depth."""
    opacity_weight: float = 0.01
    """Binary entropy of the pseudo view's accumulated opacity (floaters are half-transparent)."""
    jitter: float = 0.02
    """Extra random translation of the pseudo camera, as a fraction of the scene extent."""


@dataclass
class SfmDepthConfig:
    """Sparse depth from points triangulated in the training views (DS-NeRF style), projected into
    each training view with a z-buffer (only the nearest point per cell is kept)."""

    enabled: bool = False
    """Add the sparse depth loss."""
    weight: float = 0.1
    """Loss weight."""
    start: int = 0
    """First step with the loss."""
    stop: int | None = None
    """Last step (None = to the end)."""
    warmup: int = 0
    """Ramp the weight linearly from 0 over this many steps."""
    every: int = 1
    """Apply every this many steps."""
    cell: int = 4
    """z-buffer cell in pixels for the visibility test."""


@dataclass
class MonoDepthConfig:
    """Monocular depth from a `transformers` depth-estimation model, computed once per training view
    and cached in RUN/priors/mono_depth; Pearson correlation and local depth ranking losses."""

    enabled: bool = False
    """Use monocular depth (skipped with one line when the model cannot be loaded)."""
    model: str = "depth-anything/Depth-Anything-V2-Small-hf"
    """Hub id or local folder of a depth-estimation model (transformers AutoModelForDepthEstimation)."""
    output_is_disparity: bool = True
    """The model predicts relative inverse depth (Depth Anything, DPT, MiDaS); False for metric depth."""
    weight: float = 0.05
    """Weight of the Pearson term (1 - correlation of rendered and predicted disparity)."""
    ranking_weight: float = 0.05
    """Weight of the local depth ranking hinge (SparseNeRF); 0 turns it off."""
    ranking_pairs: int = 4096
    """Pixel pairs sampled per step for the ranking loss."""
    ranking_radius: int = 6
    """Pairs are drawn within this many pixels of each other."""
    ranking_margin: float = 1e-4
    """Hinge margin (in normalized depth)."""
    start: int = 0
    """First step with the losses."""
    stop: int | None = None
    """Last step (None = to the end)."""
    warmup: int = 0
    """Ramp the weights linearly from 0 over this many steps."""
    every: int = 1
    """Apply every this many steps."""


@dataclass
class DiffusionConfig:
    """Diffusion prior: every ``interval`` steps render novel views between training cameras, refine
    them with image-to-image diffusion at low strength, and fit them as soft targets."""

    enabled: bool = False
    """Use the diffusion prior (skipped with one line when the model cannot be loaded)."""
    model: str = "stabilityai/stable-diffusion-2-1-base"
    """Hub id or local folder of a diffusers image-to-image capable pipeline."""
    prompt: str = ""
    """Text prompt for conditional pipelines."""
    strength: float = 0.25
    """img2img strength: fraction of the noise schedule that is re-noised and denoised."""
    steps: int = 20
    """Inference steps of the full schedule (about strength * steps are run)."""
    guidance_scale: float = 1.0
    """Classifier-free guidance (1 = off, one UNet pass per step)."""
    n_views: int = 4
    """Novel views refined at each refresh."""
    interval: int = 500
    """Refresh the refined targets every this many steps (from ``start``)."""
    weight: float = 0.1
    """Weight of the L1 to the refined views."""
    start: int = 500
    """First refresh."""
    stop: int | None = None
    """Last step with the loss (None = to the end)."""
    warmup: int = 0
    """Ramp the weight linearly from 0 over this many steps."""
    every: int = 2
    """Fit one refined view every this many steps."""
    max_size: int = 512
    """Refine at most this many pixels on the long side (multiple of 8)."""


@dataclass
class PriorsConfig:
    """Sparse-view priors (all off by default; ``--preset sparse`` turns the helpful ones on)."""

    dropout: DropoutConfig = field(default_factory=DropoutConfig)
    binocular: BinocularConfig = field(default_factory=BinocularConfig)
    dense_init: DenseInitConfig = field(default_factory=DenseInitConfig)
    pseudo_views: PseudoViewsConfig = field(default_factory=PseudoViewsConfig)
    sfm_depth: SfmDepthConfig = field(default_factory=SfmDepthConfig)
    mono_depth: MonoDepthConfig = field(default_factory=MonoDepthConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    cache_dir: Path | None = None
    """Where model outputs are cached (default RUN/priors)."""


def ramp(cfg, step: int, value: float | None = None) -> float:
    """Scheduled value of ``value`` (default cfg.weight) at ``step``: 0 outside [start, stop] or off
    the ``every`` grid, linear warmup after start."""
    value = cfg.weight if value is None else value
    if not cfg.enabled or step < cfg.start or (cfg.stop is not None and step > cfg.stop):
        return 0.0
    if (step - cfg.start) % max(getattr(cfg, "every", 1), 1):
        return 0.0
    if cfg.warmup > 0:
        value *= min(1.0, (step - cfg.start + 1) / cfg.warmup)
    return float(value)
