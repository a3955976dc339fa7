"""What `recon view TARGET` shows: a splat file, or a run folder (splats, compressed version,
scene cameras, or a NeRF rendered on the server)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from reconstruct.splats import Splats
from scenes.errors import ReconError

if TYPE_CHECKING:
    from scenes.types import SceneData

SPLAT_SUFFIXES = (".ply", ".spz", ".splat")


@dataclass(frozen=True)
class ViewTarget:
    """Everything the viewer can show for one TARGET."""

    path: Path
    """The file or run folder given."""
    splats: Splats | None
    """Splats to draw in the browser (None for a NeRF run)."""
    compressed: Splats | None = None
    """Decoded compressed version of the run, when RUN/compressed exists."""
    scene: "SceneData | None" = None
    """The run's scene (cameras and images), when its folder is still there."""
    render_fn: Callable[..., np.ndarray] | None = None
    """Server-side renderer ``(T_world_cam, K, w, h) -> [h, w, 3]`` (NeRF runs)."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Background color of server renders."""
    notes: tuple[str, ...] = ()
    """Things that could not be loaded (printed, not fatal)."""


def read_splat_file(path: Path) -> Splats:
    """Any of .ply / .compressed.ply / .spz / .splat through the formats package."""
    from pruning.formats import read_splats

    return read_splats(path)


def _run_config(run: Path) -> dict:
    cfg_path = run / "config.json"
    if not cfg_path.is_file():
        return {}
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReconError(cfg_path, f"unreadable run config ({err})") from None
    if not isinstance(cfg, dict):
        raise ReconError(cfg_path, "run config is not a JSON object")
    return cfg


def _run_scene(run: Path, cfg: dict, notes: list[str]) -> "SceneData | None":
    """The run's scene, through ``reconstruct.runs`` when it exists, else from config.json fields."""
    try:
        from reconstruct import runs  # the lead's run helpers
    except ImportError:
        runs = None
    if runs is not None and hasattr(runs, "load_run_scene"):
        try:
            return runs.load_run_scene(run)
        except ReconError as err:
            notes.append(f"cameras not shown: {err}")
            return None
    scene_path = cfg.get("scene") or cfg.get("data") or cfg.get("scene_path")
    if not scene_path:
        return None
    scene_path = Path(scene_path)
    if not scene_path.is_absolute() and not scene_path.exists():
        scene_path = (run / scene_path).resolve()
    if not scene_path.exists():
        notes.append(f"cameras not shown: scene folder {scene_path} is not here")
        return None
    from scenes import load_scene

    kwargs = {k: cfg[k] for k in ("views", "downscale", "resolution", "test_every") if cfg.get(k) is not None}
    try:
        return load_scene(scene_path, **kwargs)
    except ReconError as err:
        notes.append(f"cameras not shown: {err}")
        return None


def _compressed(run: Path, notes: list[str]) -> Splats | None:
    """RUN/compressed/ decoded by the compression package (None when the run has none)."""
    folder = run / "compressed"
    if not folder.exists():
        return None
    from pruning.artifact import load_artifact

    try:
        return load_artifact(folder)
    except ReconError as err:
        notes.append(f"compressed version not shown: {err}")
        return None


def _nerf_render_fn(run: Path, notes: list[str]) -> Callable[..., np.ndarray] | None:
    """Hook for NeRF runs: ``reconstruct.nerf.viewer_render_fn(run) -> render_fn``."""
    try:
        from reconstruct import nerf
    except ImportError:
        return None
    make = getattr(nerf, "viewer_render_fn", None)
    if make is None:
        notes.append("NeRF run found but reconstruct.nerf has no viewer_render_fn yet")
        return None
    return make(run)


def load_target(path: Path) -> ViewTarget:
    """Resolve ``recon view``'s TARGET; raises ReconError with the path when nothing is viewable."""
    path = Path(path)
    if not path.exists():
        raise ReconError(path, "no such file or folder")
    if path.is_file():
        if path.suffix.lower() not in SPLAT_SUFFIXES:
            raise ReconError(path, "not a splat file (expected .ply, .compressed.ply, .spz or .splat) or a run folder")
        return ViewTarget(path=path, splats=read_splat_file(path))
    notes: list[str] = []
    cfg = _run_config(path)
    splats_path = path / "splats.ply"
    splats = read_splat_file(splats_path) if splats_path.is_file() else None
    render_fn = None if splats is not None else _nerf_render_fn(path, notes)
    if splats is None and render_fn is None:
        raise ReconError(path, "not a run folder: no splats.ply (and no NeRF renderer for it)")
    scene = _run_scene(path, cfg, notes)
    background = tuple(float(c) for c in scene.background) if scene is not None else (1.0, 1.0, 1.0)
    return ViewTarget(
        path=path, splats=splats, compressed=_compressed(path, notes) if splats is not None else None,
        scene=scene, render_fn=render_fn, background=background, notes=tuple(notes),
    )
