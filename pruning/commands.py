"""CLI surfaces of compression and export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from reconstruct.cli import not_built


@dataclass
class CompressCommand:
    """Compress a trained run: learnable masks, codebook quantization, ADMM grid pruning."""

    run_dir: Path
    """Run folder written by `recon train`."""
    masks: bool = False
    """Fine-tune learnable masks and remove masked Gaussians."""
    quantize: bool = False
    """Residual vector quantization of scale/rotation and a codebook for colors."""
    admm: bool = False
    """ADMM saliency-grid pruning (hash-grid NeRF runs)."""
    json: bool = False
    """Print one JSON object instead of a table."""

    def run(self) -> int:
        return not_built("`recon compress`")


@dataclass
class ExportCommand:
    """Export a run (or compressed artifact) for players: .ply, compressed .ply, .spz, .splat."""

    run_dir: Path
    """Run folder written by `recon train` (or `recon compress`)."""
    format: Literal["ply", "compressed-ply", "spz", "splat", "pointcloud", "mesh"] = "compressed-ply"
    """Output format."""
    out: Path | None = None
    """Output file (default: inside the run folder)."""
    sh_degree: int | None = None
    """Spherical-harmonics degree to keep (default: all the run has)."""

    def run(self) -> int:
        return not_built("`recon export`")
