"""The `recon` subcommands other than train: one typed dataclass each, with a ``run()`` method that
composes the library packages (heavy imports happen inside ``run``, so ``recon --help`` stays fast)."""

from __future__ import annotations

import json
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from recon.bench import BenchCommand
from recon.options import check_host


@dataclass
class InfoCommand:
    """Describe a scene: format, frames, image size, sparse-view split, sparse points."""

    scene: tyro.conf.Positional[Path]
    """Scene folder (Blender, LLFF, COLMAP or nerfstudio layout), or a transforms.json file."""
    views: int | Literal["all"] | None = None
    """Training views (all / None = every non-test frame)."""
    downscale: float | None = None
    """Divide image size by this factor."""
    resolution: int | None = None
    """Target image width in pixels (alternative to --downscale)."""
    json: bool = False
    """Print exactly one JSON object."""

    def run(self) -> int:
        from recon.report import print_info

        return print_info(self.scene, views=None if self.views == "all" else self.views, downscale=self.downscale,
                          resolution=self.resolution, as_json=self.json)


@dataclass
class EvalCommand:
    """Render the held-out test views of a run and compute PSNR / SSIM / LPIPS."""

    run_dir: tyro.conf.Positional[Path]
    """Run folder written by `recon train`."""
    json: bool = False
    """Print one JSON object instead of a table."""
    compressed: bool = False
    """Score what `recon compress` wrote (RUN/compressed/); results go there. For a splat run
    ply_bytes is then the artifact's size."""

    def run(self) -> int:
        from reconstruct.run import Run

        run = Run.open(self.run_dir)
        with run.lock("eval"):
            run.sweep()
            return self._run(run)

    def _run(self, run) -> int:
        from recon.report import print_metrics
        from reconstruct.run import resolve_device

        scene = run.scene()
        device = resolve_device(run.config.device if run.config.device != "cuda" else "auto")
        out_dir = run.results_dir(compressed=self.compressed)
        if run.method == "nerf":
            from reconstruct.nerf.method import evaluate_nerf, field_from_state

            if self.compressed:
                from pruning.admm_nerf import load_compressed_nerf

                field, grid, n_samples = load_compressed_nerf(run, device)
            else:
                state = run.checkpoint()["state"]
                field, grid = field_from_state(state, device, implementation=run.nerf_config.nerf.encoding)
                n_samples = int(state["n_samples"])
            result = evaluate_nerf(field, grid, scene, n_samples=n_samples, out_dir=out_dir)
            result["n_params"] = sum(p.numel() for p in field.parameters())
        else:
            from reconstruct.evaluate import evaluate
            from reconstruct.poses import estimated

            if self.compressed:
                from pruning.artifact import artifact_bytes, load_artifact

                splats, size = load_artifact(run.compressed_dir), artifact_bytes(run.compressed_dir)
            else:
                splats, size = run.splats(), run.splats_path.stat().st_size
            if estimated(run.config):  # align, refine the test cameras, then score (reconstruct.posefree)
                from reconstruct import gaussians as G
                from reconstruct.posefree import evaluate_estimated, training_cameras_from_checkpoint

                gs = G.activate(torch_params(splats, device))
                result = evaluate_estimated(run, gs, scene, training_cameras_from_checkpoint(run, scene),
                                            sh_degree=splats.sh_degree, out_dir=out_dir)
            else:
                result = evaluate(splats, scene, out_dir=out_dir, device=device)
            result.update(n_gaussians=len(splats), ply_bytes=size)
        result["train_seconds"] = run.train_seconds()
        run.write_metrics(result, compressed=self.compressed)
        keys = ("psnr", "ssim", "lpips", "lpips_reason", "n_test", "n_gaussians", "n_params", "train_seconds",
                "render_fps", "ply_bytes", "psnr_unaligned", "train_psnr", "train_ssim", "registered", "n_images",
                "rotation_error_deg", "rotation_error_deg_max", "position_error", "position_error_max", "relative_rotation_error_deg",
                "sfm_rotation_error_deg", "sfm_relative_rotation_error_deg",
                "sfm_position_error", "sfm_seconds", "n_train")
        summary = {k: result.get(k) for k in keys if k in result or k in ("lpips", "lpips_reason")}
        if self.json:
            print(json.dumps(summary))
        else:
            what = result.get("scored_on") or "test views"
            print_metrics(summary, title=f"{out_dir}: {summary['n_test'] or summary.get('n_train') or 0} {what}",
                          file=sys.stdout)
        return 0


def torch_params(splats, device):
    """A splat set as frozen torch parameters on ``device`` (rendering only)."""
    import torch

    return torch.nn.ParameterDict({k: torch.nn.Parameter(v, requires_grad=False)
                                   for k, v in splats.to_params(str(device)).items()})


@dataclass
class ViewCommand:
    """Open a run folder or a splat file (.ply, compressed .ply, .spz, .splat) in the browser."""

    target: tyro.conf.Positional[Path]
    """Run folder or splat file."""
    host: str = "127.0.0.1"
    """Interface to bind; 127.0.0.1 keeps the viewer private to this machine."""
    port: int = 8080
    """Port to ask for (viser moves to a free one when it is taken; 0 = any free port; the real one is printed)."""
    max_count: int = 1_000_000
    """Initial point budget sent to the browser (a GUI slider changes it)."""
    up: Literal["auto", "+x", "-x", "+y", "-y", "+z", "-z"] = "auto"
    """Which axis is up (orbiting keeps it level). auto = the gravity up of the run's training cameras;
    for a splat file, -y (the .ply frame of our exports; a run's own splats.ply is in its dataset's
    axes, e.g. +z for Blender scenes)."""

    def run(self) -> int:
        import time

        from scenes.errors import ReconError
        from viewer.app import ViewerConfig, view
        from viewer.loading import load_target
        from viewer.server import open_viewer

        if not 0 <= self.port <= 65535:
            raise ReconError(None, f"--port {self.port} is out of range (0..65535; 0 = any free port)")
        check_host(self.host, "--host")
        target = load_target(self.target)  # bad input fails here, before a server starts
        for note in target.notes:
            print(f"recon view: {note}")
        viewer = open_viewer(host=self.host, port=self.port)
        app = view(
            viewer, splats=target.splats, compressed=target.compressed, scene=target.scene,
            render_fn=target.render_fn, background=target.background,
            config=ViewerConfig(max_count=self.max_count, up_world=None if self.up == "auto" else _axis(self.up)),
        )
        n = len(target.splats) if target.splats is not None else 0
        what = f"{n:,} splats" if n else "server-rendered model"
        print(f"recon view: showing {what} from {self.target} at {viewer.url}; Ctrl+C to stop", flush=True)
        try:
            while True:
                time.sleep(3600.0)
        finally:
            app.close()
            viewer.stop()


def _axis(name: str) -> tuple[float, float, float]:
    """``"+z"`` -> (0, 0, 1)."""
    v = [0.0, 0.0, 0.0]
    v["xyz".index(name[1])] = 1.0 if name[0] == "+" else -1.0
    return (v[0], v[1], v[2])


@dataclass
class CompressCommand:
    """Compress a trained run: learnable masks, codebook quantization, ADMM grid pruning."""

    run_dir: tyro.conf.Positional[Path]
    """Run folder written by `recon train`."""
    masks: bool = False
    """Fine-tune learnable masks and remove masked Gaussians."""
    quantize: bool = False
    """Residual vector quantization of scale/rotation and a codebook for colors."""
    admm: bool = False
    """ADMM saliency-grid pruning (hash-grid NeRF runs)."""
    json: bool = False
    """Print one JSON object instead of a table."""
    mask_steps: int = 600
    """Mask fine-tuning steps."""
    mask_lambda: float = 0.07
    """Mask loss weight (higher removes more Gaussians; the paper's 5e-4 is for masks trained over a
    whole run, `recon train --masks`)."""
    teacher_views: int = 4
    """Renders of the run between and just beyond each pair of neighbouring training cameras that
    join the photos while fine-tuning, so what only novel views see is kept (0 = the photos alone)."""
    mask_lr: float = 0.1
    """Adam learning rate of the mask logits."""
    quantize_steps: int = 600
    """Codebook fine-tuning steps."""
    lr_scale: float = 0.1
    """Learning rates of the splat attributes while fine-tuning, relative to the run's."""
    codebooks: Literal["sog", "rvq"] = "sog"
    """What --quantize trains: "sog" = PlayCanvas SOG's own quantization, so RUN/compressed/scene.sog is
    the fine-tuned state; "rvq" = RVQ scale/rotation and k-means color codebooks for the artifact."""
    palette: int = 0
    """SOG codebooks: SH palette entries (0 = a 64th of the Gaussians, as a power of two, 256..65536)."""
    color_entries: int = 4096
    """RVQ codebooks: entries of each color codebook (sh0 and higher SH bands)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto = the accelerator when there is one, else CPU."""
    admm_steps: int = 500
    """ADMM fine-tuning steps (NeRF runs)."""
    admm_table_shrink: int = 2
    """NeRF runs: the compressed hash tables hold 2**this times fewer entries than the run's (0 keeps
    the size; then only the coarse dense levels can lose entries)."""
    admm_budget: float = 0.2
    """ADMM L1 budget as a fraction of the saliency-grid cells (NeRF runs). 0.1 pruned content on the
    demo scene (-0.44 dB); 0.2 was better on lego, fern and the demo, at 21-27% of the hash parameters."""

    def run(self) -> int:
        # With no technique named, a splat run gets masks + codebooks and a NeRF run gets ADMM.
        from pruning.compress import CompressConfig, compress_run
        from recon.report import print_compress_report
        from pruning.quantize import QuantizeConfig
        from pruning.sog_quantize import SogQuantizeConfig
        from reconstruct.run import Run
        from scenes.errors import ReconError

        for name in ("mask_steps", "quantize_steps", "admm_steps", "color_entries"):
            if getattr(self, name) < 1:
                raise ReconError(None, f"--{name.replace('_', '-')} must be at least 1")
        if not 0 < self.admm_budget <= 1 or self.lr_scale <= 0 or self.mask_lambda < 0 or self.mask_lr <= 0:
            raise ReconError(None, "--admm-budget must be in (0, 1], --lr-scale and --mask-lr > 0, --mask-lambda >= 0")
        if self.teacher_views < 0:
            raise ReconError(None, f"--teacher-views must be 0 or more, got {self.teacher_views}")
        if not 0 <= self.palette <= 65536:
            raise ReconError(None, f"--palette must be 0 (auto) or 1..65536, got {self.palette}")
        none = not (self.masks or self.quantize or self.admm)
        cfg = CompressConfig(
            masks=self.masks or none, quantize=self.quantize or none, mask_steps=self.mask_steps,
            mask_lambda=self.mask_lambda, mask_lr=self.mask_lr, teacher_views=self.teacher_views,
            quantize_steps=self.quantize_steps, lr_scale=self.lr_scale,
            quant=QuantizeConfig(sh0_entries=self.color_entries, shN_entries=self.color_entries),
            codebooks=self.codebooks, sog=SogQuantizeConfig(palette=self.palette),
            device=self.device, progress=not self.json, admm_steps=self.admm_steps, admm_budget=self.admm_budget,
            admm_table_shrink=self.admm_table_shrink,
        )
        run = Run.open(self.run_dir)
        with run.lock("compress"):
            run.sweep()
            report = compress_run(run, cfg, admm=self.admm, auto=none)
        print_compress_report(report, json_out=self.json)
        return 0


@dataclass
class ExportCommand:
    """Export a run (or compressed artifact) for players: .ply, compressed .ply, .spz, .splat, .sog, .glb."""

    run_dir: tyro.conf.Positional[Path]
    """Run folder written by `recon train`, its compressed/ artifact, or a splat file to convert."""
    format: Literal["ply", "compressed-ply", "spz", "splat", "sog", "glb", "pointcloud", "mesh"] = "compressed-ply"
    """Output format (pointcloud and mesh: NeRF runs)."""
    out: Path | None = None
    """Output file (default: inside the run folder)."""
    sh_degree: int | None = None
    """Spherical-harmonics degree to keep (default: all the run has)."""
    source: Literal["auto", "trained", "compressed"] = "auto"
    """Which splats of a run: auto = RUN/compressed/ when `recon compress` made one, else the trained splats."""
    evaluate: bool = True
    """Render the exported file on the run's test views and report PSNR vs the trained splats."""
    eval_views: int | None = None
    """Render at most this many test views for the PSNR report (default: all)."""
    up: Literal["auto", "+x", "-x", "+y", "-y", "+z", "-z"] = "auto"
    """Which axis of the source is up; the file is turned so that it is up in players (the
    format's own axes). auto = the gravity up of the run's training cameras (a bare splat file
    keeps its axes)."""
    spz_version: Literal[3, 4] = 3
    """.spz version: 3 (gzip; read by Spark, Babylon.js, splat-transform and Niantic's library) or 4
    (zstd streams; the version the PlayCanvas engine reads)."""
    json: bool = False
    """Print one JSON object instead of a table."""

    def run(self) -> int:
        if self.format in ("pointcloud", "mesh"):
            from reconstruct.nerf.export import export_nerf
            from reconstruct.run import Run

            print(export_nerf(Run.open(self.run_dir), self.format, self.out))
            return 0
        from pruning.formats import Format

        fmt = typing.cast(Format, self.format)
        from reconstruct.run import Run

        if Run.is_run(self.run_dir):
            run = Run(self.run_dir)
            with run.lock("export"):
                run.sweep()
                return self._export(fmt)
        return self._export(fmt)

    def _export(self, fmt) -> int:
        from pruning.export import export_splats
        from recon.report import print_export_report

        report = export_splats(
            self.run_dir, format=fmt, out=self.out, sh_degree=self.sh_degree, source=self.source,
            evaluate=self.evaluate, max_views=self.eval_views, progress=not self.json, spz_version=self.spz_version,
            up=self.up,
        )
        print_export_report(report, json_out=self.json)
        return 0


@dataclass
class TrainHelp:
    """Reconstruct a scene from a few posed photos: `recon train [splat|nerf] SCENE --views N`
    (`recon train --help` lists every option)."""

    def run(self) -> int:
        from recon.train import parse_train, train

        return train(parse_train(["--help"]))


@dataclass
class BatchHelp:
    """Train, evaluate, compress and export many scenes as Ray tasks: `recon batch SCENES... --out DIR`
    (`recon batch --help` lists every option)."""

    def run(self) -> int:
        return batch_main(["--help"])


def batch_main(args: list[str]) -> int:
    """`recon batch ARGS`: the steps run these commands, the same ones `recon eval|compress|export` run."""
    from recon.batch import parse_batch, run_batch

    return run_batch(parse_batch(args, commands={"eval": EvalCommand, "compress": CompressCommand,
                                                 "export": ExportCommand}))


@dataclass
class Bench:
    """Benchmarks, each against a reference measured in the same run (`recon bench NAME --help`)."""

    bench: tyro.conf.OmitSubcommandPrefixes[BenchCommand]
    """Which benchmark."""

    def run(self) -> int | None:
        return self.bench.run()


COMMANDS = {
    "train": TrainHelp,
    "batch": BatchHelp,
    "eval": EvalCommand,
    "view": ViewCommand,
    "compress": CompressCommand,
    "export": ExportCommand,
    "info": InfoCommand,
    "bench": Bench,
}
