"""What `recon info` reports about a scene folder, as data: format, frames, size, split.

A folder of photos without poses is listed photo by photo (size, EXIF focal length); those are
decoded once to refuse truncated files early. The CLI prints these records.
"""

from __future__ import annotations

from pathlib import Path

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
