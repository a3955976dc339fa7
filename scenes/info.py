"""`recon info`: what a scene folder holds and how it will be split, without decoding images."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from scenes.load import load_scene
from scenes.types import SceneData


def scene_summary(scene: SceneData) -> dict:
    """The JSON record of ``recon info --json``: format, n_frames, width, height, train, test, has_points."""
    return {
        "format": scene.format,
        "n_frames": scene.n_frames,
        "width": scene.width,
        "height": scene.height,
        "train": [int(i) for i in scene.train_ids],
        "test": [int(i) for i in scene.test_ids],
        "has_points": bool(scene.has_points),
    }


def _ids(ids: tuple[int, ...], limit: int = 24) -> str:
    shown = ", ".join(str(i) for i in ids[:limit])
    return f"[{shown}{', ...' if len(ids) > limit else ''}]"


def print_info(
    path: Path, *, views: int | None = None, downscale: float | None = None, resolution: int | None = None, as_json: bool = False
) -> int:
    """Load ``path`` (headers only) and print its summary; returns the exit code."""
    scene = load_scene(path, views=views, downscale=downscale, resolution=resolution)
    if as_json:
        sys.stdout.write(json.dumps(scene_summary(scene)) + "\n")
        return 0
    lines = [
        ("scene", str(scene.root)),
        ("format", scene.format),
        ("frames", str(scene.n_frames)),
        ("image size", f"{scene.width} x {scene.height} (downscale {scene.downscale:g})"),
        ("camera", scene.camera_model + (" (undistorted on load)" if scene.distortion is not None else "")),
        (f"train ({len(scene.train_ids)})", _ids(scene.train_ids)),
        (f"test ({len(scene.test_ids)})", _ids(scene.test_ids)),
        ("near / far", f"{scene.near:.3g} / {scene.far:.3g}"),
        ("sparse points", f"yes ({len(scene.points)})" if scene.has_points else "no"),
    ]
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        print(f"{k:<{width}}  {v}")
    return 0
