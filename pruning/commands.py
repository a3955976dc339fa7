"""CLI surfaces of compression and export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from reconstruct.cli import not_built


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
    mask_lambda: float = 0.02
    """Mask loss weight (higher removes more Gaussians; the paper's 5e-4 is for masks trained over a
    whole run, `recon train --masks`)."""
    mask_lr: float = 0.1
    """Adam learning rate of the mask logits."""
    quantize_steps: int = 600
    """Codebook fine-tuning steps."""
    lr_scale: float = 0.1
    """Learning rates of the splat attributes while fine-tuning, relative to the run's."""
    color_entries: int = 4096
    """Entries of each color codebook (sh0 and higher SH bands)."""
    device: str = "auto"
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
        from pruning.compress import CompressConfig, compress_run, print_report
        from pruning.quantize import QuantizeConfig

        none = not (self.masks or self.quantize or self.admm)
        cfg = CompressConfig(
            masks=self.masks or none, quantize=self.quantize or none, mask_steps=self.mask_steps,
            mask_lambda=self.mask_lambda, mask_lr=self.mask_lr, quantize_steps=self.quantize_steps, lr_scale=self.lr_scale,
            quant=QuantizeConfig(sh0_entries=self.color_entries, shN_entries=self.color_entries),
            device=self.device, progress=not self.json, admm_steps=self.admm_steps, admm_budget=self.admm_budget,
            admm_table_shrink=self.admm_table_shrink,
        )
        report = compress_run(self.run_dir, cfg, admm=self.admm, auto=none)
        print_report(report, json_out=self.json)
        return 0


@dataclass
class ExportCommand:
    """Export a run (or compressed artifact) for players: .ply, compressed .ply, .spz, .splat."""

    run_dir: tyro.conf.Positional[Path]
    """Run folder written by `recon train`, its compressed/ artifact, or a splat file to convert."""
    format: Literal["ply", "compressed-ply", "spz", "splat", "pointcloud", "mesh"] = "compressed-ply"
    """Output format."""
    out: Path | None = None
    """Output file (default: inside the run folder)."""
    sh_degree: int | None = None
    """Spherical-harmonics degree to keep (default: all the run has)."""
    source: Literal["auto", "trained", "compressed"] = "auto"
    """Which splats of a run: auto = RUN/compressed/ when `recon compress` made one, else RUN/splats.ply."""
    evaluate: bool = True
    """Render the exported file on the run's test views and report PSNR vs the trained splats."""
    eval_views: int | None = None
    """Render at most this many test views for the PSNR report (default: all)."""
    json: bool = False
    """Print one JSON object instead of a table."""

    def run(self) -> int:
        if self.format in ("pointcloud", "mesh"):
            try:
                from reconstruct.nerf.export import export_nerf
            except ModuleNotFoundError as err:
                if err.name not in ("reconstruct.nerf", "reconstruct.nerf.export"):
                    raise
                return not_built(f"`recon export --format {self.format}`")
            print(export_nerf(self.run_dir, self.format, self.out))
            return 0
        from pruning.export import export_splats, print_report

        report = export_splats(
            self.run_dir, format=self.format, out=self.out, sh_degree=self.sh_degree, source=self.source,
            evaluate=self.evaluate, max_views=self.eval_views, progress=not self.json,
        )
        print_report(report, json_out=self.json)
        return 0
