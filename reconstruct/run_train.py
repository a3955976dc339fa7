"""`recon train`: config resolution (preset / --config / --resume), the run folder, hooks, outputs."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from reconstruct.config import TrainConfig, from_dict, to_json
from reconstruct.runs import atomic_write_text, load_checkpoint, load_config, resolve_device
from scenes.errors import ReconError


def parse_args(argv: list[str]) -> tuple[TrainConfig, Path | None, bool]:
    """(config, run folder to resume or None, overwrite) from the command line."""
    import tyro

    from reconstruct.presets import PRESETS, default_preset, preset_config

    control = argparse.ArgumentParser(add_help=False)
    control.add_argument("--preset", choices=sorted(PRESETS))
    control.add_argument("--config", type=Path)
    control.add_argument("--resume", type=Path)
    control.add_argument("--overwrite", action="store_true")
    opts, rest = control.parse_known_args(argv)
    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--views", type=int)
    peek.add_argument("--method", default="splat")
    seen, _ = peek.parse_known_args(rest)
    if opts.resume is not None:
        base = load_config(opts.resume)
    elif opts.config is not None:
        path = opts.config / "config.json" if opts.config.is_dir() else opts.config
        try:
            base = from_dict(TrainConfig, json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise ReconError(path, f"cannot read config: {err}") from None
    else:
        preset = opts.preset or default_preset(seen.views)
        base = preset_config(preset, Path("."), seen.views, seen.method)
    has_scene = any(not a.startswith("-") for a in rest) or opts.resume or opts.config
    if "-h" in rest or "--help" in rest or not has_scene:
        base = dataclasses.replace(base, scene=base.scene if (opts.resume or opts.config) else Path("SCENE"))
    cfg = tyro.cli(TrainConfig, default=base, args=rest, prog="recon train",
                   description="Reconstruct a scene from a few posed photos. Preset flags: --preset "
                   f"{{{','.join(sorted(PRESETS))}}} (default sparse when --views <= 9), --config RUN/config.json, "
                   "--resume RUN, --overwrite.")
    if not has_scene:
        raise ReconError(None, "recon train needs a scene folder (recon train SCENE --views N)")
    return cfg, opts.resume, opts.overwrite


def default_run_dir(cfg: TrainConfig) -> Path:
    views = "all" if cfg.views is None else f"{cfg.views}v"
    return Path("outputs") / f"{Path(cfg.scene).resolve().name}-{cfg.method}-{views}"


def prepare_run_dir(cfg: TrainConfig, resume: Path | None, overwrite: bool) -> Path:
    if resume is not None:
        return resume
    run_dir = Path(cfg.output.out or default_run_dir(cfg))
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise ReconError(run_dir, "output folder exists; pass --overwrite to replace it or --resume to continue")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def main(argv: list[str]) -> int:
    cfg, resume, overwrite = parse_args(argv)
    import scenes

    scene = scenes.load_scene(cfg.scene, views=cfg.views, downscale=cfg.data.downscale,
                              resolution=cfg.data.resolution, test_every=cfg.data.test_every)
    device = resolve_device(cfg.device)
    run_dir = prepare_run_dir(cfg, resume, overwrite)
    atomic_write_text(run_dir / "config.json", to_json(cfg))
    if cfg.method == "nerf":
        from reconstruct.nerf.trainer import train_nerf

        return train_nerf(cfg, scene, run_dir, device=device, resume=resume is not None)
    trainer = train_splats(cfg, scene, run_dir, device=device, resume=resume is not None)
    return finish(trainer)


def train_splats(cfg: TrainConfig, scene, run_dir: Path, *, device: torch.device, resume: bool,
                 extra_hooks: list | None = None):
    """Build the trainer (fresh or from the checkpoint), run it with the standard hooks, return it."""
    from reconstruct import hooks as H
    from reconstruct.init import initial_points
    from reconstruct.train import Trainer

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    trainer = Trainer(cfg, scene, run_dir, device)
    ckpt = load_checkpoint(run_dir) if resume else None
    if ckpt is not None:
        points = ckpt["params"]["means"].numpy()
        trainer.initialize(points, np.full_like(points, 0.5))
    else:
        points, colors, how = initial_points(cfg, scene)
        trainer.initialize(points, colors)
        trainer.history.append({"step": 0, "init": how, "n_points": len(points)})
    attach_extensions(trainer)
    if ckpt is not None:
        trainer.restore(ckpt)
    else:
        trainer.save_checkpoint()
    hooks = [H.HistoryHook(), H.CheckpointHook(), *(extra_hooks or [])]
    if cfg.viewer:
        hooks.append(H.viewer_hook(trainer))
    with H.ProgressHook(trainer) as progress:
        trainer.run([*hooks, progress])
    return trainer


def attach_extensions(trainer) -> None:
    """Priors and learnable masks add modifiers, regularizers, parameters and strategies."""
    try:
        from reconstruct.priors import attach_priors
    except ImportError as err:
        if not (err.name or "").startswith("reconstruct.priors"):
            raise
    else:
        attach_priors(trainer)
    if trainer.cfg.masks:
        from pruning.masks import attach_masks

        attach_masks(trainer)


def finish(trainer) -> int:
    """Final outputs: splats.ply, test-view evaluation, metrics.json, curves.png, a table."""
    from reconstruct.evaluate import evaluate, plot_curves
    from reconstruct.hooks import print_metrics, export_splats

    run_dir = trainer.run_dir
    ply = export_splats(trainer)
    plot_curves([h for h in trainer.history if "loss" in h], run_dir / "curves.png")
    if not trainer.cfg.output.eval_at_end:
        return 0
    from reconstruct.gaussians import activate

    with torch.no_grad():
        result = evaluate(activate(trainer.params), trainer.scene, out_dir=run_dir, device=trainer.device)
    result.update(n_gaussians=len(trainer.params["means"]), train_seconds=trainer.seconds,
                  ply_bytes=ply.stat().st_size)
    atomic_write_text(run_dir / "metrics.json", json.dumps(result, indent=2))
    print_metrics(result, title=f"{run_dir}: test views", file=sys.stdout)
    return 0
