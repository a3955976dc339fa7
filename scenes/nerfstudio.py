"""nerfstudio / instant-ngp reader: one transforms.json.

Intrinsics are global or per frame: ``fl_x``, ``fl_y``, ``cx``, ``cy``, ``w``, ``h`` (or
instant-ngp's ``camera_angle_x`` / ``camera_angle_y``), ``camera_model`` OPENCV (default,
``k1 k2 k3 k4 p1 p2``) or OPENCV_FISHEYE (``k1..k4``); distorted images are undistorted on load.
Poses (``transform_matrix``) are OpenGL camera-to-world and flipped to OpenCV. ``file_path`` is
relative to the JSON; frames are ordered by it. A downscale of N reads ``images_N/`` in place
of ``images/`` when that folder exists. instant-ngp's ``aabb_scale`` is ignored.
Sparse points: ``ply_file_path`` is already in the JSON's frame (ns-process-data applies its
``applied_transform`` before writing the ply); without it, COLMAP points left by ns-process-data
in colmap/sparse/0 are in COLMAP's frame and are mapped with ``applied_transform`` (or, when
the key is missing, the fixed axis swap older nerfstudio versions used, as nerfstudio does).
Normalization: center on the mean camera center, farthest camera on the unit sphere (as COLMAP).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from scenes.blender import frame_image_path, load_json
from scenes.colmap import near_far_from_points
from scenes.colmap_points import find_points_file, read_points3d
from scenes.errors import ReconError
from scenes.geometry import center_and_scale, check_poses, opengl_to_opencv, scale_intrinsics, transform_points, transform_poses
from scenes.images import (
    FrameLoader,
    check_resample_args,
    image_folders,
    image_size,
    pick_factor,
    plan_resample,
    requested_factor,
    uniform_size,
)
from scenes.splits import holdout_split_for
from scenes.types import SceneData

#: COLMAP -> transforms.json axes that nerfstudio assumes for data written before "applied_transform" existed.
LEGACY_APPLIED_TRANSFORM = ((0.0, 1.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0), (0.0, 0.0, -1.0, 0.0))

_MODELS = {
    "OPENCV": "opencv",
    "PINHOLE": "opencv",
    "SIMPLE_PINHOLE": "opencv",
    "SIMPLE_RADIAL": "opencv",
    "RADIAL": "opencv",
    "OPENCV_FISHEYE": "opencv_fisheye",
}


def _num(d: dict, key: str, default: float | None, path: Path, where: str) -> float | None:
    if key not in d:
        return default
    try:
        v = float(d[key])
    except (TypeError, ValueError):
        raise ReconError(path, f"{where}: {key} is not a number") from None
    if not math.isfinite(v):
        raise ReconError(path, f"{where}: {key} is not finite")
    return v


def _frame_camera(
    meta: dict, fr: dict, path: Path, where: str, size: tuple[int, int]
) -> tuple[tuple[int, int], np.ndarray, np.ndarray, str]:
    """(full size, K [3, 3], coeffs [6], model) of one frame; frame keys override global ones."""

    def get(key: str, default: float | None = None) -> float | None:
        return _num(fr, key, _num(meta, key, default, path, "global"), path, where)

    def get_or(key: str, default: float) -> float:
        v = get(key, default)
        assert v is not None  # a missing key falls back to the (non-None) default
        return v

    w = int(get_or("w", size[0]))
    h = int(get_or("h", size[1]))
    fx = get("fl_x")
    if fx is None:
        angle_x = get("camera_angle_x")
        if angle_x is None:
            raise ReconError(path, f"{where}: no focal length (fl_x or camera_angle_x)")
        fx = 0.5 * w / math.tan(0.5 * angle_x)
    fy = get("fl_y")
    if fy is None:
        angle_y = get("camera_angle_y")
        fy = fx if angle_y is None else 0.5 * h / math.tan(0.5 * angle_y)
    cx, cy = get("cx", w / 2.0), get("cy", h / 2.0)
    if fx <= 0 or fy <= 0:
        raise ReconError(path, f"{where}: focal length must be positive")
    name = str(fr.get("camera_model", meta.get("camera_model", "OPENCV"))).upper()
    if name not in _MODELS:
        raise ReconError(path, f"{where}: camera_model {name} is not supported")
    model = _MODELS[name]
    k1, k2, k3, k4, p1, p2 = (get(k, 0.0) for k in ("k1", "k2", "k3", "k4", "p1", "p2"))
    if model == "opencv_fisheye":
        coeffs = np.array([k1, k2, 0.0, 0.0, k3, k4])
    else:
        coeffs = np.array([k1, k2, p1, p2, k3, k4])
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    return (w, h), K, coeffs, model


def _downscaled_path(p: Path, factor: int) -> Path:
    """images/x.png -> images_N/x.png (factor 1 returns p)."""
    if factor == 1:
        return p
    return p.parent.parent / f"{p.parent.name}_{factor}" / p.name


def _read_ply_points(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    from plyfile import PlyData

    try:
        v = PlyData.read(str(path))["vertex"]
        xyz = np.stack([np.asarray(v[k], dtype=np.float64) for k in ("x", "y", "z")], axis=1)
        names = v.data.dtype.names
        rgb = np.stack([np.asarray(v[k]) for k in ("red", "green", "blue")], axis=1).astype(np.uint8) if "red" in names else None
    except Exception as err:  # plyfile raises several types on malformed files
        raise ReconError(path, f"cannot read point cloud ({type(err).__name__}: {err})") from None
    return xyz, rgb


def read_nerfstudio(
    root: Path,
    *,
    views: int | None = None,
    downscale: float | None = None,
    resolution: int | None = None,
    test_every: int = 1,
    json_path: Path | None = None,
) -> SceneData:
    """Read a nerfstudio / instant-ngp scene. See the module docstring for conventions."""
    del test_every  # no official split: holdout every 8th frame
    check_resample_args(root, downscale, resolution)
    path = json_path or root / "transforms.json"
    meta = load_json(path)
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise ReconError(path, "has no frames")
    try:
        frames = sorted(frames, key=lambda fr: str(fr["file_path"]))
        paths1 = [frame_image_path(path.parent, str(fr["file_path"])) for fr in frames]
        poses_gl = [np.asarray(fr["transform_matrix"], dtype=np.float64) for fr in frames]
    except (KeyError, TypeError, ValueError) as err:
        raise ReconError(path, f"malformed frame ({type(err).__name__}: {err})") from None
    for j, T in enumerate(poses_gl):
        if T.shape == (3, 4):
            poses_gl[j] = np.vstack([T, [0.0, 0.0, 0.0, 1.0]])
        elif T.shape != (4, 4):
            raise ReconError(path, f"{frames[j]['file_path']}: transform_matrix has shape {T.shape}, expected 4x4")
    T_orig_cam = opengl_to_opencv(np.stack(poses_gl))
    check_poses(T_orig_cam, path, names=[str(fr["file_path"]) for fr in frames])

    needs_header = not all(("w" in fr or "w" in meta) and ("h" in fr or "h" in meta) for fr in frames)
    header = image_size(paths1[0]) if needs_header else (0, 0)
    cams = [_frame_camera(meta, fr, path, str(fr["file_path"]), header) for fr in frames]
    sizes = {c[0] for c in cams}
    if len(sizes) > 1:
        raise ReconError(path, f"frames have different image sizes {sorted(sizes)}; sizes must match")
    models = {c[3] for c in cams}
    if len(models) > 1:
        raise ReconError(path, "mixing fisheye and pinhole camera models is not supported")
    (full_w, full_h), model = sizes.pop(), models.pop()
    Ks_full = np.stack([c[1] for c in cams])
    coeffs = np.stack([c[2] for c in cams])

    available = [1]
    if paths1[0].parent.name == "images":  # nerfstudio's images_2/, images_4/, ... beside images/
        siblings = image_folders(paths1[0].parent.parent)
        available += [n for n, d in siblings.items() if n > 1 and (d / paths1[0].name).is_file()]
    factor = requested_factor(full_w, downscale, resolution, 1.0)
    f = pick_factor(root, available, factor)
    paths = [_downscaled_path(p, f) for p in paths1]
    source_size = uniform_size(paths)
    folder = paths[0].parent
    resample = plan_resample(
        folder, full_size=(full_w, full_h), folder_factor=f, source_size=source_size, factor=factor, resolution=resolution
    )
    w, h = resample.target_size
    Ks = scale_intrinsics(Ks_full, w / full_w, h / full_h)

    T_world_orig, scale = center_and_scale(T_orig_cam)
    T_world_cam = transform_poses(T_world_orig, scale, T_orig_cam)
    points = colors = None
    if "ply_file_path" in meta:
        xyz, colors = _read_ply_points(path.parent / str(meta["ply_file_path"]))
        points = transform_points(T_world_orig, xyz)
    elif (colmap_points := find_points_file(path.parent / "colmap")) is not None:
        xyz, colors = read_points3d(colmap_points)
        A = np.asarray(meta.get("applied_transform", LEGACY_APPLIED_TRANSFORM), dtype=np.float64)
        if A.shape != (3, 4) or not np.isfinite(A).all():
            raise ReconError(path, "applied_transform must be a finite 3x4 matrix")
        points = transform_points(T_world_orig, xyz @ A[:, :3].T + A[:, 3])
    near, far = near_far_from_points(T_world_cam, points)

    train, test = holdout_split_for(root, len(frames), views)
    distorted = model == "opencv_fisheye" or bool(np.any(coeffs != 0))
    return SceneData(
        format="nerfstudio",
        root=root,
        image_paths=tuple(paths),
        Ks=Ks,
        T_world_cam=T_world_cam,
        width=w,
        height=h,
        train_ids=tuple(train),
        test_ids=tuple(test),
        near=near,
        far=far,
        T_world_orig=T_world_orig,
        scale=scale,
        distortion=coeffs if distorted else None,
        camera_model=model if distorted else "pinhole",
        points=points,
        point_colors=colors,
        downscale=resample.downscale,
        loader=FrameLoader(paths, resample, Ks=Ks, coeffs=coeffs, model=model),
    )
