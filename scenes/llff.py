"""LLFF reader: poses_bounds.npy [F, 17] + images/ or images_N/ folders.

Each row of poses_bounds.npy is a 3x5 matrix (row-major) followed by the near and far depth
bounds: columns 0-2 are the camera axes [down, right, back] in the COLMAP world, column 3 the
camera center, column 4 (height, width, focal) at full resolution. Images are matched to rows by
sorted file name. Normalization follows NeRF's LLFF loader: scale so the smallest near bound
becomes 1 / 0.75, then recenter on the average pose, so the world frame is the average camera's
OpenGL frame (x right, y up, z back). Sparse points come from sparse/0/points3D.bin (or .txt)
when present: LLFF poses are COLMAP's world frame, so the same similarity maps them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scenes.colmap_points import find_points_file, read_points3d
from scenes.errors import ReconError
from scenes.geometry import average_pose_opengl, check_poses, scale_intrinsics, similarity, transform_points, transform_poses
from scenes.images import (
    FrameLoader,
    check_resample_args,
    image_folders,
    list_images,
    pick_factor,
    plan_resample,
    requested_factor,
    uniform_size,
)
from scenes.splits import holdout_split_for
from scenes.types import SceneData

BD_FACTOR = 0.75


def read_poses_bounds(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T_orig_cam [F, 4, 4] OpenCV camera-to-world, bounds [F, 2], hwf [F, 3]) from poses_bounds.npy."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ReconError(path, f"cannot read ({err})") from None
    if arr.ndim != 2 or arr.shape[1] != 17 or arr.shape[0] == 0:
        raise ReconError(path, f"expected an [F, 17] array, got shape {list(arr.shape)}")
    arr = arr.astype(np.float64)
    m = arr[:, :15].reshape(-1, 3, 5)  # [F, 3, 5]
    bounds = arr[:, 15:17]
    hwf = m[:, :, 4]
    down, right, back, center = m[:, :, 0], m[:, :, 1], m[:, :, 2], m[:, :, 3]
    T = np.tile(np.eye(4), (len(arr), 1, 1))
    T[:, :3, 0], T[:, :3, 1], T[:, :3, 2], T[:, :3, 3] = right, down, -back, center
    check_poses(T, path)
    if not np.isfinite(bounds).all() or (bounds <= 0).any():
        raise ReconError(path, "depth bounds must be finite and positive")
    if not np.isfinite(hwf).all() or (hwf <= 0).any():
        raise ReconError(path, "height/width/focal column must be finite and positive")
    return T, bounds, hwf


def llff_normalization(T_orig_cam: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, float]:
    """(T_world_orig [4, 4], scale) of NeRF's LLFF loader (bd_factor 0.75, recenter)."""
    scale = 1.0 / (float(bounds.min()) * BD_FACTOR)
    scaled = T_orig_cam.copy()
    scaled[:, :3, 3] *= scale
    T_avg = average_pose_opengl(scaled)  # [4, 4] scaled-world <- average camera
    R_avg, c_avg = T_avg[:3, :3], T_avg[:3, 3]
    return similarity(scale, R_avg.T, -R_avg.T @ c_avg), scale


def read_llff(
    root: Path,
    *,
    views: int | None = None,
    downscale: float | None = None,
    resolution: int | None = None,
    test_every: int = 1,
) -> SceneData:
    """Read an LLFF scene folder. See the module docstring for conventions."""
    del test_every  # LLFF's protocol fixes the holdout (every 8th image)
    check_resample_args(root, downscale, resolution)
    pb_path = root / "poses_bounds.npy"
    T_orig_cam, bounds, hwf = read_poses_bounds(pb_path)
    n = len(T_orig_cam)
    full_h, full_w, focal = (float(x) for x in hwf[0])
    full_size = (int(round(full_w)), int(round(full_h)))

    folders = image_folders(root)
    if not folders:
        raise ReconError(root, "no images/ or images_N/ folder next to poses_bounds.npy")
    factor = requested_factor(full_size[0], downscale, resolution, min(folders))
    f = pick_factor(root, list(folders), factor)
    folder = folders[f]
    paths = list_images(folder)
    if len(paths) != n:
        raise ReconError(folder, f"has {len(paths)} images but poses_bounds.npy has {n} poses")
    source_size = uniform_size(paths)
    resample = plan_resample(
        folder, full_size=full_size, folder_factor=f, source_size=source_size, factor=factor, resolution=resolution
    )

    Ks_full = np.zeros((n, 3, 3))
    Ks_full[:, 0, 0] = hwf[:, 2]
    Ks_full[:, 1, 1] = hwf[:, 2]
    Ks_full[:, 0, 2] = hwf[:, 1] / 2.0
    Ks_full[:, 1, 2] = hwf[:, 0] / 2.0
    Ks_full[:, 2, 2] = 1.0
    w, h = resample.target_size
    Ks = scale_intrinsics(Ks_full, w / full_w, h / full_h)

    T_world_orig, scale = llff_normalization(T_orig_cam, bounds)
    T_world_cam = transform_poses(T_world_orig, scale, T_orig_cam)

    points = colors = None
    pts_file = find_points_file(root)
    if pts_file is not None:
        xyz, colors = read_points3d(pts_file)
        points = transform_points(T_world_orig, xyz)

    train, test = holdout_split_for(root, n, views)
    return SceneData(
        format="llff",
        root=root,
        image_paths=tuple(paths),
        Ks=Ks,
        T_world_cam=T_world_cam,
        width=w,
        height=h,
        train_ids=tuple(train),
        test_ids=tuple(test),
        near=float(bounds.min()) * scale,
        far=float(bounds.max()) * scale,
        T_world_orig=T_world_orig,
        scale=scale,
        points=points,
        point_colors=colors,
        downscale=resample.downscale,
        loader=FrameLoader(paths, resample),
    )
