"""Run folders: layout, atomic writes, checkpoints, and loading a finished run back.

RUN/
  config.json       the TrainConfig (``recon train --config RUN/config.json`` reproduces the run)
  checkpoint.pt     model + optimizers + strategy state + step + RNG states + history (atomic)
  splats.ply        standard 3DGS .ply (splat runs)
  history.json      loss / PSNR curves
  metrics.json      test-view scores (``recon eval``)
  renders/          test-view renders; grid.png, curves.png
  compressed/       compression artifact (``recon compress``)
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reconstruct.config import TrainConfig, from_dict
from scenes.errors import ReconError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(path: Path, obj: Any) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def load_config(run_dir: Path) -> TrainConfig:
    """The TrainConfig saved in ``run_dir/config.json``."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ReconError(run_dir, "not a run folder (config.json missing)")
    try:
        return from_dict(TrainConfig, json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ReconError(path, f"unreadable config: {err}") from None


def load_checkpoint(run_dir: Path) -> dict:
    path = Path(run_dir) / "checkpoint.pt"
    if not path.is_file():
        raise ReconError(run_dir, "no checkpoint.pt to resume from")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
        raise ReconError(path, f"unreadable checkpoint: {err}") from None


def load_run_scene(run_dir: Path, *, cfg: TrainConfig | None = None):
    """The scene a run was trained on, with the run's split and resolution."""
    import scenes

    cfg = cfg or load_config(run_dir)
    return scenes.load_scene(
        cfg.scene, views=cfg.views, downscale=cfg.data.downscale, resolution=cfg.data.resolution,
        test_every=cfg.data.test_every,
    )


def load_run_splats(run_dir: Path):
    """The trained splats of a run (RUN/splats.ply) as a ``Splats``."""
    from pruning.formats import read_splats

    path = Path(run_dir) / "splats.ply"
    if not path.is_file():
        raise ReconError(run_dir, "run has no splats.ply (not a finished splat run)")
    return read_splats(path)


def resolve_device(name: str) -> torch.device:
    """auto = the accelerator when there is one (CUDA for gsplat), else CPU; asking for a device
    that is not there is a user error."""
    accel = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    if name == "auto":
        return accel or torch.device("cpu")
    device = torch.device(name)
    if device.type != "cpu" and (accel is None or accel.type != device.type):
        raise ReconError(None, f"--device {name} asked for, but no such device is available")
    return device
