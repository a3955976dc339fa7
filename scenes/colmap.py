"""COLMAP reader: sparse/0 (or sparse/) cameras, images, points3D as .bin or .txt via pycolmap.

Frames are the registered images sorted by name; images come from images/ (or images_N/ for a
downscale of N). Camera models PINHOLE, SIMPLE_PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV and
OPENCV_FISHEYE are read; distorted images are undistorted on load (``scenes.distortion``) and
served as pinhole images with the same intrinsics. The world is centered on the mean camera
center and scaled so the farthest camera sits on the unit sphere; near/far come from the depths
of the sparse points in the cameras.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scenes.errors import ReconError
from scenes.geometry import center_and_scale, check_poses, scale_intrinsics, transform_points, transform_poses
from scenes.images import (
    FrameLoader,
    check_resample_args,
    image_folders,
    pick_factor,
    plan_resample,
    requested_factor,
    uniform_size,
)
from scenes.splits import holdout_split_for
from scenes.types import SceneData

#: near/far (normalized units) when the model has no points to measure them from.
DEFAULT_NEAR, DEFAULT_FAR = 0.01, 10.0


def find_model_dir(root: Path) -> Path | None:
    """The folder holding images.bin / images.txt: sparse/0 first, then sparse/."""
    for sub in ("sparse/0", "sparse"):
        d = root / sub
        if (d / "images.bin").is_file() or (d / "images.txt").is_file():
            return d
    return None


def camera_intrinsics(cam, cameras_file: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """(K [3, 3], coeffs [6] as k1 k2 p1 p2 k3 k4, distortion model) of a pycolmap camera."""
    name = cam.model.name
    p = [float(v) for v in cam.params]
    coeffs = np.zeros(6)
    model = "opencv"
    if name == "SIMPLE_PINHOLE":
        fx = fy = p[0]
        cx, cy = p[1], p[2]
        model = "pinhole"
    elif name == "PINHOLE":
        fx, fy, cx, cy = p[:4]
        model = "pinhole"
    elif name == "SIMPLE_RADIAL":
        fx = fy = p[0]
        cx, cy = p[1], p[2]
        coeffs[0] = p[3]
    elif name == "RADIAL":
        fx = fy = p[0]
        cx, cy = p[1], p[2]
        coeffs[0], coeffs[1] = p[3], p[4]
    elif name == "OPENCV":
        fx, fy, cx, cy = p[:4]
        coeffs[:4] = p[4:8]
    elif name == "OPENCV_FISHEYE":
        fx, fy, cx, cy = p[:4]
        coeffs[0], coeffs[1], coeffs[4], coeffs[5] = p[4:8]
        model = "opencv_fisheye"
    else:
        raise ReconError(cameras_file, f"camera {cam.camera_id} uses model {name}, which is not supported")
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    if not (np.isfinite(K).all() and np.isfinite(coeffs).all() and fx > 0 and fy > 0):
        raise ReconError(cameras_file, f"camera {cam.camera_id} has invalid parameters {p}")
    return K, coeffs, model


def near_far_from_points(T_world_cam: np.ndarray, points: np.ndarray | None, *, max_points: int = 20000) -> tuple[float, float]:
    """Robust depth range (0.5 and 99.5 percentiles, 10% margin) of ``points`` [P, 3] in all cameras."""
    if points is None or len(points) == 0:
        return DEFAULT_NEAR, DEFAULT_FAR
    if len(points) > max_points:
        points = points[np.linspace(0, len(points) - 1, max_points).astype(int)]
    R = T_world_cam[:, :3, :3]  # [F, 3, 3] camera -> world
    c = T_world_cam[:, :3, 3]  # [F, 3]
    z = np.einsum("fk,fpk->fp", R[:, :, 2], points[None] - c[:, None])  # [F, P] depth along camera z
    z = z[z > 0]
    if len(z) == 0:
        return DEFAULT_NEAR, DEFAULT_FAR
    near = max(float(np.percentile(z, 0.5)) * 0.9, 1e-3)
    far = max(float(np.percentile(z, 99.5)) * 1.1, near * 2)
    return near, far


def read_colmap(
    root: Path,
    *,
    views: int | None = None,
    downscale: float | None = None,
    resolution: int | None = None,
    test_every: int = 1,
) -> SceneData:
    """Read a COLMAP scene folder. See the module docstring for conventions."""
    import pycolmap

    del test_every  # no official split: holdout every 8th frame
    check_resample_args(root, downscale, resolution)
    model_dir = find_model_dir(root)
    if model_dir is None:
        raise ReconError(root, "no COLMAP model (sparse/0/images.bin or images.txt)")
    try:
        rec = pycolmap.Reconstruction(str(model_dir))
    except Exception as err:  # pycolmap raises plain ValueError/RuntimeError with C++ context
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        msg = msg if len(msg) <= 160 else msg[:157] + "..."
        raise ReconError(model_dir, f"cannot read COLMAP model ({msg})") from None
    cameras_file = next((model_dir / n for n in ("cameras.bin", "cameras.txt") if (model_dir / n).is_file()), model_dir)
    images = sorted((im for im in rec.images.values() if im.has_pose), key=lambda im: im.name)
    if not images:
        raise ReconError(model_dir, "COLMAP model has no registered images")

    Ks_full, coeffs, models, sizes = [], [], set(), set()
    for im in images:
        cam = rec.cameras[im.camera_id]
        K, k, model = camera_intrinsics(cam, cameras_file)
        Ks_full.append(K)
        coeffs.append(k)
        models.add(model)
        sizes.add((int(cam.width), int(cam.height)))
    if len(sizes) > 1:
        raise ReconError(cameras_file, f"cameras have different image sizes {sorted(sizes)}; sizes must match")
    if "opencv_fisheye" in models and len(models) > 1:
        raise ReconError(cameras_file, "mixing fisheye and pinhole cameras is not supported")
    model = "opencv_fisheye" if "opencv_fisheye" in models else ("opencv" if "opencv" in models else "pinhole")
    Ks_full_arr, coeffs_arr = np.stack(Ks_full), np.stack(coeffs)
    (full_w, full_h) = sizes.pop()

    T_orig_cam = np.stack([np.linalg.inv(np.vstack([im.cam_from_world().matrix(), [0, 0, 0, 1]])) for im in images])
    # COLMAP >= 3.12 keeps poses in frames.bin/.txt (rig frames); older models in images.bin/.txt
    pose_names = ("frames.bin", "frames.txt", "images.bin", "images.txt")
    pose_file = next(model_dir / n for n in pose_names if (model_dir / n).is_file())
    check_poses(T_orig_cam, pose_file, names=[im.name for im in images])

    folders = image_folders(root)
    if not folders:
        raise ReconError(root, "no images/ folder next to the COLMAP model")
    factor = requested_factor(full_w, downscale, resolution, min(folders))
    f = pick_factor(root, list(folders), factor)
    folder = folders[f]
    paths = [folder / im.name for im in images]
    source_size = uniform_size(paths)
    resample = plan_resample(
        folder, full_size=(full_w, full_h), folder_factor=f, source_size=source_size, factor=factor, resolution=resolution
    )
    w, h = resample.target_size
    Ks = scale_intrinsics(Ks_full_arr, w / full_w, h / full_h)

    T_world_orig, scale = center_and_scale(T_orig_cam)
    T_world_cam = transform_poses(T_world_orig, scale, T_orig_cam)
    points = colors = None
    if rec.num_points3D() > 0:
        pts = list(rec.points3D.values())
        xyz = np.array([p.xyz for p in pts], dtype=np.float64).reshape(-1, 3)
        colors = np.array([p.color for p in pts], dtype=np.uint8).reshape(-1, 3)
        points = transform_points(T_world_orig, xyz)
    near, far = near_far_from_points(T_world_cam, points)

    train, test = holdout_split_for(root, len(images), views)
    distorted = model != "pinhole" and bool(np.any(coeffs_arr != 0) or model == "opencv_fisheye")
    return SceneData(
        format="colmap",
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
        distortion=coeffs_arr if distorted else None,
        camera_model=model if distorted else "pinhole",
        points=points,
        point_colors=colors,
        downscale=resample.downscale,
        loader=FrameLoader(paths, resample, Ks=Ks, coeffs=coeffs_arr, model=model),
    )
