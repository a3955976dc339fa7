"""CLI surfaces of the reconstruction jobs: train, eval, bench."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from reconstruct.cli import not_built


@dataclass
class TrainCommand:
    """Reconstruct a scene from a few posed photos (Gaussian splats or hash-grid NeRF)."""

    scene: tyro.conf.Positional[Path]
    """Scene folder (Blender, LLFF, COLMAP or nerfstudio layout). `recon train --help` lists every option."""

    def run(self) -> int:  # `recon train` is dispatched before tyro (two-stage defaults); kept for --help
        from reconstruct.run_train import main

        return main([str(self.scene)])


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
        from reconstruct.run_eval import eval_run

        return eval_run(self.run_dir, json_out=self.json, compressed=self.compressed)


@dataclass
class BenchCommand:
    """Benchmarks: rasterizer speed, training quality, priors, NeRF, compression."""

    what: tyro.conf.Positional[Literal["raster", "quality", "priors", "nerf", "compress"]]
    """Which benchmark to run."""
    json: bool = False
    """Print one JSON object instead of a table."""
    iters: int | None = None
    """Step budget per training run (quality, priors): smaller is faster and less converged."""

    def run(self) -> int:
        import importlib
        import inspect

        # Each benchmark lives next to what it measures and exposes run_bench(json_out) -> int.
        modules = {
            "raster": "reconstruct.raster.bench",
            "quality": "reconstruct.bench_quality",
            "priors": "reconstruct.priors.bench",
            "nerf": "reconstruct.nerf.bench",
            "compress": "pruning.bench",
        }
        try:
            module = importlib.import_module(modules[self.what])
        except ModuleNotFoundError as err:
            if err.name is not None and err.name.startswith(modules[self.what].split(".")[0]):
                return not_built(f"`recon bench {self.what}`")
            raise
        kwargs = {}
        if self.iters is not None and "iters" in inspect.signature(module.run_bench).parameters:
            kwargs["iters"] = self.iters
        return module.run_bench(json_out=self.json, **kwargs)
