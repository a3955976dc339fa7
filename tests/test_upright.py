"""Gravity up from camera rigs (reconstruct.upright) and rigid rotation of splats with their SH
(reconstruct.rotation): synthetic rigs with known up, noise and outliers; SH rotation measured on
the renderer's own basis and through a render."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reconstruct.rotation import quat_from_rotmat, rotate_poses, rotate_sh, rotate_splats, sh_band_rotations
from reconstruct.upright import PLY_UP, UpConfig, align_up, angle_deg, estimate_up
from scenes.geometry import look_at


def random_rotation(seed: int) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.random(random_state=seed).as_matrix()


def roll(T: np.ndarray, degrees: float) -> np.ndarray:
    """The camera turned about its own optical axis."""
    a = math.radians(degrees)
    Rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1.0]])
    out = T.copy()
    out[:3, :3] = T[:3, :3] @ Rz
    return out


def hemisphere_rig(n: int, *, R_world_rig: np.ndarray, elevation_deg: float = 35.0, arc_deg: float = 200.0,
                   seed: int = 0) -> np.ndarray:
    """[n, 4, 4] cameras on an ``arc_deg`` arc around the origin looking at it from above
    (up = R_world_rig @ +z)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        az = math.radians(arc_deg) * i / n + rng.uniform(-0.2, 0.2)
        el = math.radians(elevation_deg + rng.uniform(-15, 15))
        eye = 4.0 * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        T = look_at(eye, [0.0, 0.0, 0.3], up=(0.0, 0.0, 1.0))
        W = np.eye(4)
        W[:3, :3] = R_world_rig
        out.append(W @ T)
    return np.array(out)


def forward_rig(n: int, *, R_world_rig: np.ndarray, roll_deg: float = 0.0, seed: int = 0) -> np.ndarray:
    """[n, 4, 4] LLFF-like cameras on a small plane, all facing +y of the rig (up = rig +z),
    each with a few degrees of yaw and pitch and ``roll_deg`` of random roll."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        eye = np.array([rng.uniform(-0.5, 0.5), 0.0, rng.uniform(-0.3, 0.3)])
        target = np.array([rng.uniform(-0.3, 0.3), 5.0, rng.uniform(-0.5, 0.2)])
        T = roll(look_at(eye, target, up=(0.0, 0.0, 1.0)), rng.normal(0.0, roll_deg) if roll_deg else 0.0)
        W = np.eye(4)
        W[:3, :3] = R_world_rig
        out.append(W @ T)
    return np.array(out)


def test_hemisphere_rig_up_is_exact_where_the_mean_camera_up_is_not() -> None:
    R = random_rotation(1)
    true_up = R @ [0.0, 0.0, 1.0]
    T = hemisphere_rig(8, R_world_rig=R)
    est = estimate_up(T, config=UpConfig(snap_deg=0.0))
    assert angle_deg(est.up_world, true_up) < 1e-6
    mean_up = (-T[:, :3, 1]).mean(axis=0)
    assert angle_deg(mean_up, true_up) > 15.0  # cameras looking down: their mean up leans inwards
    assert not est.snapped and est.n_outliers == 0


def test_forward_facing_rig_up_is_the_cameras_common_up() -> None:
    R = random_rotation(2)
    true_up = R @ [0.0, 0.0, 1.0]
    for seed in range(5):
        T = forward_rig(3, R_world_rig=R, roll_deg=1.0, seed=seed)
        est = estimate_up(T, config=UpConfig(snap_deg=0.0))
        assert angle_deg(est.up_world, true_up) < 4.0, seed  # the pitch of 3 views is all there is


def test_noisy_rig_with_rolled_outliers() -> None:
    R = random_rotation(3)
    true_up = R @ [0.0, 0.0, 1.0]
    T = hemisphere_rig(12, R_world_rig=R, seed=4)
    rng = np.random.default_rng(5)
    T = np.array([roll(t, rng.normal(0.0, 2.0)) for t in T])  # a hand's roll
    T[3] = roll(T[3], 90.0)  # a portrait shot
    T[7] = roll(T[7], -60.0)
    T[9] = roll(T[9], 180.0)  # upside down: right reversed, same horizon
    est = estimate_up(T, config=UpConfig(snap_deg=0.0))
    assert angle_deg(est.up_world, true_up) < 2.0
    assert est.n_outliers >= 2
    plain = np.linalg.eigh((T[:, :3, 0]).T @ T[:, :3, 0])[1][:, 0]  # unweighted horizon fit
    assert min(angle_deg(plain, true_up), angle_deg(-plain, true_up)) > angle_deg(est.up_world, true_up)


def test_snap_to_a_dataset_axis_within_its_tolerance() -> None:
    for tilt, snapped in ((3.0, True), (8.0, False)):
        a = math.radians(tilt)
        R = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
        est = estimate_up(hemisphere_rig(8, R_world_rig=R))
        assert est.snapped is snapped
        assert angle_deg(est.up_world, [0, 0, 1]) == pytest.approx(0.0 if snapped else tilt, abs=1e-6)
    # the candidates are the dataset's axes, both signs: a rig upside down in the world snaps to -y
    R = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # rig +z -> world -y
    est = estimate_up(hemisphere_rig(6, R_world_rig=R))
    assert est.snapped and np.allclose(est.up_world, [0, -1, 0])


def test_align_up_is_a_proper_rotation_onto_the_target() -> None:
    for up in ([0, 0, 1.0], [0.3, -0.2, 0.9], [0, -1.0, 0], [0, 1.0, 0], [1.0, 0, 0]):
        R = align_up(np.array(up))
        assert np.allclose(R @ R.T, np.eye(3), atol=1e-12) and np.linalg.det(R) == pytest.approx(1.0)
        assert np.allclose(R @ (np.array(up) / np.linalg.norm(up)), PLY_UP, atol=1e-12)
    assert np.allclose(align_up(np.array([0, 0, 1.0])), [[1, 0, 0], [0, 0, -1], [0, 1, 0]])  # Blender -> .ply: x kept


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rotated_sh_at_rotated_directions_equals_the_original(seed) -> None:
    from reconstruct.raster.projection import sh_basis

    R = random_rotation(10 + seed)
    rng = np.random.default_rng(seed)
    shN = rng.normal(size=(5, 15, 3)).astype(np.float32)
    sh0 = rng.normal(size=(5, 1, 3))
    dirs = rng.normal(size=(200, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)

    def color(coeffs, d):
        return np.einsum("mk,nkc->nmc", sh_basis(3, torch.as_tensor(d)).numpy(), coeffs)

    before = color(np.concatenate([sh0, shN], 1), dirs)
    after = color(np.concatenate([sh0, rotate_sh(shN, R)], 1), dirs @ R.T)
    assert np.abs(after - before).max() < 1e-5
    for D in sh_band_rotations(R, 3):  # each band's matrix is orthogonal (real SH are orthonormal)
        assert np.allclose(D @ D.T, np.eye(len(D)), atol=1e-9)
    # a wrong rotation is caught: SH left unrotated differ by the size of the coefficients
    assert np.abs(color(np.concatenate([sh0, shN], 1), dirs @ R.T) - before).max() > 0.5


def test_rotate_splats_renders_the_same_from_the_turned_camera() -> None:
    from pathlib import Path

    from scipy.spatial.transform import Rotation

    from pruning.formats._testing import tiny_splats
    from reconstruct.evaluate import render_splats
    from reconstruct.splats import Splats
    from scenes.types import SceneData

    s = tiny_splats(200, sh_degree=3)
    R = random_rotation(20)
    turned = rotate_splats(s, R)

    def covariances(splats):
        M = Rotation.from_quat(splats.quats[:, [1, 2, 3, 0]]).as_matrix() * np.exp(splats.log_scales)[:, None, :]
        return M @ M.transpose(0, 2, 1)

    assert np.allclose(covariances(turned), R @ covariances(s) @ R.T, atol=1e-5)  # R Sigma R^T
    assert np.allclose(turned.means, s.means @ R.T, atol=1e-5)
    assert quat_from_rotmat(R)[0] >= 0
    T = look_at(s.means.mean(0) + [0.5, -2.5, -3.0], s.means.mean(0), up=(0, -1, 0))[None]
    K = np.array([[[60.0, 0, 32], [0, 60.0, 32], [0, 0, 1]]])

    def render(splats, T_world_cam):
        scene = SceneData(format="synthetic", root=Path("."), image_paths=(Path(""),), Ks=K, T_world_cam=T_world_cam,
                          width=64, height=64, train_ids=(0,), test_ids=(), near=0.1, far=50.0)
        return render_splats(splats, scene, 0)[0].numpy()

    a, b = render(s, T), render(turned, rotate_poses(T, R))
    assert a.std() > 0.02 and np.abs(a - b).max() < 2e-3
    unrotated_sh = Splats(turned.means, turned.quats, s.log_scales, s.opacity_logits, s.sh0, s.shN)
    assert np.abs(render(unrotated_sh, rotate_poses(T, R)) - a).max() > 0.02
