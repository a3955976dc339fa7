"""Typed configuration of the sparse-view priors: one sub-config per prior, each with an on/off flag
and the one shared ``Schedule`` (start, stop, warmup, every).

``enabled`` is three-valued: ``None`` (the default) means "as the preset says" (``--preset sparse``
turns the helpful ones on, ``vanilla`` none), ``True``/``False`` on the command line win over the
preset. ``reconstruct.config.resolve`` replaces every ``None`` before a run starts, so the run's
config.json always says exactly what ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Schedule:
    """When a prior acts: from ``start`` to ``stop`` (inclusive), every ``every`` steps, ramped up
    linearly over ``warmup`` steps."""

    start: int = 0
    """First step."""
    stop: int | None = None
    """Last step (None = to the end)."""
    warmup: int = 0
    """Ramp the weight linearly from 0 over this many steps after ``start``."""
    every: int = 1
    """Act every this many steps (each application of a render-based prior renders one more view)."""

    def weight(self, step: int, value: float, *, enabled: bool | None = True) -> float:
        """``value`` scheduled at ``step``: 0 outside [start, stop] or off the ``every`` grid, ramped
        linearly over ``warmup`` steps after start."""
        if not enabled or step < self.start or (self.stop is not None and step > self.stop):
            return 0.0
        if (step - self.start) % max(self.every, 1):
            return 0.0
        if self.warmup > 0:
            value *= min(1.0, (step - self.start + 1) / self.warmup)
        return float(value)


def _schedule(**kw: Any) -> Schedule:
    return field(default_factory=lambda: Schedule(**kw))

@dataclass
class DropoutConfig:
    """DropGaussian: random Gaussians removed from each training render, survivors' opacity scaled 1/(1-p)."""

    enabled: bool | None = None
    """Apply Gaussian dropout to training renders (never at evaluation); None = as the preset says."""
    rate: float = 0.2
    """Probability p that a Gaussian is dropped from one training render (with ``progressive``: at
    the last step)."""
    progressive: bool = True
    """Raise the rate linearly from 0 at step 0 to ``rate`` at the last step (DropGaussian's released
    schedule: 0.2 * step / 10,000); False = ``rate`` throughout (after the schedule's warmup)."""
    schedule: Schedule = _schedule()
    """When dropout acts (the warmup raises the rate from 0)."""


@dataclass
class BinocularConfig:
    """Binocular3DGS self-supervision: a virtual camera shifted along the x axis of a training camera
    is rendered, warped back into the training view with the training view's rendered depth and
    compared with the training photo."""

    enabled: bool | None = None
    """Add the binocular consistency loss; None = as the preset says."""
    weight: float = 0.3
    """Loss weight (after the schedule ramp)."""
    schedule: Schedule = _schedule(start=200, every=1)
    """When the prior acts."""
    shift: float = 0.05
    """Baseline of the virtual camera as a fraction of the scene extent (random sign per step)."""
    ssim_lambda: float = 0.2
    """D-SSIM share of the warped-image loss (rest is L1)."""


@dataclass
class PseudoViewsConfig:
    """FSGS-style pseudo views: cameras interpolated between two training cameras, rendered and
    regularized without ground truth (depth smoothness, opacity toward 0 or 1)."""

    enabled: bool | None = None
    """Render a pseudo view and add its regularizers; None = as the preset says."""
    weight: float = 1.0
    """Overall weight (multiplies the two terms below)."""
    schedule: Schedule = _schedule(start=300, every=2)
    """When the prior acts."""
    smooth_weight: float = 0.1
    """Edge-aware (rendered-color edges) total variation of the normalized pseudo-view depth."""
    opacity_weight: float = 0.01
    """Binary entropy of the pseudo view's accumulated opacity (floaters are half-transparent)."""
    jitter: float = 0.02
    """Extra random translation of the pseudo camera, as a fraction of the scene extent."""
    resolution_scale: float = 0.5
    """Render the pseudo view at this fraction of the training size (its two terms are low-frequency;
    half size costs a quarter of the pixels)."""


@dataclass
class SfmDepthConfig:
    """Sparse depth from points triangulated in the training views (DS-NeRF style), projected into
    each training view with a z-buffer (only the nearest point per cell is kept)."""

    enabled: bool | None = None
    """Add the sparse depth loss; None = as the preset says."""
    weight: float = 0.1
    """Loss weight."""
    schedule: Schedule = _schedule(start=0, every=1)
    """When the prior acts."""
    cell: int = 4
    """z-buffer cell in pixels for the visibility test."""
    min_points: int | None = None
    """Fewer triangulated points than this and the loss stays off; None = the init's own minimum
    (--init.min-sfm-points: points too few to start from are too few to trust as depth. On lego 8
    views, 400x400, 10k steps, its 82 points cost 0.31 dB PSNR on the 200 test views)."""


@dataclass
class MonoDepthConfig:
    """Monocular depth from a `transformers` depth-estimation model, computed once per training view
    and cached in RUN/priors/mono_depth; Pearson correlation and local depth ranking losses."""

    enabled: bool | None = None
    """Use monocular depth (skipped with one line when the model cannot be loaded); None = as the preset says."""
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
    schedule: Schedule = _schedule(start=0, every=1)
    """When the prior acts."""


@dataclass
class DiffusionConfig:
    """Diffusion prior: every ``interval`` steps render novel views between training cameras, refine
    them with image-to-image diffusion at low strength, and fit them as soft targets."""

    enabled: bool | None = None
    """Use the diffusion prior (skipped with one line when the model cannot be loaded); None = as the preset says."""
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
    schedule: Schedule = _schedule(start=500, every=2)
    """When the prior acts."""
    max_size: int = 512
    """Refine at most this many pixels on the long side (multiple of 8)."""


@dataclass
class NeedleConfig:
    """A hinge on each Gaussian's largest-to-middle scale ratio (reconstruct/priors/needles.py): line
    segments along training rays, which few views cannot tell from surfaces, are pulled back into
    discs or blobs."""

    enabled: bool | None = None
    """Add the needle penalty; None = as the preset says."""
    weight: float = 0.1
    """Weight of the mean hinge ln(s_max / s_mid) - ln(max_ratio) over the Gaussians."""
    max_ratio: float = 10.0
    """Largest-to-middle scale ratio that is free."""
    schedule: Schedule = _schedule(start=0, every=1)
    """When the prior acts."""


@dataclass
class PriorsConfig:
    """Sparse-view priors (all off by default; ``--preset sparse`` turns the helpful ones on)."""

    dropout: DropoutConfig = field(default_factory=DropoutConfig)
    binocular: BinocularConfig = field(default_factory=BinocularConfig)
    pseudo_views: PseudoViewsConfig = field(default_factory=PseudoViewsConfig)
    sfm_depth: SfmDepthConfig = field(default_factory=SfmDepthConfig)
    mono_depth: MonoDepthConfig = field(default_factory=MonoDepthConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    needles: NeedleConfig = field(default_factory=NeedleConfig)
    cache_dir: Path | None = None
    """Where model outputs are cached (default: the run folder's priors/)."""

    def names(self) -> tuple[str, ...]:
        """The priors' sub-config names."""
        return ("dropout", "binocular", "pseudo_views", "sfm_depth", "mono_depth", "diffusion", "needles")


