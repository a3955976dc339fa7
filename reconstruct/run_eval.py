"""`recon eval RUN`: score a finished run on its held-out test views."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from reconstruct.runs import atomic_write_text, load_config, load_run_scene, load_run_splats, resolve_device


def eval_run(run_dir: Path, *, json_out: bool = False) -> int:
    """Render RUN's test views, write renders/grid/metrics.json, print a table or one JSON object.

    JSON keys: psnr, ssim, lpips (null when its weights are missing; lpips_reason says why), n_test,
    n_gaussians, train_seconds, render_fps, ply_bytes.
    """
    from reconstruct.evaluate import evaluate
    from reconstruct.hooks import print_metrics

    cfg = load_config(run_dir)
    scene = load_run_scene(run_dir, cfg=cfg)
    if cfg.method == "nerf":
        from reconstruct.nerf.trainer import evaluate_nerf_run

        result = evaluate_nerf_run(run_dir, cfg=cfg, scene=scene)
    else:
        splats = load_run_splats(run_dir)
        device = resolve_device(cfg.device)
        result = evaluate(splats, scene, out_dir=run_dir, device=device)
        result["n_gaussians"] = len(splats)
        result["ply_bytes"] = (Path(run_dir) / "splats.ply").stat().st_size
    result["train_seconds"] = _train_seconds(run_dir)
    atomic_write_text(Path(run_dir) / "metrics.json", json.dumps(result, indent=2))
    keys = ("psnr", "ssim", "lpips", "lpips_reason", "n_test", "n_gaussians", "train_seconds", "render_fps", "ply_bytes")
    summary = {k: result.get(k) for k in keys}
    if json_out:
        print(json.dumps(summary))
    else:
        print_metrics(summary, title=f"{run_dir}: {summary['n_test']} test views", file=sys.stdout)
    return 0


def _train_seconds(run_dir: Path) -> float | None:
    """Training wall time (excluding evaluation) recorded in the checkpoint."""
    path = Path(run_dir) / "checkpoint.pt"
    if not path.is_file():
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return float(ckpt.get("seconds", 0.0))
