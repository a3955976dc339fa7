"""Rigid rotation of a splat scene, view-dependent color included.

    R_new_world = ...                                  # [3, 3] proper rotation
    splats_new = rotate_splats(splats, R_new_world)    # the same scene, seen in the new frame

Means turn (x' = R x), quaternions compose (q' = q_R * q), scales and opacities stay, and the SH
coefficients of every band l = 1..3 are mixed by that band's (2l+1) x (2l+1) rotation matrix, so
that the color seen along a direction d before equals the color seen along R d after.

The band matrices are fitted by least squares on sampled directions with the renderer's own basis
(reconstruct.raster.projection.sh_basis, gsplat's ordering and signs): each band of real SH is
closed under rotation, so Y_l(R^T x) = D_l Y_l(x) holds exactly and the fit recovers D_l to
rounding error (tests/test_upright.py measures it).
"""

from __future__ import annotations

import numpy as np

from reconstruct.splats import Splats


def quat_from_rotmat(R: np.ndarray) -> np.ndarray:
    """[3, 3] proper rotation -> [4] unit quaternion w x y z (w >= 0)."""
    from scipy.spatial.transform import Rotation

    assert R.shape == (3, 3), R.shape
    x, y, z, w = Rotation.from_matrix(np.asarray(R, np.float64)).as_quat()
    q = np.array([w, x, y, z])
    return q if w >= 0 else -q


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b of wxyz quaternions ([4] or [N, 4], broadcast)."""
    aw, ax, ay, az = np.moveaxis(np.asarray(a, np.float64), -1, 0)
    bw, bx, by, bz = np.moveaxis(np.asarray(b, np.float64), -1, 0)
    return np.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], axis=-1)


def _check_rotation(R: np.ndarray) -> np.ndarray:
    R = np.asarray(R, np.float64)
    assert R.shape == (3, 3), R.shape
    assert np.allclose(R @ R.T, np.eye(3), atol=1e-6) and np.linalg.det(R) > 0, "not a proper rotation"
    return R


def sh_band_rotations(R_new_old: np.ndarray, degree: int, *, samples: int = 64, seed: int = 0) -> list[np.ndarray]:
    """[D_1, ..., D_degree]: D_l [(2l+1), (2l+1)] with Y_l(R^T x) = D_l Y_l(x) for every unit x,
    Y_l the band-l part of the renderer's real SH basis. Coefficients rotate as f' = D_l^T f."""
    import torch

    from reconstruct.raster.projection import sh_basis

    R = _check_rotation(R_new_old)
    if degree <= 0:
        return []
    dirs = np.random.default_rng(seed).normal(size=(samples, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)  # [M, 3]
    Y0 = sh_basis(degree, torch.as_tensor(dirs)).numpy()  # [M, K]
    Y1 = sh_basis(degree, torch.as_tensor(dirs @ R)).numpy()  # rows are R^T x, [M, K]
    out = []
    for band in range(1, degree + 1):
        sl = slice(band * band, (band + 1) * (band + 1))
        Dt, *_ = np.linalg.lstsq(Y0[:, sl], Y1[:, sl], rcond=None)  # Y1 = Y0 D^T
        out.append(Dt.T)
    return out


def rotate_sh(shN: np.ndarray, R_new_old: np.ndarray) -> np.ndarray:
    """[N, K-1, 3] higher-order SH coefficients of splats turned by ``R_new_old`` (degree 0 is
    rotation invariant). The result evaluated toward R d equals the input evaluated toward d."""
    k1 = shN.shape[1]
    degree = int(round(np.sqrt(k1 + 1))) - 1
    out = np.empty(shN.shape, np.float64)
    for band, D in enumerate(sh_band_rotations(R_new_old, degree), start=1):
        sl = slice(band * band - 1, (band + 1) * (band + 1) - 1)  # shN starts at basis index 1
        out[:, sl] = np.einsum("jk,njc->nkc", D, shN[:, sl].astype(np.float64))  # f'_k = sum_j D_jk f_j
    return out.astype(np.float32)


def rotate_splats(splats: Splats, R_new_old: np.ndarray) -> Splats:
    """``splats`` (frame "old") expressed in frame "new", ``x_new = R_new_old @ x_old``."""
    R = _check_rotation(R_new_old)
    if np.allclose(R, np.eye(3), atol=1e-12):
        return splats
    q_R = quat_from_rotmat(R)
    return Splats(
        means=(splats.means.astype(np.float64) @ R.T).astype(np.float32),
        quats=quat_multiply(q_R, splats.quats).astype(np.float32),
        log_scales=splats.log_scales, opacity_logits=splats.opacity_logits, sh0=splats.sh0,
        shN=rotate_sh(splats.shN, R) if splats.shN.shape[1] else splats.shN,
    )


def rotate_poses(T_world_cam: np.ndarray, R_new_world: np.ndarray) -> np.ndarray:
    """[..., 4, 4] camera-to-world poses expressed in the turned frame: T_new_cam = R_new_world T_world_cam."""
    T = np.eye(4)
    T[:3, :3] = _check_rotation(R_new_world)
    return T @ np.asarray(T_world_cam, np.float64)
