"""Training configuration: typed dataclasses with a docstring per field, one per method.

``SplatTrainConfig`` and ``NerfTrainConfig`` share ``TrainCommon`` (scene, split, device, seed,
steps, output) and add only what their method reads, so ``recon train nerf --masks`` is an unknown
option, not a silently ignored one. The CLI (``recon``) turns them into the ``recon train splat`` /
``recon train nerf`` subcommands with tyro.

Some defaults depend on the preset or the device; they are ``None`` in the dataclasses and
``resolve`` replaces them before a run starts, so ``RUN/config.json`` holds the values that ran
(``recon train --config RUN/config.json`` reproduces a run on any machine).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from reconstruct.nerf.config import NerfConfig
from reconstruct.priors.config import PriorsConfig

Short = tyro.conf.arg(prefix_name=False)
"""Marks a nested field whose flag has no prefix (``--downscale`` rather than ``--data.downscale``)."""

CPU_GAUSSIAN_BUDGET = 30_000
"""Default --densify.max-gaussians on a CPU (see DensifyConfig.max_gaussians)."""

SPARSE_GROW_GRAD2D = 5e-4
"""The sparse preset's densification threshold (DropGaussian's ``densify_grad_threshold``)."""
SPARSE_PRIORS = ("dropout", "sfm_depth")
"""Priors the sparse preset turns on (why: reconstruct/priors/__init__.py)."""


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
class DenseInitConfig:
    """Dense initialization: plane-sweep stereo with normalized cross-correlation over pairs of
    training views (known poses), cross-checked, back-projected and added to the SfM points."""

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
    skip_background: bool = True
    """Drop pixels whose colour is the render background's (within 2/255 on every channel: Blender's
    white, DTU's black): the background already draws them, and a matched point there is a floater
    in front of the object from the other views (Blender mic 8 views: 45% of the plane-sweep points
    were background white)."""


@dataclass
class InitConfig:
    """Where the Gaussians start."""

    kind: Literal["auto", "sfm", "random", "dense", "ply"] = "auto"
    """sfm: triangulate SIFT matches between the training views with their known poses (pycolmap);
    dense: sfm points plus plane-sweep matches; random: uniform points in the training frustums;
    ply: the Gaussians of --init.ply; auto: sfm."""
    fallback: Literal["auto", "random", "dense"] = "auto"
    """What replaces sfm points when too few are triangulated (below --init.min-sfm-points): random
    points, or the plane-sweep matches of the training views; auto: dense in the sparse preset,
    random otherwise."""
    ply: Path | None = None
    """Splat file to start from (--init.kind ply)."""
    n_random: int = 10_000
    """Number of random points."""
    min_sfm_points: int | None = None
    """Below this many triangulated points the fallback replaces them (None: 200 in the sparse
    preset, whose fallback is the plane-sweep matches: the demo's 8 views at 100 px triangulate 58
    points, and with exhaustive matching 80, which scored 20.0 dB after 2000 steps against 31.0 from
    the plane-sweep matches; 50 otherwise)."""
    matching: Literal["auto", "exhaustive", "epipolar"] = "auto"
    """How sfm matches SIFT features: exhaustive: COLMAP's nearest neighbours, kept when they agree
    with the known poses (what 3DGS starts from); epipolar: the known poses pick each feature's
    candidates before the ratio test (reconstruct.init.epipolar_matches); auto: epipolar in the sparse
    preset, exhaustive otherwise."""
    sift_upscale: int | None = None
    """Extract SIFT on images this many times larger (None: 2 in the sparse preset, 1 otherwise).
    Fern, 3 views at 504x378: 374 points exhaustive, 595 epipolar, 3,585 epipolar on 2x images."""
    initial_opacity: float = 0.1
    """Opacity of every initial Gaussian."""
    scale_neighbors: int = 3
    """Initial scale = mean distance to this many nearest neighbours."""
    dense: DenseInitConfig = field(default_factory=DenseInitConfig)
    """Plane-sweep settings of --init.kind dense."""


@dataclass
class OptimConfig:
    """Adam learning rates and the SH schedule (3DGS defaults)."""

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
    grow_grad2d: float | None = None
    """Image-plane gradient threshold for cloning/splitting; None = as the preset says: 2e-4 (3DGS)
    vanilla, 5e-4 sparse (DropGaussian's released setting: fewer, larger Gaussians from 3 views)."""
    prune_opa: float = 5e-3
    """Prune Gaussians below this opacity."""
    prune_big: bool | None = None
    """After the first opacity reset, also prune Gaussians larger than a tenth of the scene scale
    (3DGS, gsplat); None = as the preset says: on vanilla, off sparse (DropGaussian prunes by opacity
    only; on fern 3 views this prune removed 3,901 of 30k Gaussians in one step at step 3100)."""
    prune_unseen: bool | None = None
    """At each refinement also prune the Gaussians that no training render since the last one drew
    (projected outside every training image): nothing in the loss reaches them, and on a few views
    they hang in front of novel cameras (DTU scan24, 3 views at 400x300, the final state of a 10k-step
    sparse run: 0.8% of the splats lay outside all three training images and took 4.7 dB off test view
    24, next to training view 25). None = as the preset says: off vanilla (3DGS, gsplat), on sparse."""
    prune_near: bool | None = None
    """At each refinement also prune the Gaussians that a training render since the last one drew
    closer to its camera than the scene's near bound (LLFF's poses_bounds, Blender's 2, DTU's
    camera distance minus the unit sphere): in front of every surface, they explain one view's
    pixels and hang in front of the object from the others. None = as the preset says: off vanilla,
    on sparse (a 2,000-step sparse schedule on one thread: DTU scan24 3 views 8.18 -> 8.88 dB masked,
    517 pruned; fern 3 views 504x378 18.22 -> 18.64 dB, 367 pruned)."""
    refine_start_iter: int = 500
    """First densification step."""
    refine_stop_iter: int | None = None
    """Last densification step; None = as the preset says: 5,000 vanilla, the whole run sparse
    (DropGaussian densifies until its last step)."""
    refine_every: int = 100
    """Densify every this many steps."""
    reset_every: int = 3_000
    """Reset opacities every this many steps."""
    max_gaussians: int | None = None
    """Gaussian budget: when a refinement would grow the model beyond it, only the candidates with
    the largest image-plane gradients grow (pruning goes on, so the budget is spent where the error
    is); None = 30,000 on a CPU (the 10k-step schedule of fern 3 views at 504x378 in under 45
    minutes on 2 cores; unbudgeted, 3DGS densification passes 100k by step 2000 there), 1,000,000 on a GPU."""
    regrow_at_budget: bool | None = None
    """Once the budget is reached, go on growing into the room each refinement's pruning leaves (the
    largest gradients first); False = no growth after the first refinement the budget limited
    (pruning and opacity resets go on). None = as the preset says: on in vanilla (3DGS densifies
    on), off in sparse (regrowth at the budget cost fern 0.18 dB, flower 0.09 and DTU scan24 0.81 at 10k)."""


@dataclass
class LossConfig:
    """Photometric loss: (1 - lambda) L1 + lambda D-SSIM."""

    ssim_lambda: float = 0.2
    """Weight of the D-SSIM term."""
    fused_ssim: bool = True
    """D-SSIM through the backend's fused kernel (forward and backward in one pass) where it has one
    (the CPU kernel); the same value as the torch version."""


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
    eval_every: int = 0
    """Also score the test views every this many steps, for the test-PSNR curve in curves.png
    (0 = only at the end; each evaluation renders every test view once)."""


@dataclass
class CameraRefineConfig:
    """Camera refinement while training: a per-view SE(3) correction (6-vector, exp map, left-multiplied
    onto T_world_cam) with its own Adam (reconstruct/cameras.py)."""

    enabled: bool | None = None
    """Refine the training cameras; None = as --poses says (on for estimate and refine, off for dataset)."""
    lr: float = 1e-4
    """Initial Adam learning rate (radians; translation in units of the scene extent)."""
    lr_final: float = 1e-6
    """Final learning rate (exponential decay from --cameras.start-step to the last step)."""
    start_step: int = 100
    """First step that updates the cameras (before it the splats are too rough to say where a camera
    is: 20 steps at 1e-3 from step 0 took a box scene's SfM cameras from 0.13 to 0.35 degrees)."""
    anchor_first: bool = True
    """Keep the first training view's pose (pins the gauge: moving every camera and the splats together
    changes no image)."""
    test_steps: int = 60
    """Pose-free evaluation: photometric steps per test camera with the splats frozen (InstantSplat's
    test-time pose alignment)."""
    test_lr: float = 1e-2
    """Learning rate of the test-time pose alignment."""


PoseSource = Literal["auto", "dataset", "estimate", "refine"]

CONTROL_FIELDS = ("config", "resume", "overwrite")
"""Fields that steer one invocation and are not part of a run's config.json."""


@dataclass
class TrainCommon:
    """What every method's run has."""

    scene: tyro.conf.Positional[Path | None] = None
    """Scene folder (Blender, LLFF, COLMAP or nerfstudio layout); not needed with --resume."""
    views: int | None = None
    """Training views (sparse-view split of the papers); None = every non-test frame."""
    iters: int = 7_000
    """Training steps."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto = the accelerator when there is one (written into config.json as resolved)."""
    seed: int = 0
    """Seed for every random choice (init, dropout, view order)."""
    config: Path | None = None
    """Start from a run's config (RUN or RUN/config.json); options given here override it."""
    resume: Path | None = None
    """Continue the run in this folder from its checkpoint (options that contradict it are refused)."""
    overwrite: bool = False
    """Replace an existing output folder."""
    poses: PoseSource = "auto"
    """Where the cameras come from. dataset: the scene's own poses (today's behaviour); estimate: ignore
    them and estimate poses from the training images only (COLMAP via pycolmap, into RUN/sfm and
    RUN/poses.json; test views are then scored after a similarity alignment and test-time pose
    refinement); refine: the dataset's poses plus camera refinement while training. auto = dataset
    for posed scenes, estimate for a folder of photos."""
    holdout: int = 0
    """Photo folders: keep this many photos (evenly spaced) out of training and score them."""
    data: DataConfig = field(default_factory=DataConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    @property
    def method(self) -> str:
        raise NotImplementedError


@dataclass
class SplatTrainConfig(TrainCommon):
    """Gaussian splats (3DGS; gsplat on CUDA, the project's numba kernel on CPU)."""

    preset: Literal["auto", "vanilla", "sparse"] = "auto"
    """Recipe for the defaults marked "as the preset says": sparse (few-view priors, dense init) when
    --views <= 9, vanilla (plain 3DGS) otherwise; flags given here still win."""
    masks: bool = False
    """Train learnable masks from the start (Compact 3DGS) and remove masked Gaussians."""
    viewer: bool = False
    """Serve a live viser viewer while training."""
    viewer_host: str = "127.0.0.1"
    """Address the live viewer binds (0.0.0.0 to reach it from other machines)."""
    viewer_port: int = 8080
    """Port of the live viewer (the next free one when taken)."""
    init: InitConfig = field(default_factory=InitConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    densify: DensifyConfig = field(default_factory=DensifyConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    priors: PriorsConfig = field(default_factory=PriorsConfig)
    """Sparse-view priors (reconstruct.priors)."""
    cameras: CameraRefineConfig = field(default_factory=CameraRefineConfig)
    """Camera refinement (per-view SE(3) corrections) and test-time pose alignment."""

    @property
    def method(self) -> str:
        return "splat"


@dataclass
class NerfTrainConfig(TrainCommon):
    """Hash-grid NeRF (Instant-NGP style) with FreeNeRF / S3IM regularizers for few views."""

    iters: int = 3_000
    """Training steps (a hash grid converges in fewer steps than 3DGS' 7k schedule)."""
    nerf: NerfConfig = field(default_factory=NerfConfig)
    """Model, sampler and regularizers."""

    @property
    def method(self) -> str:
        return "nerf"


TrainConfig = SplatTrainConfig | NerfTrainConfig
METHODS: dict[str, type] = {"splat": SplatTrainConfig, "nerf": NerfTrainConfig}


# ----------------------------------------------------------------------------------- resolution
def preset_for(views: int | None) -> str:
    """The preset ``auto`` stands for."""
    return "sparse" if views is not None and views <= 9 else "vanilla"


def resolve(cfg: TrainConfig, *, device_type: str, n_photos: int | None = None) -> TrainConfig:
    """Every preset- and device-dependent default made concrete (what config.json records).

    ``n_photos``: the photos of a photo-folder scene (its preset counts the training photos when
    --views is not given)."""
    device = typing.cast(Literal["auto", "cpu", "cuda"], device_type if cfg.device == "auto" else cfg.device)
    cfg = dataclasses.replace(cfg, config=None, resume=None, overwrite=False, device=device)
    if cfg.scene is not None:
        cfg = dataclasses.replace(cfg, scene=Path(cfg.scene).expanduser().resolve())
    if cfg.poses == "auto":
        cfg = dataclasses.replace(cfg, poses="estimate" if n_photos is not None else "dataset")
    n_train = cfg.views if cfg.views is not None else (None if n_photos is None else n_photos - cfg.holdout)
    if isinstance(cfg, SplatTrainConfig):
        preset = typing.cast(Literal["vanilla", "sparse"], preset_for(n_train) if cfg.preset == "auto" else cfg.preset)
        sparse = preset == "sparse"
        priors = cfg.priors
        subs = {}
        for name in priors.names():
            sub = getattr(priors, name)
            if sub.enabled is None:
                sub = dataclasses.replace(sub, enabled=sparse and name in SPARSE_PRIORS)
            subs[name] = sub
        init = cfg.init
        if init.kind == "auto":
            init = dataclasses.replace(init, kind="sfm")
        if init.fallback == "auto":
            init = dataclasses.replace(init, fallback="dense" if sparse else "random")
        if init.min_sfm_points is None:
            init = dataclasses.replace(init, min_sfm_points=200 if sparse else 50)
        if init.matching == "auto":
            init = dataclasses.replace(init, matching="epipolar" if sparse else "exhaustive")
        if init.sift_upscale is None:
            init = dataclasses.replace(init, sift_upscale=2 if sparse else 1)
        if subs["sfm_depth"].min_points is None:
            subs["sfm_depth"] = dataclasses.replace(subs["sfm_depth"], min_points=init.min_sfm_points)
        densify = cfg.densify
        if densify.grow_grad2d is None:
            densify = dataclasses.replace(densify, grow_grad2d=SPARSE_GROW_GRAD2D if sparse else 2e-4)
        if densify.prune_big is None:
            densify = dataclasses.replace(densify, prune_big=not sparse)
        if densify.prune_unseen is None:
            densify = dataclasses.replace(densify, prune_unseen=sparse)
        if densify.prune_near is None:
            densify = dataclasses.replace(densify, prune_near=sparse)
        if densify.refine_stop_iter is None:
            densify = dataclasses.replace(densify, refine_stop_iter=cfg.iters if sparse else 5_000)
        if densify.regrow_at_budget is None:
            densify = dataclasses.replace(densify, regrow_at_budget=not sparse)
        if densify.max_gaussians is None:
            densify = dataclasses.replace(densify, max_gaussians=CPU_GAUSSIAN_BUDGET if device == "cpu" else 1_000_000)
        cameras = cfg.cameras
        if cameras.enabled is None:
            cameras = dataclasses.replace(cameras, enabled=cfg.poses in ("estimate", "refine"))
        return dataclasses.replace(cfg, preset=preset, priors=dataclasses.replace(priors, **subs), init=init,
                                   cameras=cameras, densify=densify)
    cpu = cfg.device == "cpu"
    n = cfg.nerf
    nerf = dataclasses.replace(
        n,
        log2_hashmap_size=n.log2_hashmap_size or (17 if cpu else 19),
        n_samples=n.n_samples or (64 if cpu else 128),
        rays_per_batch=n.rays_per_batch or (512 if cpu else 4096),
        grid_resolution=n.grid_resolution or (48 if cpu else 128),
        regularize=n.regularize if n.regularize != "auto" else ("on" if n_train is not None and n_train <= 9 else "off"),
    )
    return dataclasses.replace(cfg, nerf=nerf)


CHECKS: tuple[tuple[str, str, float | None, float | None], ...] = (
    # (dotted field, flag shown, min, max): inclusive bounds, None = open
    ("iters", "--iters", 0, None),
    ("views", "--views", 1, None),
    ("data.downscale", "--downscale", 1.0, 64.0),
    ("data.resolution", "--resolution", 16, 16384),
    ("data.test_every", "--data.test-every", 1, None),
    ("output.checkpoint_every", "--output.checkpoint-every", 1, None),
    ("output.log_every", "--output.log-every", 1, None),
    ("output.eval_every", "--output.eval-every", 0, None),
    ("optim.sh_degree", "--optim.sh-degree", 0, 3),
    ("optim.sh_degree_interval", "--optim.sh-degree-interval", 1, None),
    ("init.n_random", "--init.n-random", 1, None),
    ("init.min_sfm_points", "--init.min-sfm-points", 0, None),
    ("init.sift_upscale", "--init.sift-upscale", 1, 4),
    ("priors.sfm_depth.min_points", "--priors.sfm-depth.min-points", 0, None),
    ("init.initial_opacity", "--init.initial-opacity", 1e-6, 1 - 1e-6),
    ("init.scale_neighbors", "--init.scale-neighbors", 1, None),
    ("densify.refine_every", "--densify.refine-every", 1, None),
    ("densify.reset_every", "--densify.reset-every", 1, None),
    ("densify.max_gaussians", "--densify.max-gaussians", 1, None),
    ("loss.ssim_lambda", "--loss.ssim-lambda", 0.0, 1.0),
    ("priors.dropout.rate", "--priors.dropout.rate", 0.0, 0.95),
    ("priors.pseudo_views.resolution_scale", "--priors.pseudo-views.resolution-scale", 0.05, 1.0),
    ("priors.needles.max_ratio", "--priors.needles.max-ratio", 1.0, None),
    ("priors.needles.weight", "--priors.needles.weight", 0.0, None),
    ("viewer_port", "--viewer-port", 1, 65535),
    ("holdout", "--holdout", 0, None),
    ("cameras.lr", "--cameras.lr", 1e-9, 1.0),
    ("cameras.lr_final", "--cameras.lr-final", 1e-12, 1.0),
    ("cameras.start_step", "--cameras.start-step", 0, None),
    ("cameras.test_steps", "--cameras.test-steps", 0, None),
    ("cameras.test_lr", "--cameras.test-lr", 1e-9, 1.0),
    ("nerf.n_levels", "--nerf.n-levels", 1, 32),
    ("nerf.log2_hashmap_size", "--nerf.log2-hashmap-size", 8, 26),
    ("nerf.n_samples", "--nerf.n-samples", 4, 4096),
    ("nerf.rays_per_batch", "--nerf.rays-per-batch", 16, None),
    ("nerf.grid_resolution", "--nerf.grid-resolution", 4, 1024),
    ("nerf.lr", "--nerf.lr", 1e-8, 10.0),
)


def validate(cfg: TrainConfig) -> None:
    """Raise ValueError naming the flag for any out-of-range value (checked before any work)."""
    for dotted, flag, lo, hi in CHECKS:
        obj = get_field(cfg, dotted)
        if obj is None:
            continue
        if not ((lo is None or obj >= lo) and (hi is None or obj <= hi)):  # NaN fails both
            rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise ValueError(f"{flag} {obj} is out of range (must be {rng})")
    if isinstance(cfg, SplatTrainConfig) and cfg.init.kind == "ply" and cfg.init.ply is None:
        raise ValueError("--init.kind ply needs --init.ply FILE")
    if isinstance(cfg, NerfTrainConfig) and cfg.poses == "refine":
        raise ValueError("--poses refine refines cameras while training splats; `recon train nerf` does not (use dataset or estimate)")


# ----------------------------------------------------------------------------------- JSON
def to_dict(cfg: TrainConfig) -> dict:
    """The run's config as plain data (method first, control fields left out)."""
    data = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    for name in CONTROL_FIELDS:
        data.pop(name, None)
    return {"method": cfg.method, **data}


def to_json(cfg: TrainConfig) -> str:
    return json.dumps(to_dict(cfg), indent=2)


def from_dict(data: Any) -> TrainConfig:
    """Rebuild a run's config from ``to_dict`` output; every key and value is type-checked
    (ValueError with the dotted key on the first problem)."""
    if not isinstance(data, dict):
        raise ValueError("config is not a JSON object")
    method = data.get("method", "splat")
    if method not in METHODS:
        raise ValueError(f"method: {method!r} is not one of {sorted(METHODS)}")
    body = {k: v for k, v in data.items() if k != "method"}
    return build(METHODS[method], body, prefix="")


def build(cls: type, data: dict, *, prefix: str) -> Any:
    """A dataclass ``cls`` from a dict, with type checks; unknown keys are an error."""
    if not isinstance(data, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'config'}: expected an object")
    hints = typing.get_type_hints(cls, include_extras=True)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{prefix}{unknown[0]}: unknown key")
    kwargs = {name: coerce(hints[name], value, f"{prefix}{name}") for name, value in data.items()}
    return cls(**kwargs)


def coerce(hint: Any, value: Any, key: str) -> Any:
    """``value`` checked (and converted, for paths) against the type ``hint``."""
    hint = _strip(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [_strip(a) for a in typing.get_args(hint)]
        if value is None and type(None) in options:
            return None
        errors = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return coerce(opt, value, key)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(errors[0] if errors else f"{key}: unexpected {value!r}")
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise ValueError(f"{key}: {value!r} is not one of {list(typing.get_args(hint))}")
        return value
    if dataclasses.is_dataclass(hint):
        return build(hint, value, prefix=f"{key}.")  # type: ignore[arg-type]
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{key}: expected a string, got {value!r}")
        return value
    if hint is Path:
        if not isinstance(value, str):
            raise ValueError(f"{key}: expected a path string, got {value!r}")
        return Path(value)
    return value


def _strip(hint: Any) -> Any:
    while typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    return hint


# ----------------------------------------------------------------------------------- overlays
def changed_fields(cfg: Any, base: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Dotted field -> (value in cfg, value in base) wherever two configs of one class differ."""
    out: dict[str, tuple[Any, Any]] = {}
    for f in dataclasses.fields(cfg):
        a, b = getattr(cfg, f.name), getattr(base, f.name)
        if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
            out.update(changed_fields(a, b, f"{prefix}{f.name}."))
        elif a != b:
            out[f"{prefix}{f.name}"] = (a, b)
    return out


def get_field(cfg: Any, dotted: str) -> Any:
    """The value of a dotted field, None when the config has no such field."""
    for part in dotted.split("."):
        if not hasattr(cfg, part):
            return None
        cfg = getattr(cfg, part)
    return cfg


def set_field(cfg: Any, dotted: str, value: Any) -> Any:
    """A copy of ``cfg`` with the dotted field set."""
    head, _, rest = dotted.partition(".")
    if not rest:
        return dataclasses.replace(cfg, **{head: value})
    return dataclasses.replace(cfg, **{head: set_field(getattr(cfg, head), rest, value)})


def flag_of(dotted: str) -> str:
    """The command-line flag of a dotted field (short flags without their prefix)."""
    short = {"data.downscale": "downscale", "data.resolution": "resolution", "output.out": "out"}
    return "--" + short.get(dotted, dotted).replace("_", "-")
