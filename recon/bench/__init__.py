"""`recon bench WHAT`: speed and quality measured as ratios against a reference in the same run.

Each benchmark is a typed config (its flags) with a ``run()``; the measuring code lives in the
module beside it and is imported only when that benchmark runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Union

import tyro


@dataclass
class RasterBench:
    """Rasterizer forward+backward: the CPU kernel against the torch reference (and gsplat on CUDA)."""

    json: bool = False
    """Print one JSON object instead of a table."""
    repeats: int = 5
    """Timed repeats per case (the median is reported)."""

    def run(self) -> int:
        from recon.bench.raster import run_bench

        return run_bench(self.json, repeats=self.repeats)


@dataclass
class QualityBench:
    """The sparse-view protocols on the scenes in ../shared/data, vanilla vs the sparse preset, next to
    the published tables."""

    protocol: Literal["quick", "paper"] = "quick"
    """quick: fern and lego at reduced resolution and --iters (minutes on a CPU); paper: every scene in
    ../shared/data at the papers' protocol (LLFF images_8 3 views, Blender 400x400 8 views and all 200
    test views, DTU 400x300 3 views masked) and the full 10k-step schedule, resumable per run."""
    json: bool = False
    """Print one JSON object instead of a table."""
    iters: int | None = None
    """Training steps per run (default: 1000 quick, 10000 paper)."""
    presets: tuple[str, ...] = ("vanilla", "sparse")
    """Presets compared in the same invocation: vanilla, sparse, or an ablation of one, a preset followed
    by +name / -name to switch a prior (dropout, sfm_depth, binocular, pseudo_views, needles, ...) or
    a densification prune (prune_near, prune_unseen) on or off, or dense_init (+: SfM points plus
    plane-sweep matches, -: SfM points alone), or regrow (+: densification goes on growing into
    what pruning frees once the Gaussian budget was reached, as in vanilla; -: it stops, as in sparse):
    sparse-dropout, sparse+binocular, sparse+dense_init, sparse+regrow."""
    data: Path | None = None
    """Folder holding the scenes (default ../shared/data next to the repository)."""
    scenes: tuple[str, ...] = ()
    """paper: only these scene folders (default: all of them)."""
    eval_every: int = 2000
    """paper: score the test views every this many steps (the test-PSNR curve in curves.png)."""
    train: bool = True
    """Train (or resume) what is not finished; --no-train only tabulates the runs already finished."""
    fern_width: int = 252
    """quick: fern image width (the papers: 504)."""
    lego_width: int = 100
    """quick: lego image width (the papers: 400)."""
    out: Path = Path("outputs/bench")
    """Where the runs and quality[-paper].{md,json} go."""
    record: Path | None = None
    """Keep each finished run's config, metrics, history and training commit here, and take runs
    found here as finished (commit the folder to carry a long benchmark to another machine)."""

    def run(self) -> int:
        from recon.bench.quality import run_bench
        from scenes.errors import ReconError

        if self.iters is not None and self.iters < 1:
            raise ReconError(None, "--iters must be at least 1")
        from recon.bench.quality import preset_args

        for preset in self.presets:
            preset_args(preset)
        return run_bench(self)


@dataclass
class PriorsBench:
    """Each sparse-view prior alone and the presets, same seeds and budget, on fern and lego."""

    data: Path | None = None
    """Folder holding blender_lego and llff_fern (default ../shared/data next to the repository)."""
    out: Path = Path("outputs/bench_priors")
    """Where results.json, table.md, bars.png and the shared prior cache go."""
    scenes: tuple[str, ...] = ("fern3", "lego8")
    """Protocols to run: fern3 (LLFF fern, 3 views), lego8 (Blender lego, 8 views)."""
    variants: tuple[str, ...] = ("vanilla", "sparse", "dropout", "binocular", "dense_init", "pseudo_views",
                                 "sfm_depth", "mono_depth", "diffusion")
    """vanilla, sparse, a prior name (that prior alone on top of vanilla; dense_init = the init kind),
    or sparse-a-b (the sparse preset without priors a and b)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds (mean and standard deviation are reported)."""
    iters: int = 200
    """Training steps per run."""
    schedule: Literal["scaled", "full"] = "scaled"
    """scaled: densification and prior schedules shrunk to --iters (short budgets); full: the trainer's
    own schedule (DropGaussian's is 10k steps)."""
    fern_resolution: int = 126
    """Fern image width in pixels (1/8 resolution is 504)."""
    lego_resolution: int = 100
    """Lego image width in pixels (the papers use 400)."""
    lego_test_every: int = 8
    """Every k-th of the 200 lego test frames (8 = the common 25-view subset)."""
    threads: int | None = None
    """CPU threads for torch and numba (None = their defaults)."""
    json: bool = False
    """Print one JSON object instead of the table."""

    def run(self) -> int:
        from recon.bench.priors import run_bench

        return run_bench(self)


@dataclass
class NerfBench:
    """Hash-encoding speed per implementation and NeRF training quality at a reduced budget."""

    json: bool = False
    """Print one JSON object instead of tables."""
    setups: tuple[str, ...] = ("lego-8v", "fern-3v")
    """Training setups (lego-8v, fern-3v, and their -noreg ablations)."""
    training: bool = True
    """Also train the setups (--no-training measures the encodings only)."""

    def run(self) -> int:
        from recon.bench.nerf import run_bench

        return run_bench(self.json, setups=list(self.setups) if self.training else [])


@dataclass
class CompressBench:
    """Rate-distortion of masks x codebooks on a splat run; ADMM pruning vs controls on a NeRF run."""

    json: bool = False
    """Print one JSON object instead of tables."""
    parts: tuple[Literal["splats", "sog", "nerf"], ...] = ("splats", "sog", "nerf")
    """Which parts to run: the masks x codebooks sweep, scene.sog against splat-transform's SOG, the
    NeRF ADMM sweep."""
    splat_run: Path | None = None
    """Splat run to sweep (default: a vanilla demo-scene run trained once into outputs/bench)."""
    nerf_run: Path | None = None
    """NeRF run to sweep (default: a demo-scene NeRF run trained once into outputs/bench)."""
    lambdas: tuple[float, ...] = (0.0, 5e-3, 2e-2)
    """Mask loss weights (0 = the same fine-tuning without masks, the control)."""
    entries: tuple[int, ...] = (256, 1024, 4096)
    """Color codebook sizes."""
    steps: int = 200
    """Steps of each fine-tuning phase."""
    base_iters: int = 1500
    """Training steps of the default splat run."""
    st_iterations: int = 10
    """splat-transform's SH k-means iterations (its -i; 10 is its default, about 25 minutes on a 21k-splat
    scene on this CPU)."""
    splat_transform: str | None = None
    """splat-transform executable (default: tools/node_modules/.bin/splat-transform, else the PATH)."""
    nerf_steps: int = 500
    """ADMM / control fine-tuning steps per NeRF variant."""
    nerf_shrinks: tuple[int, ...] = (0, 2, 3)
    """Hash-table shrinks (2**k times fewer entries) to sweep."""

    def run(self) -> int:
        from recon.bench.compress import run_bench

        return run_bench(self)


@dataclass
class BrowserBench:
    """Frames per second of the browser client (headless chromium) for growing splat counts."""

    counts: tuple[int, ...] = (1_000, 10_000, 30_000, 100_000)
    """Splat counts to measure."""
    seconds: float = 3.0
    """Orbiting time per count."""
    width: int = 960
    """Viewport width."""
    height: int = 540
    """Viewport height."""

    def run(self) -> int:
        from recon.bench.browser import measure

        measure(list(self.counts), seconds=self.seconds, width=self.width, height=self.height)
        return 0


@dataclass
class LiveBench:
    """What the live viewer costs a training run: steps/s with and without it, alternating blocks."""

    scene: tyro.conf.Positional[Path]
    """Scene folder."""
    views: int = 8
    """Training views."""
    resolution: int = 200
    """Image width."""
    block: int = 150
    """Steps per block."""
    blocks: int = 6
    """Blocks (alternating without / with the viewer)."""
    every: int = 100
    """Push the splats every this many steps."""
    n_random: int = 20_000
    """Random initial Gaussians (densification is off, so the count stays)."""
    browser: bool = False
    """Connect headless chromium to the viewer during the viewer blocks."""

    def run(self) -> int:
        import json

        from recon.bench.live import measure

        print(json.dumps(measure(self.scene, views=self.views, resolution=self.resolution, block=self.block,
                                 blocks=self.blocks, every=self.every, n_random=self.n_random,
                                 browser=self.browser), indent=2))
        return 0


@dataclass
class PosesBench:
    """Dataset poses vs estimated poses on one budget: fern 3 views (posed, --poses estimate) and a
    folder of six lego training photos trained with no poses (recon/bench/poses.py)."""

    data: Path | None = None
    """Folder holding llff_fern and blender_lego (default ../shared/data next to the repository)."""
    out: Path = Path("outputs/bench_poses")
    """Where the runs, results.json and table.md go."""
    cases: tuple[str, ...] = ("fern3", "lego6")
    """fern3 (posed vs estimated, scored on fern's test views), lego6 (a photo folder of r_26, r_0, r_41,
    r_42, r_67, r_75)."""
    iters: int = 1000
    """Training steps of every run."""
    fern_resolution: int = 252
    """Fern image width in pixels (images_8 is 504)."""
    lego_resolution: int = 200
    """Lego image width in pixels (the photos are 800)."""
    json: bool = False
    """Print one JSON list instead of the table."""

    def run(self) -> int:
        from recon.bench.poses import run_bench

        return run_bench(self)


@dataclass
class TrainBench:
    """The whole training step broken down by phase (fern 3 views 504x378, lego 8 views 400x400),
    each variant continuing from the same warmed-up state."""

    scenes: tuple[str, ...] = ("fern", "lego")
    """Which of fern / lego (from ../shared/data; the demo scene when absent)."""
    preset: Literal["vanilla", "sparse"] = "vanilla"
    """Preset of the measured runs."""
    warmup: int = 300
    """Steps trained before timing (compilation, densification settling)."""
    steps: int = 40
    """Timed steps per variant."""
    variants: tuple[Literal["torch-ssim", "fused-ssim"], ...] = ("torch-ssim", "fused-ssim")
    """Step variants: D-SSIM in torch, or the fused numba kernel."""
    threads: int | None = None
    """torch and numba threads (None = their defaults)."""
    out: Path = Path("outputs/bench")
    """Where train_step.json goes."""
    json: bool = False
    """Print one JSON object instead of tables."""

    def run(self) -> int:
        from recon.bench.train import run_bench
        from scenes.errors import ReconError

        if self.steps < 1 or self.warmup < 0:
            raise ReconError(None, "--steps must be at least 1 and --warmup at least 0")
        return run_bench(self)


BenchCommand = Union[
    Annotated[RasterBench, tyro.conf.subcommand("raster")],
    Annotated[QualityBench, tyro.conf.subcommand("quality")],
    Annotated[PriorsBench, tyro.conf.subcommand("priors")],
    Annotated[NerfBench, tyro.conf.subcommand("nerf")],
    Annotated[CompressBench, tyro.conf.subcommand("compress")],
    Annotated[BrowserBench, tyro.conf.subcommand("browser")],
    Annotated[LiveBench, tyro.conf.subcommand("live")],
    Annotated[TrainBench, tyro.conf.subcommand("train")],
    Annotated[PosesBench, tyro.conf.subcommand("poses")],
]
"""`recon bench WHAT [options]`."""

__all__ = ["BenchCommand"]
