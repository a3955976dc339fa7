"""DTU reader, IDR / NeuS layout: image/ (or images/), mask/, cameras_sphere.npz (or cameras.npz).

``world_mat_i`` is the [4, 4] (or [3, 4]) projection ``P = K [R | t]`` of frame i from DTU world
coordinates to pixels; it is split into K and the pose by an RQ decomposition (numpy only, as
OpenCV's decomposeProjectionMatrix): K upper triangular with a positive diagonal, R a rotation.
K is used as the file gives it (NeuS and RegNeRF use it the same way, no half-pixel shift);
its tiny skew term is kept. ``scale_mat_i`` maps the unit sphere around the object to DTU world
coordinates (``x_dtu = scale_mat @ x_sphere``), so the normalized world is the unit-sphere
frame: ``T_world_orig = inv(scale_mat)``. Images and masks are matched to cameras by sorted
file name. Masks (white = object) become ``SceneData.mask(i)``; the background is black.
Split: RegNeRF's (``splits.dtu_split``), read from the folder's splits_sparse_view.json when
present; a scene with fewer frames than DTU's 49 positions and no split file holds out every
8th frame instead. Default size: the protocol's 400 px width when the images are larger.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from scenes.errors import ReconError
from scenes.geometry import check_poses, scale_intrinsics, transform_poses
from scenes.images import FrameLoader, check_resample_args, list_images, plan_resample, requested_factor, uniform_size
from scenes.masks import MaskLoader
from scenes.splits import DTU_TEST, DTU_TRAIN, dtu_split, holdout_split_for
from scenes.types import SceneData

CAMERA_FILES = ("cameras_sphere.npz", "cameras.npz")
IMAGE_DIRS = ("image", "images")
PROTOCOL_WIDTH = 400
_WORLD_MAT_RE = re.compile(r"^world_mat_(\d+)$")


def find_cameras_file(root: Path) -> Path | None:
    """The IDR camera file of a DTU-layout folder, or None (an image folder must sit beside it)."""
    if not any((root / d).is_dir() for d in IMAGE_DIRS):
        return None
    for name in CAMERA_FILES:
        if (root / name).is_file():
            return root / name
    return None


def rq3(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K upper triangular with positive diagonal, R orthonormal) with ``M = K @ R`` for M [3, 3]."""
    E = np.flipud(np.eye(3))  # reverses row order: turns QR into RQ
    Q, U = np.linalg.qr((E @ M).T)
    K = E @ U.T @ E
    R = E @ Q.T
    D = np.diag(np.where(np.diag(K) < 0, -1.0, 1.0))
    return K @ D, D @ R


def decompose_projection(P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K [3, 3] with K[2, 2] = 1, T_world_cam [4, 4] OpenCV camera-to-world) of P [3, 4] = K [R | t].

    P is defined up to scale (sign included); the sign is chosen so that R is a rotation.
    """
    P = np.asarray(P, dtype=np.float64)[:3, :4]
    if np.linalg.det(P[:, :3]) < 0:
        P = -P
    K_u, R = rq3(P[:, :3])
    t = np.linalg.solve(K_u, P[:, 3])
    T_cam_world = np.eye(4)
    T_cam_world[:3, :3], T_cam_world[:3, 3] = R, t
    T_world_cam = np.eye(4)
    T_world_cam[:3, :3], T_world_cam[:3, 3] = R.T, -R.T @ t
    return K_u / K_u[2, 2], T_world_cam


def read_cameras(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Ks [F, 3, 3], T_orig_cam [F, 4, 4] in DTU world, scale_mat [4, 4]) from an IDR camera file."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: np.asarray(npz[k], dtype=np.float64) for k in npz.files}
    except (OSError, ValueError) as err:
        raise ReconError(path, f"cannot read camera file ({err})") from None
    ids = sorted(int(m.group(1)) for k in arrays if (m := _WORLD_MAT_RE.match(k)))
    if not ids:
        raise ReconError(path, "has no world_mat_i arrays")
    if ids != list(range(len(ids))):
        raise ReconError(path, f"world_mat ids are not 0..{len(ids) - 1} (got {ids[:5]}...)")
    Ks, poses, scale_mats = [], [], []
    for i in ids:
        P = arrays[f"world_mat_{i}"]
        if P.shape not in ((4, 4), (3, 4)) or not np.isfinite(P).all():
            raise ReconError(path, f"world_mat_{i} must be a finite 3x4 or 4x4 matrix, got shape {P.shape}")
        if abs(np.linalg.det(P[:3, :3])) < 1e-12:
            raise ReconError(path, f"world_mat_{i} is singular")
        K, T = decompose_projection(P)
        Ks.append(K)
        poses.append(T)
        S = arrays.get(f"scale_mat_{i}", np.eye(4))
        if S.shape != (4, 4) or not np.isfinite(S).all():
            raise ReconError(path, f"scale_mat_{i} must be a finite 4x4 matrix")
        scale_mats.append(S)
    S0 = scale_mats[0]
    if any(not np.allclose(S, S0, rtol=1e-6, atol=1e-6) for S in scale_mats[1:]):
        raise ReconError(path, "scale_mat_i differ between frames; one normalization per scene is expected")
    T_orig_cam = np.stack(poses)
    check_poses(T_orig_cam, path)
    return np.stack(Ks), T_orig_cam, S0


def _normalization(path: Path, scale_mat: np.ndarray) -> tuple[np.ndarray, float]:
    """(T_world_orig = inv(scale_mat), scale) after checking scale_mat is a similarity."""
    A = scale_mat[:3, :3]
    det = float(np.linalg.det(A))
    if det <= 0 or abs(scale_mat[3] - [0, 0, 0, 1]).max() > 1e-9:
        raise ReconError(path, "scale_mat_0 is not a similarity (scale * rotation + translation)")
    s = det ** (1.0 / 3.0)
    if not np.allclose(A @ A.T, s * s * np.eye(3), rtol=1e-5, atol=1e-6 * s * s):
        raise ReconError(path, "scale_mat_0 is not a similarity (scale * rotation + translation)")
    return np.linalg.inv(scale_mat), 1.0 / s


def _split_lists(root: Path) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(train order, test ids) from splits_sparse_view.json when present, else RegNeRF's lists."""
    path = root / "splits_sparse_view.json"
    if not path.is_file():
        return DTU_TRAIN, DTU_TEST
    from scenes.blender import load_json

    meta = load_json(path)
    try:
        train = meta["train"]
        longest = max(train.values(), key=len) if isinstance(train, dict) else train
        order = tuple(int(i) for i in longest)
        test = tuple(int(i) for i in meta["test"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ReconError(path, f"malformed split ({type(err).__name__}: {err})") from None
    if isinstance(train, dict):
        for k, v in train.items():
            if tuple(int(i) for i in v) != order[: len(v)]:
                raise ReconError(path, f"train split {k} is not a prefix of the longest one")
    return order, test


def read_dtu(
    root: Path,
    *,
    views: int | None = None,
    downscale: float | None = None,
    resolution: int | None = None,
    test_every: int = 1,
) -> SceneData:
    """Read a DTU scene in IDR / NeuS layout. See the module docstring for conventions."""
    del test_every  # the protocol fixes the test views
    check_resample_args(root, downscale, resolution)
    cam_path = find_cameras_file(root)
    if cam_path is None:
        raise ReconError(root, "no image/ folder with cameras_sphere.npz (DTU / IDR layout)")
    Ks_full, T_orig_cam, scale_mat = read_cameras(cam_path)
    n = len(Ks_full)
    image_dir = next(root / d for d in IMAGE_DIRS if (root / d).is_dir())
    paths = list_images(image_dir)
    if len(paths) != n:
        raise ReconError(image_dir, f"has {len(paths)} images but {cam_path.name} has {n} cameras")
    full_w, full_h = uniform_size(paths)
    default = full_w / PROTOCOL_WIDTH if full_w > PROTOCOL_WIDTH else 1.0
    factor = requested_factor(full_w, downscale, resolution, default)
    resample = plan_resample(
        image_dir, full_size=(full_w, full_h), folder_factor=1, source_size=(full_w, full_h), factor=factor, resolution=resolution
    )
    w, h = resample.target_size
    Ks = scale_intrinsics(Ks_full, w / full_w, h / full_h)

    mask_loader = None
    if (root / "mask").is_dir():
        mask_paths = list_images(root / "mask")
        if len(mask_paths) != n:
            raise ReconError(root / "mask", f"has {len(mask_paths)} masks but {cam_path.name} has {n} cameras")
        mask_size = uniform_size(mask_paths)
        if mask_size != (full_w, full_h):
            raise ReconError(mask_paths[0], f"mask is {mask_size[0]}x{mask_size[1]} but images are {full_w}x{full_h}")
        mask_loader = MaskLoader(mask_paths, (full_w, full_h), (w, h))

    T_world_orig, scale = _normalization(cam_path, scale_mat)
    T_world_cam = transform_poses(T_world_orig, scale, T_orig_cam)
    dist = np.linalg.norm(T_world_cam[:, :3, 3], axis=1)  # camera distance to the sphere's centre
    near, far = max(0.05, float(dist.min()) - 1.0), float(dist.max()) + 1.0

    split_file = root / "splits_sparse_view.json"
    order, test = _split_lists(root)
    if not split_file.is_file() and n <= max(order + test):
        train, test_ids = holdout_split_for(root, n, views)  # not the 49 DTU positions: every 8th held out
    else:
        try:
            train, test_ids = dtu_split(n, views, train_order=order, test=test)
        except ValueError as err:
            raise ReconError(split_file if split_file.is_file() else root, str(err)) from None
    return SceneData(
        format="dtu",
        root=root,
        image_paths=tuple(paths),
        Ks=Ks,
        T_world_cam=T_world_cam,
        width=w,
        height=h,
        train_ids=tuple(train),
        test_ids=tuple(test_ids),
        near=near,
        far=far,
        T_world_orig=T_world_orig,
        scale=scale,
        downscale=resample.downscale,
        loader=FrameLoader(paths, resample),
        mask_loader=mask_loader,
    )


def write_dtu_cameras(path: Path, Ks: np.ndarray, T_orig_cam: np.ndarray, scale_mat: np.ndarray) -> None:
    """Write an IDR camera file: world_mat_i = K [R | t] (4x4) and scale_mat_i for each frame."""
    arrays: dict[str, Any] = {}
    for i, (K, T) in enumerate(zip(Ks, T_orig_cam)):
        P = np.eye(4)
        T_cam_orig = np.linalg.inv(T)
        P[:3, :4] = K @ T_cam_orig[:3, :4]
        arrays[f"world_mat_{i}"] = P
        arrays[f"scale_mat_{i}"] = np.asarray(scale_mat, dtype=np.float64)
    np.savez(path, **arrays)

