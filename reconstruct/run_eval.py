"""`recon eval RUN`: score a finished run on its held-out test views."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from reconstruct.runs import atomic_write_text, load_config, load_run_scene, load_run_splats, resolve_device


def eval_run(run_dir: Path, *, json_out: bool = False, compressed: bool = False) -> int:
    """Render RUN's test views, write renders/grid/metrics.json, print a table or one JSON object.

    JSON keys: psnr, ssim, lpips (null when its weights are missing; lpips_reason says why), n_test,
    n_gaussians, train_seconds, render_fps, ply_bytes. ``compressed``: score what `recon compress`
    wrote (RUN/compressed/: the decoded splat artifact, or the pruned NeRF) and write there.
    """
    from reconstruct.evaluate import evaluate
    from reconstruct.hooks import print_metrics

    cfg = load_config(run_dir)
    scene = load_run_scene(run_dir, cfg=cfg)
    out_dir = Path(run_dir) / "compressed" if compressed else Path(run_dir)
    if cfg.method == "nerf" and compressed:
        from pruning.admm_nerf import load_compressed_nerf
        from reconstruct.nerf.trainer import evaluate_nerf
        from reconstruct.runs import load_checkpoint

        field, grid = load_compressed_nerf(run_dir, resolve_device(cfg.device))
        n_samples = int(load_checkpoint(run_dir).get("n_samples") or 128)
        result = evaluate_nerf(field, grid, scene, n_samples=n_samples, out_dir=out_dir)
    elif cfg.method == "nerf":
        from reconstruct.nerf.trainer import evaluate_nerf_run

        result = evaluate_nerf_run(run_dir, cfg=cfg, scene=scene)
    else:
        if compressed:
            from pruning.artifact import artifact_bytes, load_artifact

            splats, size = load_artifact(out_dir), artifact_bytes(out_dir)
        else:
            splats, size = load_run_splats(run_dir), (Path(run_dir) / "splats.ply").stat().st_size
        result = evaluate(splats, scene, out_dir=out_dir, device=resolve_device(cfg.device))
        result["n_gaussians"] = len(splats)
        result["ply_bytes"] = size
    result["train_seconds"] = _train_seconds(run_dir)
    atomic_write_text(out_dir / "metrics.json", json.dumps(result, indent=2))
    keys = ("psnr", "ssim", "lpips", "lpips_reason", "n_test", "n_gaussians", "train_seconds", "render_fps", "ply_bytes")
    summary = {k: result.get(k) for k in keys}
    if json_out:
        print(json.dumps(summary))
    else:
        print_metrics(summary, title=f"{out_dir}: {summary['n_test']} test views", file=sys.stdout)
    return 0


def _train_seconds(run_dir: Path) -> float | None:
    """Training wall time (excluding evaluation) recorded in the checkpoint."""
    path = Path(run_dir) / "checkpoint.pt"
    if not path.is_file():
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return float(ckpt.get("seconds", 0.0))
