"""Scene readers on tiny scenes written by the tests (Blender, LLFF, COLMAP .txt/.bin, nerfstudio)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scene_fixtures import frame_image, write_blender, write_colmap, write_llff, write_nerfstudio

from scenes import detect_format, load_scene
from scenes.geometry import transform_points, transform_poses


def _assert_similarity_maps(scene, T_orig_cam: np.ndarray) -> None:
    """T_world_orig applied to the original poses gives the stored poses; centers and rotations recover."""
    A = scene.T_world_orig
    s = scene.scale
    np.testing.assert_allclose(A[:3, :3] @ A[:3, :3].T, s * s * np.eye(3), atol=1e-9)  # a similarity with scale s
    np.testing.assert_allclose(transform_poses(A, s, T_orig_cam), scene.T_world_cam, atol=1e-9)
    centers = transform_points(A, T_orig_cam[:, :3, 3])
    np.testing.assert_allclose(scene.T_world_cam[:, :3, 3], centers, atol=1e-9)
    R = A[:3, :3] / s
    np.testing.assert_allclose(scene.T_world_cam[:, :3, :3], R @ T_orig_cam[:, :3, :3], atol=1e-9)
    # back to the dataset frame exactly
    A_inv = np.linalg.inv(A)
    np.testing.assert_allclose(transform_poses(A_inv, 1.0 / s, scene.T_world_cam), T_orig_cam, atol=1e-9)
    for T in scene.T_world_cam:  # rotations stay orthonormal, right handed
        np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-9)
        assert np.linalg.det(T[:3, :3]) == pytest.approx(1.0)


# ----------------------------------------------------------------------------------- Blender


def test_blender_reads_poses_intrinsics_and_composites_on_white(tmp_path):
    gt = write_blender(tmp_path, n_train=5, n_test=3, size=8, angle_x=0.8)
    assert detect_format(tmp_path) == "blender"
    assert detect_format(tmp_path / "transforms_test.json") == "blender"
    assert load_scene(tmp_path / "transforms_train.json").root == tmp_path
    scene = load_scene(tmp_path)
    assert scene.format == "blender" and scene.n_frames == 8
    assert (scene.width, scene.height) == (8, 8)
    assert scene.train_ids == (0, 1, 2, 3, 4) and scene.test_ids == (5, 6, 7)
    assert scene.background == (1.0, 1.0, 1.0) and (scene.near, scene.far) == (2.0, 6.0)
    np.testing.assert_allclose(scene.T_world_cam, gt["poses"], atol=1e-6)
    np.testing.assert_allclose(scene.T_world_orig, np.eye(4))
    f = 0.5 * 8 / math.tan(0.4)
    np.testing.assert_allclose(scene.Ks[3], [[f, 0, 4], [0, f, 4], [0, 0, 1]])
    assert not scene.has_points
    img = scene.image(6)  # test frame 1 of the test file = global frame 6
    raw = frame_image(6, 8, 8, alpha=True).astype(np.float32) / 255
    expect = raw[..., :3] * raw[..., 3:] + (1 - raw[..., 3:])
    np.testing.assert_allclose(img, expect, atol=1e-6)
    assert img.dtype == np.float32 and img.shape == (8, 8, 3)
    assert scene.image(6) is img  # cached


def test_blender_standard_8_view_split_and_test_every(tmp_path):
    write_blender(tmp_path, n_train=100, n_test=16, size=4)
    scene = load_scene(tmp_path, views=8, test_every=8)
    assert scene.train_ids == (26, 86, 2, 55, 75, 93, 16, 73)
    assert scene.test_ids == (100, 108)
    scene = load_scene(tmp_path, views=4)
    assert scene.train_ids == (0, 33, 66, 99)
    assert len(load_scene(tmp_path).test_ids) == 16


def test_blender_downscale_and_resolution_scale_intrinsics(tmp_path):
    write_blender(tmp_path, n_train=3, n_test=1, size=8)
    full = load_scene(tmp_path)
    half = load_scene(tmp_path, downscale=2)
    assert (half.width, half.height) == (4, 4) and half.downscale == 2
    np.testing.assert_allclose(half.Ks, full.Ks * np.array([0.5, 0.5, 1.0])[None, :, None])
    # box filter: a 2x downscale is the mean of each 2x2 block
    np.testing.assert_allclose(half.image(1), full.image(1).reshape(4, 2, 4, 2, 3).mean(axis=(1, 3)), atol=1e-5)
    res = load_scene(tmp_path, resolution=2)
    assert (res.width, res.height) == (2, 2)
    np.testing.assert_allclose(res.Ks[0, 0, 0], full.Ks[0, 0, 0] / 4)
    assert res.image(0).shape == (2, 2, 3)


# -------------------------------------------------------------------------------------- LLFF


def _nerf_llff_reference(gt: dict) -> tuple[np.ndarray, np.ndarray]:
    """NeRF's LLFF loader written out independently in OpenGL axes: returns (poses [F, 3, 4], bounds)."""
    P = gt["poses"]
    gl = np.stack([P[:, :3, 0], -P[:, :3, 1], -P[:, :3, 2], P[:, :3, 3]], axis=2)  # [F, 3, 4] right, up, back, center
    sc = 1.0 / (gt["bounds"].min() * 0.75)
    gl[:, :, 3] *= sc
    center = gl[:, :, 3].mean(0)
    z = gl[:, :, 2].sum(0)
    z /= np.linalg.norm(z)
    x = np.cross(gl[:, :, 1].sum(0), z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([x, y, z], 1)
    c2w[:3, 3] = center
    full = np.concatenate([gl, np.tile([[[0, 0, 0, 1.0]]], (len(gl), 1, 1))], 1)
    out = np.linalg.inv(c2w)[None] @ full
    return out[:, :3, :4], gt["bounds"] * sc


def test_llff_normalization_matches_nerf_loader_and_round_trips(tmp_path):
    gt = write_llff(tmp_path, n=10, full_size=(32, 24), factors=(4,))
    assert detect_format(tmp_path) == "llff"
    scene = load_scene(tmp_path)
    assert scene.format == "llff" and scene.n_frames == 10
    assert (scene.width, scene.height) == (8, 6) and scene.downscale == 4  # the only folder, used as is
    _assert_similarity_maps(scene, gt["poses"])
    ref, ref_bounds = _nerf_llff_reference(gt)
    ours_gl = scene.T_world_cam[:, :3, :4].copy()
    ours_gl[:, :, 1:3] *= -1  # OpenCV -> OpenGL columns
    np.testing.assert_allclose(ours_gl, ref, atol=1e-9)
    assert scene.near == pytest.approx(1 / 0.75) and scene.near == pytest.approx(ref_bounds.min())
    assert scene.far == pytest.approx(ref_bounds.max())
    np.testing.assert_allclose(scene.Ks[0], [[30 / 4, 0, 4], [0, 30 / 4, 3], [0, 0, 1]])
    assert scene.test_ids == (0, 8) and scene.train_ids == (1, 2, 3, 4, 5, 6, 7, 9)
    assert scene.image(3)[0, 0, 0] == pytest.approx(32 / 255)  # frame 3 (sorted by name) has red 8 * 4


def test_llff_picks_folder_for_downscale(tmp_path):
    write_llff(tmp_path, n=4, full_size=(32, 24), factors=(1, 4))
    assert load_scene(tmp_path).width == 32  # finest folder by default
    s4 = load_scene(tmp_path, downscale=4)
    assert s4.image_paths[0].parent.name == "images_4" and (s4.width, s4.height) == (8, 6)
    s8 = load_scene(tmp_path, downscale=8)  # images_4 box-filtered by 2
    assert s8.image_paths[0].parent.name == "images_4" and (s8.width, s8.height) == (4, 3)
    np.testing.assert_allclose(s8.image(1), s4.image(1).reshape(3, 2, 4, 2, 3).mean(axis=(1, 3)), atol=1e-5)
    np.testing.assert_allclose(s8.Ks[0, :2], s4.Ks[0, :2] / 2)
    s2 = load_scene(tmp_path, downscale=2)  # only images/ is fine enough
    assert s2.image_paths[0].parent.name == "images" and s2.width == 16
    r = load_scene(tmp_path, resolution=16)
    assert (r.width, r.height) == (16, 12) and r.image(0).shape == (12, 16, 3)


def test_llff_sparse_points_follow_the_normalization(tmp_path):
    gt = write_llff(tmp_path, n=5, factors=(4,), points=True)
    scene = load_scene(tmp_path)
    assert scene.has_points and len(scene.points) == 50
    np.testing.assert_allclose(scene.points, transform_points(scene.T_world_orig, gt["points"]), atol=1e-9)
    assert scene.point_colors.dtype == np.uint8


# ------------------------------------------------------------------------------------ COLMAP


@pytest.mark.parametrize("binary", [False, True])
def test_colmap_txt_and_bin(tmp_path, binary):
    gt = write_colmap(tmp_path, n=10, binary=binary)
    assert (tmp_path / "sparse/0" / ("images.bin" if binary else "images.txt")).is_file()
    assert detect_format(tmp_path) == "colmap"
    scene = load_scene(tmp_path, views=3)
    assert scene.format == "colmap" and scene.n_frames == 10 and (scene.width, scene.height) == (16, 12)
    assert [p.name for p in scene.image_paths] == [f"frame_{i:03d}.png" for i in range(10)]
    _assert_similarity_maps(scene, gt["poses"])
    centers = scene.T_world_cam[:, :3, 3]
    np.testing.assert_allclose(centers.mean(0), 0, atol=1e-9)
    assert np.linalg.norm(centers, axis=1).max() == pytest.approx(1.0)
    np.testing.assert_allclose(scene.Ks[0], [[14, 0, 8], [0, 15, 6], [0, 0, 1]])
    assert scene.distortion is None and scene.camera_model == "pinhole"
    assert len(scene.points) == 40  # pycolmap may reorder points: compare as sorted sets with their colors
    got = np.concatenate([scene.points, scene.point_colors], 1)
    want = np.concatenate([transform_points(scene.T_world_orig, gt["points"]), gt["colors"]], 1)
    np.testing.assert_allclose(got[np.lexsort(got.T[::-1])], want[np.lexsort(want.T[::-1])], atol=1e-9)
    assert 0 < scene.near < scene.far
    assert scene.image(4)[0, 0, 0] == pytest.approx(40 / 255)
    assert scene.train_ids == (1, 5, 9) and scene.test_ids == (0, 8)


def test_colmap_downscaled_folder_and_simple_radial(tmp_path):
    write_colmap(tmp_path, n=4, size=(16, 12), model="SIMPLE_RADIAL", params=(14.0, 8.0, 6.0, 0.0), factors=(1, 2))
    scene = load_scene(tmp_path, downscale=2)
    assert scene.image_paths[0].parent.name == "images_2" and (scene.width, scene.height) == (8, 6)
    np.testing.assert_allclose(scene.Ks[0], [[7, 0, 4], [0, 7, 3], [0, 0, 1]])
    assert scene.distortion is None  # k = 0: nothing to undistort


@pytest.mark.parametrize("downscale", [1, 2])
def test_colmap_opencv_distortion_is_undistorted_like_pycolmap(tmp_path, downscale):
    import pycolmap

    params = (40.0, 42.0, 32.0, 24.0, -0.15, 0.03, 0.002, -0.003)
    write_colmap(tmp_path, n=2, size=(64, 48), model="OPENCV", params=params, n_points=0)
    cam = pycolmap.Camera.create_from_model_name(1, "OPENCV", 40.0, 64, 48)
    cam.params = list(params)
    # Distorted image of a smooth pattern f(x, y) on the ideal image plane, using COLMAP's own undistortion.
    u, v = np.meshgrid(np.arange(64) + 0.5, np.arange(48) + 0.5)
    xy = cam.cam_from_img(np.stack([u.ravel(), v.ravel()], 1)).reshape(48, 64, 2)

    def pattern(x, y):
        return 0.5 + 0.4 * np.sin(2.5 * x) * np.cos(2.0 * y)

    distorted = pattern(xy[..., 0], xy[..., 1])
    from PIL import Image

    for i in range(2):
        Image.fromarray(np.repeat((distorted * 255).round().astype(np.uint8)[..., None], 3, 2)).save(tmp_path / "images" / f"frame_{i:03d}.png")
    scene = load_scene(tmp_path, downscale=downscale)
    assert scene.camera_model == "opencv" and scene.width == 64 // downscale
    np.testing.assert_allclose(scene.distortion[0], [-0.15, 0.03, 0.002, -0.003, 0, 0])
    d = downscale
    us, vs = u[::d, ::d] + (d - 1) / 2, v[::d, ::d] + (d - 1) / 2  # served pixel centers in source pixels
    ideal = pattern((us - 32) / 40, (vs - 24) / 42)
    out = scene.image(0)[..., 0]
    inner = np.s_[4 // d : -4 // d, 4 // d : -4 // d]
    err_ours = np.abs(out[inner] - ideal[inner]).max()
    err_raw = np.abs(distorted[::d, ::d][inner] - ideal[inner]).max()
    assert err_ours < 0.01 and err_raw > 5 * err_ours, (err_ours, err_raw)


def test_colmap_distortion_model_matches_pycolmap_projection():
    import pycolmap

    from scenes.distortion import distort

    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.uniform(-0.6, 0.6, size=(50, 2)), np.ones((50, 1))], 1)
    cases = [
        ("OPENCV", [20.0, 21.0, 16.0, 12.0, -0.15, 0.03, 0.002, -0.003], [-0.15, 0.03, 0.002, -0.003, 0, 0], "opencv"),
        ("RADIAL", [20.0, 16.0, 12.0, 0.1, -0.02], [0.1, -0.02, 0, 0, 0, 0], "opencv"),
        ("OPENCV_FISHEYE", [20.0, 21.0, 16.0, 12.0, 0.05, -0.01, 0.003, -0.001], [0.05, -0.01, 0, 0, 0.003, -0.001], "opencv_fisheye"),
    ]
    for name, params, coeffs, model in cases:
        cam = pycolmap.Camera.create_from_model_name(1, name, 20.0, 32, 24)
        cam.params = params
        want = cam.img_from_cam(pts)
        xd, yd = distort(pts[:, 0], pts[:, 1], np.array(coeffs), model)
        fx = params[0]
        fy, cx, cy = (params[1], params[2], params[3]) if len(params) == 8 else (params[0], params[1], params[2])
        np.testing.assert_allclose(np.stack([fx * xd + cx, fy * yd + cy], 1), want, atol=1e-9, err_msg=name)


# -------------------------------------------------------------------------------- nerfstudio


def test_nerfstudio_global_intrinsics_sorted_frames(tmp_path):
    gt = write_nerfstudio(tmp_path, n=9, camera_model="OPENCV")
    assert detect_format(tmp_path) == "nerfstudio"
    scene = load_scene(tmp_path, views=2)
    assert scene.format == "nerfstudio" and scene.n_frames == 9
    assert [p.name for p in scene.image_paths] == [f"frame_{i:05d}.png" for i in range(9)]
    _assert_similarity_maps(scene, gt["poses"])
    np.testing.assert_allclose(scene.Ks[0], [[13, 0, 7.5], [0, 14, 6.5], [0, 0, 1]])
    assert scene.distortion is None and not scene.has_points
    assert scene.test_ids == (0, 8) and scene.train_ids == (1, 7)
    assert scene.image(2)[0, 0, 0] == pytest.approx(24 / 255)
    assert detect_format(tmp_path / "transforms.json") == "nerfstudio"
    assert load_scene(tmp_path / "transforms.json").n_frames == 9


def test_nerfstudio_per_frame_intrinsics_and_downscale_folder(tmp_path):
    write_nerfstudio(tmp_path, n=3, per_frame=True, factors=(1, 2))
    scene = load_scene(tmp_path)
    np.testing.assert_allclose(scene.Ks[:, 0, 0], [10, 11, 12])
    np.testing.assert_allclose(scene.Ks[:, 1, 1], [11, 12, 13])
    s2 = load_scene(tmp_path, downscale=2)
    assert s2.image_paths[0].parent.name == "images_2" and (s2.width, s2.height) == (8, 6)
    np.testing.assert_allclose(s2.Ks[:, 0, 0], [5, 5.5, 6])
    assert s2.image(0).shape == (6, 8, 3)


def test_instant_ngp_camera_angle_without_size(tmp_path):
    write_nerfstudio(tmp_path, n=3, ngp=True, camera_model=None)
    scene = load_scene(tmp_path)
    assert (scene.width, scene.height) == (16, 12)
    f = 0.5 * 16 / math.tan(0.5)
    np.testing.assert_allclose(scene.Ks[0], [[f, 0, 8], [0, f, 6], [0, 0, 1]])


@pytest.mark.parametrize("model", ["OPENCV", "OPENCV_FISHEYE"])
def test_nerfstudio_distortion_models(tmp_path, model):
    last = {"p1": 0.001} if model == "OPENCV" else {"k4": 0.001}
    write_nerfstudio(tmp_path, n=2, camera_model=model, distortion={"k1": 0.1, "k2": -0.02, "k3": 0.01, **last})
    scene = load_scene(tmp_path)
    assert scene.camera_model == ("opencv" if model == "OPENCV" else "opencv_fisheye")
    want = [0.1, -0.02, 0.001, 0, 0.01, 0] if model == "OPENCV" else [0.1, -0.02, 0, 0, 0.01, 0.001]
    np.testing.assert_allclose(scene.distortion[1], want)
    img = scene.image(1)
    assert img.shape == (12, 16, 3) and np.isfinite(img).all()
    # center pixel ray barely bends: the value there stays close to the source
    src = frame_image(1, 16, 12).astype(np.float32) / 255
    assert np.abs(img[6, 7] - src[6, 7]).max() < 0.05


def test_nerfstudio_ply_points_are_in_the_json_frame(tmp_path):
    pts = np.random.default_rng(0).normal(size=(20, 3))
    A = np.array([[1.0, 0.0, 0.0, 0.5], [0.0, 0.0, 1.0, -1.0], [0.0, -1.0, 0.0, 2.0]])
    write_nerfstudio(tmp_path, n=3, ply_points=pts, applied_transform=A)  # ply already transformed
    scene = load_scene(tmp_path)
    np.testing.assert_allclose(scene.points, transform_points(scene.T_world_orig, pts.astype(np.float32)), atol=1e-5)
    assert scene.has_points and (scene.point_colors[:, 0] == 10).all()


@pytest.mark.parametrize("with_key", [True, False])
def test_nerfstudio_colmap_points_get_applied_transform(tmp_path, with_key):
    from scene_fixtures import write_colmap_points_txt

    from scenes.nerfstudio import LEGACY_APPLIED_TRANSFORM

    pts = np.random.default_rng(1).normal(size=(15, 3))
    A = np.array([[1.0, 0.0, 0.0, 0.5], [0.0, 0.0, 1.0, -1.0], [0.0, -1.0, 0.0, 2.0]])
    write_nerfstudio(tmp_path, n=3, applied_transform=A if with_key else None)
    write_colmap_points_txt(tmp_path / "colmap" / "sparse" / "0" / "points3D.txt", pts)
    scene = load_scene(tmp_path)
    A = A if with_key else np.array(LEGACY_APPLIED_TRANSFORM)
    np.testing.assert_allclose(scene.points, transform_points(scene.T_world_orig, pts @ A[:, :3].T + A[:, 3]), atol=1e-9)
