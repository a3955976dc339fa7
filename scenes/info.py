"""`recon info`: what a scene folder holds and how it will be split, without decoding images.

A folder of photos without poses is listed photo by photo (size, EXIF focal length); those are
decoded once to refuse truncated files early.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from scenes.load import detect_format, load_scene
from scenes.types import SceneData


def scene_summary(scene: SceneData) -> dict:
    """The JSON record of ``recon info --json``: format, n_frames, width, height, train, test, has_points
    (and has_masks for scenes with object masks)."""
    out = {
        "format": scene.format,
        "n_frames": scene.n_frames,
        "width": scene.width,
        "height": scene.height,
        "train": [int(i) for i in scene.train_ids],
        "test": [int(i) for i in scene.test_ids],
        "has_points": bool(scene.has_points),
    }
    if scene.has_masks:
        out["has_masks"] = True
    return out


def photos_summary(path: Path) -> dict:
    """The JSON record for a pose-free photo folder: format "photos", n_frames, width, height
    (None when sizes differ), one_camera, and one entry per photo (path, size, EXIF focal)."""
    from scenes.photos import list_photos, one_camera

    photos = list_photos(path)
    sizes = {(p.width, p.height) for p in photos}
    w, h = sizes.pop() if len(sizes) == 1 else (None, None)
    return {
        "format": "photos",
        "n_frames": len(photos),
        "width": w,
        "height": h,
        "has_points": False,
        "one_camera": one_camera(photos),
        "photos": [p.to_json() for p in photos],
    }


def _ids(ids: tuple[int, ...], limit: int = 24) -> str:
    shown = ", ".join(str(i) for i in ids[:limit])
    return f"[{shown}{', ...' if len(ids) > limit else ''}]"


def _print_table(lines: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        print(f"{k:<{width}}  {v}")


def _print_photos(path: Path, summary: dict) -> None:
    _print_table([
        ("scene", str(path)),
        ("format", "photos (no camera poses: they are estimated from the photos)"),
        ("photos", str(summary["n_frames"])),
        ("one camera", "yes" if summary["one_camera"] else "no"),
    ])
    for p in summary["photos"]:
        focal = "no EXIF focal"
        if p["focal_px"] is not None:
            parts = [f"{p['focal_px']:.1f} px"]
            if p["focal_35mm"] is not None:
                parts.append(f"{p['focal_35mm']:g} mm (35 mm equiv.)")
            elif p["focal_mm"] is not None:
                parts.append(f"{p['focal_mm']:g} mm")
            focal = ", ".join(parts)
        elif p["focal_mm"] is not None:
            focal = f"{p['focal_mm']:g} mm (sensor size unknown)"
        print(f"  {Path(p['path']).name}  {p['width']} x {p['height']}  {focal}")


def print_info(
    path: Path, *, views: int | None = None, downscale: float | None = None, resolution: int | None = None, as_json: bool = False
) -> int:
    """Load ``path`` (headers only) and print its summary; returns the exit code."""
    if detect_format(path) == "photos":
        summary = photos_summary(Path(path))
        if as_json:
            sys.stdout.write(json.dumps(summary) + "\n")
        else:
            _print_photos(Path(path), summary)
        return 0
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
    if scene.has_masks:
        lines.append(("object masks", "yes (metrics are masked)"))
    _print_table(lines)
    return 0
