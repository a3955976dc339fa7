"""Pose estimation from photos: a textured box rendered from known cameras, the refusal path,
poses.json read back by the nerfstudio reader, and the Umeyama similarity alignment."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scenes import ReconError
from scenes.geometry import look_at, transform_poses, umeyama
from scenes.sfm import Rung, _reuse, estimate_poses, load_estimated_scene
from scenes.photos import read_photo

W, H, FOCAL = 320, 240, 280.0


def _rotation(rng) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def test_umeyama_recovers_a_similarity():
    rng = np.random.default_rng(0)
    for _ in range(10):
        src = rng.normal(size=(12, 3))
        s, R, t = rng.uniform(0.1, 10), _rotation(rng), rng.normal(size=3) * 5
        dst = s * src @ R.T + t
        s2, R2, t2 = umeyama(src, dst)
        assert s2 == pytest.approx(s, rel=1e-9)
        np.testing.assert_allclose(R2, R, atol=1e-9)
        np.testing.assert_allclose(t2, t, atol=1e-8)
        assert np.linalg.det(R2) == pytest.approx(1.0)
    # a mirrored point set still gives a rotation (the best proper one), never a reflection
    src = rng.normal(size=(20, 3))
    _, R3, _ = umeyama(src, src * np.array([1.0, 1.0, -1.0]))
    assert np.linalg.det(R3) == pytest.approx(1.0)
    s4, _, _ = umeyama(src, src + 1.0, with_scale=False)
    assert s4 == 1.0


# ----------------------------------------------------------------------------- a textured box, ray cast


TEX = 192


def _textures(seed: int, n: int = 7) -> np.ndarray:
    """[n, TEX, TEX] grey textures: blobs at three scales (what SIFT finds), one per surface."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, TEX, TEX))
    for size, weight in ((8, 0.4), (24, 0.4), (64, 0.3)):
        grid = rng.uniform(size=(n, size, size))
        img = np.stack([np.asarray(Image.fromarray(g.astype(np.float32)).resize((TEX, TEX), Image.Resampling.BICUBIC)) for g in grid])
        out += weight * img
    return np.clip((out - out.mean()) * 1.5 + 0.5, 0, 1)


def _sample(tex: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear lookup of [TEX, TEX] ``tex`` at u, v in [0, 1]."""
    x, y = np.clip(u, 0, 1) * (TEX - 1), np.clip(v, 0, 1) * (TEX - 1)
    x0, y0 = np.minimum(x.astype(int), TEX - 2), np.minimum(y.astype(int), TEX - 2)
    fx, fy = x - x0, y - y0
    return (tex[y0, x0] * (1 - fx) * (1 - fy) + tex[y0, x0 + 1] * fx * (1 - fy)
            + tex[y0 + 1, x0] * (1 - fx) * fy + tex[y0 + 1, x0 + 1] * fx * fy)


def render_box(T_world_cam: np.ndarray, textures: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 view of a textured cube [-1, 1]^3 on a textured floor z = -1 (|x|, |y| < 4)."""
    K = np.array([[FOCAL, 0, W / 2], [0, FOCAL, H / 2], [0, 0, 1]])
    u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    rays_cam = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T  # [H, W, 3]
    d = rays_cam @ T_world_cam[:3, :3].T
    o = T_world_cam[:3, 3]
    best_t = np.full((H, W), np.inf)
    color = np.full((H, W, 3), 0.5)
    tints = np.array([[1, .6, .5], [.5, 1, .6], [.6, .5, 1], [1, 1, .5], [.5, 1, 1], [1, .5, 1], [.9, .9, .9]])
    surfaces = [(a, s, 1.0) for a in range(3) for s in (-1.0, 1.0)] + [(2, -1.0, 4.0)]  # (axis, offset, half size)
    for k, (axis, off, half) in enumerate(surfaces):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (off - o[axis]) / d[..., axis]
        p = o + t[..., None] * d
        others = [i for i in range(3) if i != axis]
        inside = (t > 1e-6) & (np.abs(p[..., others[0]]) <= half) & (np.abs(p[..., others[1]]) <= half)
        if k == 6:
            inside &= (np.abs(p[..., 0]) > 1) | (np.abs(p[..., 1]) > 1)  # the floor under the box is hidden
        hit = inside & (t < best_t)
        g = _sample(textures[k], (p[..., others[0]][hit] / half + 1) / 2, (p[..., others[1]][hit] / half + 1) / 2)
        color[hit] = g[:, None] * tints[k] * (0.75 + 0.25 * (k % 3) / 2)
        best_t[hit] = t[hit]
    return (np.clip(color, 0, 1) * 255).round().astype(np.uint8)


def box_cameras(n: int = 5) -> np.ndarray:
    """[n, 4, 4] OpenCV camera-to-world on a 70 degree arc at radius 5, looking at the box."""
    T = []
    for i in range(n):
        a = math.radians(20 + 70 * i / (n - 1))
        eye = np.array([5 * math.cos(a), 5 * math.sin(a), 2.2 + 0.3 * (i % 2)])
        T.append(look_at(eye, (0.0, 0.0, -0.3)))
    return np.stack(T)


def _write_views(folder: Path, T: np.ndarray, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    tex = _textures(seed)
    paths = []
    for i, T_world_cam in enumerate(T):
        p = folder / f"view_{i}.png"
        Image.fromarray(render_box(T_world_cam, tex)).save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def box_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("box")
    T_gt = box_cameras(5)
    paths = _write_views(root / "photos", T_gt)
    t = time.perf_counter()
    est = estimate_poses(paths, root / "work")
    return {"est": est, "T_gt": T_gt, "paths": paths, "root": root, "seconds": time.perf_counter() - t}


def test_sfm_recovers_the_rendered_cameras(box_run):
    est, T_gt = box_run["est"], box_run["T_gt"]
    assert est.registered == est.total == 5 and not est.unregistered and not est.reused
    assert est.mean_reprojection_error < 1.0 and est.n_points > 150
    assert [p.name for p in est.image_paths] == [f"view_{i}.png" for i in range(5)]
    # similarity from the estimate's world to the true one, fitted on camera centres
    s, R, t = umeyama(est.T_world_cam[:, :3, 3], T_gt[:, :3, 3])
    centres = s * est.T_world_cam[:, :3, 3] @ R.T + t
    centre_err = np.linalg.norm(centres - T_gt[:, :3, 3], axis=1)
    assert centre_err.max() < 0.02 * 5.0, centre_err  # 2% of the camera distance
    for T_e, T_g in zip(est.T_world_cam, T_gt):
        dR = (R @ T_e[:3, :3]).T @ T_g[:3, :3]
        angle = math.degrees(math.acos(np.clip((np.trace(dR) - 1) / 2, -1, 1)))
        assert angle < 1.0, angle
    np.testing.assert_allclose(est.Ks[:, 0, 0], FOCAL, rtol=0.03)  # focal within 3% (no EXIF prior)
    np.testing.assert_allclose(est.Ks[:, :2, 2], [[W / 2, H / 2]] * 5, atol=1e-6)
    assert box_run["seconds"] < 40


def test_poses_json_and_the_nerfstudio_reader_give_the_same_cameras(box_run):
    est, root = box_run["est"], box_run["root"]
    work = root / "work"
    assert sorted(p.name for p in work.iterdir()) == ["poses.json", "sfm", "sparse_pc.ply"]  # no scratch left
    meta = json.loads(est.poses_json.read_text())
    assert [fr["file_path"] for fr in meta["frames"]] == [str(p.resolve()) for p in box_run["paths"]]
    assert meta["recon_sfm"]["registered"] == 5 and meta["recon_sfm"]["rung"] == est.rung
    scene = load_estimated_scene(est.poses_json)
    assert scene.format == "nerfstudio" and scene.n_frames == 5 and (scene.width, scene.height) == (W, H)
    assert scene.train_ids == (0, 1, 2, 3, 4) and scene.test_ids == ()
    assert [p.name for p in scene.image_paths] == [p.name for p in est.image_paths]
    back = transform_poses(np.linalg.inv(scene.T_world_orig), 1 / scene.scale, scene.T_world_cam)
    np.testing.assert_allclose(back, est.T_world_cam, atol=1e-6)
    np.testing.assert_allclose(scene.Ks, est.Ks, atol=1e-9)
    assert scene.has_points and len(scene.points) == est.n_points
    # the points lie in front of every camera and project into its image
    for i in range(5):
        T_cam_world = np.linalg.inv(scene.T_world_cam[i])
        q = scene.points @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]
        uv = q[:, :2] / q[:, 2:] @ scene.Ks[i][:2, :2].T + scene.Ks[i][:2, 2]
        assert (q[:, 2] > 0).mean() > 0.99
        assert ((uv[:, 0] > -1) & (uv[:, 0] < W + 1) & (uv[:, 1] > -1) & (uv[:, 1] < H + 1)).mean() > 0.6
    assert load_estimated_scene(est.poses_json, holdout=True).test_ids == (0,)
    import pycolmap

    model = pycolmap.Reconstruction(str(work / "sfm"))
    assert sorted(im.name for im in model.images.values()) == [f"view_{i}.png" for i in range(5)]
    assert {(c.width, c.height) for c in model.cameras.values()} == {(W, H)}
    assert model.num_points3D() == est.n_points


def test_an_existing_poses_json_for_the_same_photos_is_reused(box_run):
    est, paths, root = box_run["est"], box_run["paths"], box_run["root"]
    t = time.perf_counter()
    again = estimate_poses(paths, root / "work")
    assert again.reused and time.perf_counter() - t < 2
    np.testing.assert_allclose(again.T_world_cam, est.T_world_cam, atol=1e-9)
    np.testing.assert_allclose(again.Ks, est.Ks, atol=1e-9)
    assert again.registered == 5 and again.rung == est.rung
    photos = [read_photo(p) for p in paths]
    assert _reuse(root / "work", photos[:4]) is None  # another photo list runs SfM again
    assert _reuse(root / "work", photos[::-1]) is None


def test_unrelated_photos_are_refused_and_nothing_is_left(tmp_path):
    paths = []
    for seed in range(3):  # three different boxes seen from three different places
        T = box_cameras(3)[seed : seed + 1]
        paths += _write_views(tmp_path / f"scene{seed}", T, seed=10 + seed)
    work = tmp_path / "work"
    with pytest.raises(ReconError, match=r"only [01] of 3 photos could be registered \(need 2\)") as err:
        estimate_poses(paths, work)  # the whole default ladder
    msg = str(err.value)
    assert "\n" not in msg and "more photos" in msg and "overlap" in msg and "COLMAP model" in msg
    assert not work.exists()
    work.mkdir()
    (work / "keep.txt").write_text("x")
    with pytest.raises(ReconError):
        estimate_poses(paths, work, ladder=[Rung("320px default", 320)])
    assert [p.name for p in work.iterdir()] == ["keep.txt"]


def test_one_camera_with_the_exif_focal_as_prior_else_one_camera_per_photo(tmp_path):
    import pycolmap

    from scenes.sfm import _extract, _write_resized

    tex = _textures(0)
    T = box_cameras(3)
    folder = tmp_path / "exif"
    folder.mkdir()
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 35  # 35 mm equivalent: 35 / 36 * 320 = 311.1 px
    for i in range(3):
        Image.fromarray(render_box(T[i], tex)).save(folder / f"v{i}.jpg", exif=exif, quality=95)
    photos = [read_photo(p) for p in sorted(folder.iterdir())]
    names = [f"{p.path.stem}.png" for p in photos]
    rung = Rung("half", 160)
    _write_resized(photos, names, rung.max_side, tmp_path / "small")
    assert Image.open(tmp_path / "small" / "v0.png").size == (160, 120)
    _extract(tmp_path / "one.db", tmp_path / "small", photos, names, rung, shared=True)
    cams = pycolmap.Database.open(str(tmp_path / "one.db")).read_all_cameras()
    assert len(cams) == 1 and cams[0].has_prior_focal_length and (cams[0].width, cams[0].height) == (160, 120)
    assert cams[0].params[0] == pytest.approx(35 / 36 * 320 / 2)
    _extract(tmp_path / "many.db", tmp_path / "small", photos, names, rung, shared=False)
    assert len(pycolmap.Database.open(str(tmp_path / "many.db")).read_all_cameras()) == 3


def test_unreadable_photo_is_refused_before_any_work(tmp_path):
    good = _write_views(tmp_path, box_cameras(2))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ReconError, match="bad.jpg"):
        estimate_poses([*good, bad], tmp_path / "work")
    assert not (tmp_path / "work").exists()
