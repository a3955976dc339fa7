"""CLI surfaces of the reconstruction jobs: train, eval, bench."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from reconstruct.cli import not_built


@dataclass
class TrainCommand:
    """Reconstruct a scene from a few posed photos (Gaussian splats or hash-grid NeRF)."""

    scene: Path | None = None
    """Scene folder (Blender, LLFF, COLMAP or nerfstudio layout)."""

    def run(self) -> int:
        return not_built("`recon train` (the trainer)")


@dataclass
class EvalCommand:
    """Render the held-out test views of a run and compute PSNR / SSIM / LPIPS."""

    run_dir: Path
    """Run folder written by `recon train`."""
    json: bool = False
    """Print one JSON object instead of a table."""

    def run(self) -> int:
        return not_built("`recon eval`")


@dataclass
class BenchCommand:
    """Benchmarks: rasterizer speed, training quality, priors, NeRF, compression."""

    what: Literal["raster", "quality", "priors", "nerf", "compress"]
    """Which benchmark to run."""
    json: bool = False
    """Print one JSON object instead of a table."""

    def run(self) -> int:
        import importlib

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
        return module.run_bench(json_out=self.json)
