"""DTU (IDR / NeuS layout) reader, RegNeRF split, object masks and masked metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scene_fixtures import frame_image, orbit_poses, save_png

from reconstruct.metrics import apply_mask, masked_psnr, masked_ssim, psnr, ssim
from scenes import ReconError, detect_format, load_scene
from scenes.dtu import decompose_projection, rq3, write_dtu_cameras
from scenes.geometry import transform_poses
from scenes.info import scene_summary
from scenes.splits import DTU_TEST, dtu_split


def _shared_data() -> Path:
    """../shared/data beside the checkout (a git worktree one level deeper finds it further up)."""
    root = Path(__file__).resolve().parents[1]
    for parent in root.parents:
        if (parent / "shared" / "data").is_dir():
            return parent / "shared" / "data"
    return root.parent / "shared" / "data"


DATA = _shared_data()


def _K(i: int) -> np.ndarray:
    """[3, 3] per-frame intrinsics with an off-centre principal point (for 16x12 images)."""
    return np.array([[20.0 + i, 0.0, 7.3], [0.0, 21.0 + 0.5 * i, 5.9], [0.0, 0.0, 1.0]])


def write_dtu(root: Path, *, n: int = 6, size: tuple[int, int] = (16, 12), masks: bool = True) -> dict:
    """IDR layout: image/000000.png.., mask/000.png.., cameras_sphere.npz; poses in a 'DTU world'."""
    W, H = size
    scale_mat = np.eye(4)
    scale_mat[:3, :3] *= 250.0
    scale_mat[:3, 3] = (-30.0, -10.0, 640.0)
    T_sphere_cam = orbit_poses(n, radius=3.0)
    T_orig_cam = transform_poses(scale_mat, 250.0, T_sphere_cam)  # DTU world = scale_mat @ sphere
    Ks = np.stack([_K(i) for i in range(n)])
    root.mkdir(parents=True, exist_ok=True)
    write_dtu_cameras(root / "cameras_sphere.npz", Ks, T_orig_cam, scale_mat)
    for i in range(n):
        save_png(root / "image" / f"{i:06d}.png", frame_image(i, W, H))
        if masks:
            m = np.zeros((H, W), np.uint8)
            m[H // 4 : 3 * H // 4, W // 4 : 3 * W // 4] = 255
            save_png(root / "mask" / f"{i:03d}.png", np.repeat(m[..., None], 3, axis=2))  # RGB like DTU
    return {"Ks": Ks, "T_orig_cam": T_orig_cam, "T_sphere_cam": T_sphere_cam, "scale_mat": scale_mat}


def test_rq_decomposition_recovers_k_and_rotation():
    rng = np.random.default_rng(0)
    for _ in range(20):
        K = np.array([[rng.uniform(100, 900), rng.normal(), rng.uniform(0, 400)], [0, rng.uniform(100, 900), rng.uniform(0, 300)], [0, 0, 1]])
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        from scipy.spatial.transform import Rotation

        R = Rotation.from_quat(q).as_matrix()
        Kd, Rd = rq3(K @ R)
        np.testing.assert_allclose(Kd, K, atol=1e-9 * 900)
        np.testing.assert_allclose(Rd, R, atol=1e-9)
        t = rng.normal(size=3) * 100
        for s in (1.0, -3.7):  # P is defined up to scale, sign included
            P = s * K @ np.hstack([R, t[:, None]])
            K2, T_world_cam = decompose_projection(P)
            np.testing.assert_allclose(K2, K, rtol=1e-9, atol=1e-8)
            np.testing.assert_allclose(T_world_cam[:3, :3], R.T, atol=1e-9)
            np.testing.assert_allclose(T_world_cam[:3, 3], -R.T @ t, atol=1e-7)


def test_synthetic_dtu_round_trips_k_pose_and_normalization(tmp_path):
    gt = write_dtu(tmp_path, n=6)
    (tmp_path / "poses_bounds.npy").write_bytes(b"")  # DTU copies often carry one: DTU must still win
    assert detect_format(tmp_path) == "dtu"
    scene = load_scene(tmp_path)
    assert scene.format == "dtu" and scene.n_frames == 6 and (scene.width, scene.height) == (16, 12)
    assert scene.test_ids == (0,) and scene.train_ids == (1, 2, 3, 4, 5)  # not 49 frames: every 8th held out
    np.testing.assert_allclose(scene.Ks, gt["Ks"], atol=1e-9)
    # normalized world = unit-sphere frame of scale_mat
    np.testing.assert_allclose(scene.T_world_cam, gt["T_sphere_cam"], atol=1e-9)
    assert scene.scale == pytest.approx(1 / 250.0)
    np.testing.assert_allclose(transform_poses(np.linalg.inv(scene.T_world_orig), 1 / scene.scale, scene.T_world_cam), gt["T_orig_cam"], atol=1e-6)
    # reprojection through the read cameras equals reprojection through the written world_mat
    P0 = np.load(tmp_path / "cameras_sphere.npz")["world_mat_2"]
    x_orig = np.array([-20.0, 5.0, 660.0, 1.0])
    uv_file = P0[:3] @ x_orig
    x_world = scene.T_world_orig @ x_orig
    uv_read = scene.Ks[2] @ (np.linalg.inv(scene.T_world_cam[2]) @ x_world)[:3]
    np.testing.assert_allclose(uv_read[:2] / uv_read[2], uv_file[:2] / uv_file[2], atol=1e-6)
    assert 0 < scene.near < 3.0 < scene.far  # cameras about 3 from the sphere centre
    assert scene.background == (0.0, 0.0, 0.0)
    np.testing.assert_allclose(scene.image(3), frame_image(3, 16, 12).astype(np.float32) / 255, atol=1e-6)
    m = scene.mask(3)
    assert m.dtype == np.bool_ and m.shape == (12, 16) and m.sum() == 6 * 8 and m[6, 8] and not m[0, 0]
    assert scene.mask(3) is m  # cached
    assert scene_summary(scene)["has_masks"] is True


def test_downscale_scales_k_and_masks(tmp_path):
    gt = write_dtu(tmp_path, n=4, size=(16, 12))
    scene = load_scene(tmp_path, downscale=2)
    assert (scene.width, scene.height) == (8, 6)
    np.testing.assert_allclose(scene.Ks[1][:2], gt["Ks"][1][:2] / 2, atol=1e-9)
    m = scene.mask(1)
    assert m.shape == (6, 8) and m.sum() == 4 * 4  # rows 3-8 / cols 4-11 at full size: coverage >= 0.5 on rows 1-4, cols 2-5


def test_without_masks_and_bad_inputs(tmp_path):
    write_dtu(tmp_path, n=4, masks=False)
    scene = load_scene(tmp_path)
    assert not scene.has_masks and "has_masks" not in scene_summary(scene)
    with pytest.raises(ValueError, match="no object masks"):
        scene.mask(0)
    (tmp_path / "image" / "000003.png").unlink()
    with pytest.raises(ReconError, match="has 3 images but cameras_sphere.npz has 4 cameras"):
        load_scene(tmp_path)
    bad = tmp_path / "bad"
    write_dtu(bad, n=3)
    arrays = dict(np.load(bad / "cameras_sphere.npz"))
    arrays["world_mat_1"] = np.zeros((4, 4))
    np.savez(bad / "cameras_sphere.npz", **arrays)
    with pytest.raises(ReconError, match="world_mat_1 is singular") as err:
        load_scene(bad)
    assert "cameras_sphere.npz" in str(err.value) and "\n" not in str(err.value)


def test_regnerf_split():
    train, test = dtu_split(49, 3)
    assert train == [25, 22, 28] and test == list(DTU_TEST) and len(test) == 25
    assert dtu_split(49, 6)[0] == [25, 22, 28, 40, 44, 48]
    assert dtu_split(49, 9)[0] == [25, 22, 28, 40, 44, 48, 0, 8, 13]
    everything, _ = dtu_split(49, None)
    assert len(everything) == 24 and not set(everything) & set(test)
    with pytest.raises(ValueError, match="orders 9 training views"):
        dtu_split(49, 10)
    with pytest.raises(ValueError, match="has 20 frames"):
        dtu_split(20, 3)


def test_split_file_beside_the_scene_is_used(tmp_path):
    write_dtu(tmp_path, n=8)
    (tmp_path / "splits_sparse_view.json").write_text(json.dumps({"train": {"2": [5, 1], "3": [5, 1, 6]}, "test": [0, 7]}))
    scene = load_scene(tmp_path, views=2)
    assert scene.train_ids == (5, 1) and scene.test_ids == (0, 7)
    with pytest.raises(ReconError, match="more"):
        load_scene(tmp_path, views=4)


def test_masked_metrics_ignore_the_background_only():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(40, 50, 3, generator=g)
    mask = torch.zeros(40, 50, dtype=torch.bool)
    mask[10:30, 12:40] = True
    img = ref.clone()
    img[~mask] = torch.rand(int((~mask).sum()), 3, generator=g)  # wrong background only
    assert math.isinf(masked_psnr(img, ref, mask)) and masked_ssim(img, ref, mask) == pytest.approx(1.0)
    assert psnr(img, ref) < 15 and ssim(img, ref) < 0.9
    img2 = 0.9 * ref + 0.05 * mask[..., None]  # stays in [0, 1]
    ref = 0.9 * ref + 0.1 * mask[..., None]  # error on the object: MSE over the whole image with zero background error
    mse = (0.05**2) * mask.float().mean().item()  # img2 - ref = -0.05 on the object, 0 elsewhere
    assert masked_psnr(img2, ref, mask) == pytest.approx(-10 * math.log10(mse), abs=1e-4)
    black = apply_mask(ref, mask)
    assert (black[~mask] == 0).all() and torch.equal(black[mask], ref[mask])
    white = apply_mask(ref, mask, (1.0, 1.0, 1.0))
    assert (white[~mask] == 1).all()
    assert masked_ssim(img2, ref, mask) == pytest.approx(ssim(apply_mask(img2, mask), apply_mask(ref, mask)))


# ----------------------------------------------------------------------------- real scan24


def _scan24() -> Path:
    d = DATA / "dtu_scan24"
    if not d.is_dir():
        pytest.skip(f"real data not present: {d} (needs /work/shared/data)")
    return d


def test_scan24_split_cameras_and_masks_agree():
    scene = load_scene(_scan24(), views=3)
    assert detect_format(_scan24()) == "dtu" and scene.format == "dtu"
    assert scene.train_ids == (25, 22, 28) and scene.test_ids == tuple(DTU_TEST)
    assert scene.n_frames == 49 and (scene.width, scene.height) == (400, 300) and scene.has_masks
    rng = np.random.default_rng(0)
    P = rng.uniform(-1, 1, (20000, 3))
    P = P[np.linalg.norm(P, axis=1) < 1]  # points in the unit sphere around the object
    hull = np.ones(len(P), dtype=bool)
    for i in range(scene.n_frames):
        m = scene.mask(i)
        ys, xs = np.nonzero(m)
        T_cam_world = np.linalg.inv(scene.T_world_cam[i])
        uvw = scene.Ks[i] @ T_cam_world[:3, 3]  # the sphere's centre
        u, v = uvw[:2] / uvw[2]
        assert uvw[2] > 0 and m[int(v), int(u)], i  # projects onto the object
        assert math.hypot(u - xs.mean(), v - ys.mean()) < 0.15 * scene.width, i  # near the mask's centre
        assert abs(u - scene.width / 2) < 0.25 * scene.width and abs(v - scene.height / 2) < 0.25 * scene.height
        q = (P @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]) @ scene.Ks[i].T
        uv = q[:, :2] / q[:, 2:]
        ok = (q[:, 2] > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < 400) & (uv[:, 1] >= 0) & (uv[:, 1] < 300)
        hull &= ok & m[np.clip(uv[:, 1].astype(int), 0, 299), np.clip(uv[:, 0].astype(int), 0, 399)]
    # the 49 silhouettes carve one common object (wrong cameras carve it to nothing)
    assert hull.mean() > 0.05
    img = scene.image(25)
    assert img.shape == (300, 400, 3) and 0.1 < img.mean() < 0.9
