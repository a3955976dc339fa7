"""Blender / NeRF-synthetic reader: transforms_train.json + transforms_test.json.

Frames are numbered train file first, then test file (``splits.blender_split``); the val file
is not part of the sparse-view protocol and is not read. RGBA PNGs are composited on white;
focal length from ``camera_angle_x``; camera poses flipped from OpenGL to OpenCV; the world
frame is kept as is (identity normalization, near 2 and far 6 as in NeRF).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from scenes.errors import ReconError
from scenes.geometry import check_poses, opengl_to_opencv, scale_intrinsics
from scenes.images import FrameLoader, check_resample_args, plan_resample, requested_factor, uniform_size
from scenes.splits import blender_split
from scenes.types import SceneData

WHITE = (1.0, 1.0, 1.0)
NEAR, FAR = 2.0, 6.0


def load_json(path: Path) -> dict:
    """Parse a JSON object; ReconError naming the file when missing or malformed."""
    if not path.is_file():
        raise ReconError(path, "file is missing")
    try:
        with open(path, encoding="utf-8") as fh:
            meta = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ReconError(path, f"not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise ReconError(path, "expected a JSON object at the top level")
    return meta


def frame_image_path(base: Path, file_path: str) -> Path:
    """Resolve a frame's ``file_path`` relative to its JSON; add ``.png`` when there is no suffix."""
    p = base / file_path
    if p.suffix == "" or not p.suffix[1:].isalpha():
        p = p.with_name(p.name + ".png")
    return p


def _read_file(path: Path) -> tuple[list[Path], np.ndarray, float]:
    """(image paths, [F, 4, 4] OpenGL camera-to-world, camera_angle_x) of one transforms file."""
    meta = load_json(path)
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise ReconError(path, "has no frames")
    if "camera_angle_x" not in meta:
        raise ReconError(path, "has no camera_angle_x")
    paths, poses = [], []
    for j, fr in enumerate(frames):
        try:
            paths.append(frame_image_path(path.parent, str(fr["file_path"])))
            T = np.asarray(fr["transform_matrix"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as err:
            raise ReconError(path, f"frame {j} is malformed ({err})") from None
        if T.shape == (3, 4):
            T = np.vstack([T, [0.0, 0.0, 0.0, 1.0]])
        if T.shape != (4, 4):
            raise ReconError(path, f"frame {j} transform_matrix has shape {T.shape}, expected 4x4")
        poses.append(T)
    poses_arr = np.stack(poses)
    check_poses(poses_arr, path, names=[f"frame {j} ({fr.get('file_path')})" for j, fr in enumerate(frames)])
    try:
        angle = float(meta["camera_angle_x"])
    except (TypeError, ValueError):
        raise ReconError(path, "camera_angle_x is not a number") from None
    if not (math.isfinite(angle) and 0 < angle < math.pi):
        raise ReconError(path, f"camera_angle_x {angle} is not a valid angle")
    return paths, poses_arr, angle


def read_blender(
    root: Path,
    *,
    views: int | None = None,
    downscale: float | None = None,
    resolution: int | None = None,
    test_every: int = 1,
) -> SceneData:
    """Read a NeRF-synthetic scene folder. See the module docstring for conventions."""
    check_resample_args(root, downscale, resolution)
    train_paths, train_gl, angle_x = _read_file(root / "transforms_train.json")
    test_paths, test_gl, _ = _read_file(root / "transforms_test.json")
    paths = train_paths + test_paths
    T_world_cam = opengl_to_opencv(np.concatenate([train_gl, test_gl]))

    full_w, full_h = uniform_size(paths)
    factor = requested_factor(full_w, downscale, resolution, 1.0)
    resample = plan_resample(
        root, full_size=(full_w, full_h), folder_factor=1, source_size=(full_w, full_h), factor=factor, resolution=resolution
    )
    focal = 0.5 * full_w / math.tan(0.5 * angle_x)
    K_full = np.array([[focal, 0.0, full_w / 2.0], [0.0, focal, full_h / 2.0], [0.0, 0.0, 1.0]])
    w, h = resample.target_size
    K = scale_intrinsics(K_full, w / full_w, h / full_h)
    try:
        train, test = blender_split(len(train_paths), len(test_paths), views, test_every=test_every)
    except ValueError as err:
        raise ReconError(root, str(err)) from None
    return SceneData(
        format="blender",
        root=root,
        image_paths=tuple(paths),
        Ks=np.repeat(K[None], len(paths), axis=0),
        T_world_cam=T_world_cam,
        width=w,
        height=h,
        train_ids=tuple(train),
        test_ids=tuple(test),
        near=NEAR,
        far=FAR,
        background=WHITE,
        downscale=resample.downscale,
        loader=FrameLoader(paths, resample, background=WHITE),
    )
