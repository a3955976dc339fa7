"""Camera-frame conversions and the similarity that normalizes a scene's world frame.

Conventions: ``T_a_b`` maps coordinates in frame b to frame a (so ``T_world_cam`` is
camera-to-world). OpenCV cameras look down +z with +x right and +y down; OpenGL / Blender /
nerfstudio cameras look down -z with +y up. A normalization is a similarity
``x_world = scale * R @ x_orig + t`` stored as one [4, 4] matrix ``T_world_orig``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scenes.errors import ReconError


def opengl_to_opencv(T_world_camgl: np.ndarray) -> np.ndarray:
    """[F, 4, 4] OpenGL camera-to-world -> [F, 4, 4] OpenCV camera-to-world (negate y and z columns)."""
    T = np.array(T_world_camgl, dtype=np.float64, copy=True)
    assert T.ndim == 3 and T.shape[1:] == (4, 4), T.shape
    T[:, :3, 1:3] *= -1.0
    return T


def similarity(scale: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """[4, 4] matrix of ``x -> scale * R @ x + t`` (R [3, 3] rotation, t [3])."""
    T = np.eye(4)
    T[:3, :3] = scale * np.asarray(R, dtype=np.float64)
    T[:3, 3] = np.asarray(t, dtype=np.float64)
    return T


def transform_poses(T_world_orig: np.ndarray, scale: float, T_orig_cam: np.ndarray) -> np.ndarray:
    """Map camera-to-world poses [F, 4, 4] through a similarity; rotations stay orthonormal.

    The camera center moves like a point; the camera axes only rotate (the similarity's
    scale is divided out of the rotation block).
    """
    T = np.einsum("ij,fjk->fik", T_world_orig, T_orig_cam)
    T[:, :3, :3] /= scale
    T[:, 3, :] = (0.0, 0.0, 0.0, 1.0)
    return T


def transform_points(T_world_orig: np.ndarray, points: np.ndarray) -> np.ndarray:
    """[P, 3] points through a [4, 4] similarity."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    return points @ T_world_orig[:3, :3].T + T_world_orig[:3, 3]


def center_and_scale(T_orig_cam: np.ndarray) -> tuple[np.ndarray, float]:
    """Normalization for formats without one of their own (COLMAP, nerfstudio).

    Centers the world on the mean camera center and scales it so the farthest camera sits on
    the unit sphere; no rotation. Returns (T_world_orig [4, 4], scale).
    """
    centers = T_orig_cam[:, :3, 3]  # [F, 3]
    center = centers.mean(axis=0)
    radius = float(np.linalg.norm(centers - center, axis=1).max()) if len(centers) else 0.0
    scale = 1.0 / radius if radius > 1e-9 else 1.0
    return similarity(scale, np.eye(3), -scale * center), scale


def check_poses(T_world_cam: np.ndarray, path: Path, *, names: list[str] | None = None) -> None:
    """Raise ReconError naming ``path`` (and the frame) when a pose has non-finite values."""
    bad = ~np.isfinite(T_world_cam.reshape(len(T_world_cam), -1)).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        which = names[i] if names is not None else f"frame {i}"
        raise ReconError(path, f"pose of {which} has non-finite values")


def average_pose_opengl(T_world_cam: np.ndarray) -> np.ndarray:
    """[4, 4] "average" camera in OpenGL axes (x right, y up, z back), as NeRF's LLFF loader.

    Input poses are OpenCV camera-to-world [F, 4, 4]. Center = mean camera center; back axis =
    normalized sum of back axes (-z of OpenCV); up = sum of up axes (-y of OpenCV) made
    orthogonal to it.
    """
    center = T_world_cam[:, :3, 3].mean(axis=0)
    back = -T_world_cam[:, :3, 2].sum(axis=0)
    back /= np.linalg.norm(back)
    up = -T_world_cam[:, :3, 1].sum(axis=0)
    right = np.cross(up, back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = right, up, back, center
    return T


def scale_intrinsics(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """[..., 3, 3] intrinsics for an image resized by (sx, sy) (pixel-edge convention, cx = W/2 at center)."""
    K = np.array(K, dtype=np.float64, copy=True)
    K[..., 0, :] *= sx
    K[..., 1, :] *= sy
    return K


def look_at(eye, target, *, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """[4, 4] OpenCV camera-to-world (x right, y down, z forward) at ``eye`` looking at ``target``;
    ``up`` is the world direction that appears up in the image."""
    eye = np.asarray(eye, np.float64)
    z = np.asarray(target, np.float64) - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, np.float64))
    x /= np.linalg.norm(x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, np.cross(z, x), z, eye
    return T


def umeyama(src: np.ndarray, dst: np.ndarray, *, with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity ``dst ~ scale * R @ src + t`` between [N, 3] point sets (Umeyama 1991).

    Returns (scale, R [3, 3] rotation, t [3]); scale is 1 when ``with_scale`` is False. Needs at
    least 3 points not on one line for a unique rotation.
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 3)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 3)
    assert len(src) == len(dst) and len(src) >= 2, (src.shape, dst.shape)
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)  # [3, 3]
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1.0
    R = U @ D @ Vt
    var_s = float((xs**2).sum() / len(src))
    scale = float(np.trace(np.diag(S) @ D) / var_s) if with_scale and var_s > 0 else 1.0
    t = mu_d - scale * R @ mu_s
    return scale, R, t
