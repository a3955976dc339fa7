"""What `recon view TARGET` shows: a splat file, or a run folder (splats, compressed version,
scene cameras, or a NeRF rendered on the server)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from reconstruct.run import Run
from reconstruct.splats import Splats
from scenes.errors import ReconError

if TYPE_CHECKING:
    from scenes.types import SceneData

SPLAT_SUFFIXES = (".ply", ".spz", ".splat", ".sog", ".glb")


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
    """Any of .ply / .compressed.ply / .spz / .splat / .sog / .glb through the formats package."""
    from pruning.formats import read_splats

    return read_splats(path)


def _run_scene(run: Run, notes: list[str]) -> "SceneData | None":
    """The run's scene (cameras, images, split) as it was trained, when its folder is still there."""
    try:
        return run.scene()
    except ReconError as err:
        notes.append(f"cameras not shown: {err}")
        return None


def _compressed(run: Run, notes: list[str]) -> Splats | None:
    """RUN/compressed/ decoded by the compression package (None when the run has none)."""
    from pruning import artifact

    if not (run.compressed_dir / artifact.HEADER).is_file():
        return None
    try:
        return artifact.load_artifact(run.compressed_dir)
    except ReconError as err:
        notes.append(f"compressed version not shown: {err}")
        return None


def nerf_render_fn(run: Run, scene: "SceneData | None") -> Callable[..., np.ndarray]:
    """Server-side renderer of a NeRF run (reconstruct.nerf's field and occupancy grid):
    ``render_fn(T_world_cam, K, w, h, depth=False) -> [h, w, 3]`` (or [h, w] depth, NaN where empty)."""
    import torch

    from reconstruct.nerf.method import field_from_state, render_image
    from viewer.render import default_device

    state = run.checkpoint()["state"]
    field, grid = field_from_state(state, default_device(), implementation=run.nerf_config.nerf.encoding)
    n_samples = int(state["n_samples"])
    if scene is not None:
        near, far, background = float(scene.near), float(scene.far), tuple(scene.background)
    else:  # no scene folder: sample the whole occupancy grid
        near, far, background = 0.01, 1e3, (1.0, 1.0, 1.0)

    def render_fn(T_world_cam: np.ndarray, K: np.ndarray, width: int, height: int, *, depth: bool = False) -> np.ndarray:
        with torch.no_grad():
            rgb, d, acc = render_image(field, grid, K, T_world_cam, int(width), int(height), near=near, far=far,
                                       background=background, n_samples=n_samples)
        if depth:
            return np.where(acc.numpy() > 0.5, d.numpy(), np.nan).astype(np.float32)
        return rgb.numpy()

    return render_fn


def load_target(path: Path) -> ViewTarget:
    """Resolve ``recon view``'s TARGET; raises ReconError with the path when nothing is viewable."""
    path = Path(path)
    if not path.exists():
        raise ReconError(path, "no such file or folder")
    if path.is_file():
        if path.suffix.lower() not in SPLAT_SUFFIXES:
            raise ReconError(path, "not a splat file (expected .ply, .compressed.ply, .spz, .splat, .sog or .glb) or a run folder")
        return ViewTarget(path=path, splats=read_splat_file(path))
    notes: list[str] = []
    run = Run(path)
    if Run.is_run(path):
        run.config  # noqa: B018 - a run folder whose config.json is unreadable is refused, not shown half
    splats = run.splats() if run.has_splats() else None
    nerf = splats is None and Run.is_run(path) and run.method == "nerf"
    if splats is None and not nerf:
        raise ReconError(path, f"not a viewable run folder: no {Run.SPLATS} and not a NeRF run")
    scene = _run_scene(run, notes) if Run.is_run(path) else None
    render_fn = nerf_render_fn(run, scene) if nerf else None
    background = (1.0, 1.0, 1.0)
    if scene is not None:
        background = (float(scene.background[0]), float(scene.background[1]), float(scene.background[2]))
    return ViewTarget(
        path=path, splats=splats, compressed=_compressed(run, notes) if splats is not None else None,
        scene=scene, render_fn=render_fn, background=background, notes=tuple(notes),
    )
