"""What the benchmarks share: where the data is, training a config in-process, cached runs, PNGs."""

from __future__ import annotations

import io
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def shared_data_root() -> Path | None:
    """../shared/data beside the repository, when it is there."""
    root = REPO.parent / "shared" / "data"
    return root if root.is_dir() else None


def demo_scene() -> Path:
    return REPO / "data" / "demo"


def train_config(cfg, *, scene=None, run_dir: Path | None = None, progress: bool = False):
    """Train a resolved config in this process with the one loop: (method, loop state). ``scene``:
    the loaded scene (default: read from the config). With ``run_dir`` the run folder is written as
    `recon train` writes it (config, checkpoint, outputs)."""
    import numpy as np
    import torch

    from reconstruct.loop import LoopState, train_loop
    from reconstruct.run import Run, resolve_device
    from reconstruct.training import build_method, finish
    from scenes import load_scene

    device = resolve_device(cfg.device)
    run = None
    if run_dir is not None:
        from reconstruct.poses import training_scene

        run = Run.create(run_dir, overwrite=True)
        scene = scene or training_scene(cfg, workdir=run.root)  # estimated poses go into the run folder
        run.save_config(cfg)
    scene = scene or load_scene(cfg.scene, views=cfg.views, downscale=cfg.data.downscale, resolution=cfg.data.resolution,
                                test_every=cfg.data.test_every)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    cache = Path(cfg.priors.cache_dir) if getattr(cfg, "priors", None) and cfg.priors.cache_dir else (
        run.priors_dir if run else None)
    method = build_method(cfg, scene, device, cache_dir=cache)
    record = getattr(method, "init_record", None)
    state = LoopState(history=[{"step": 0, **record}] if record else [])
    state = train_loop(method, state, until=cfg.iters, label=method.name, log_every=cfg.output.log_every,
                       checkpoint_every=cfg.output.checkpoint_every if run else None,
                       save=run.save_checkpoint if run else None, show_progress=progress)
    if run is not None:
        finish(run, method, state, evaluate=cfg.output.eval_at_end)
    return method, state


def cached_run(run: Path, train_args: list[str], *, marker: str) -> Path:
    """``run``, trained once with ``recon train <train_args> --out run`` and reused while its
    ``marker`` file and config exist."""
    from reconstruct.run import Run

    if (run / marker).is_file() and Run.is_run(run):
        return run
    from recon.train import parse_train, train

    code = train(parse_train([*train_args, "--out", str(run), "--overwrite"]))
    if code != 0:
        raise SystemExit(code)
    return run


def save_png(fig, path: Path) -> None:
    """Write a matplotlib figure as PNG, atomically, and close it."""
    import matplotlib.pyplot as plt

    from scenes.fileio import atomic_write_bytes

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
