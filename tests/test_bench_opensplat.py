"""The pure parts of the OpenSplat bench (recon.bench.opensplat): the input it writes for OpenSplat
read back (cameras, images, points), our own nerfstudio reader agreeing with it, the check inputs,
and the one-line refusals. Tiny synthetic scenes; no OpenSplat binary and no shared data needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recon.bench import opensplat as B
from scene_fixtures import frame_image, orbit_poses
from scenes.types import SceneData

ROOT = Path(__file__).resolve().parents[1]
W, H = 24, 18


def _scene(tmp_path: Path, n: int = 5) -> SceneData:
    K = np.array([[20.0, 0.0, W / 2], [0.0, 21.0, H / 2], [0.0, 0.0, 1.0]])
    return SceneData(format="synthetic", root=tmp_path, image_paths=(), Ks=np.tile(K, (n, 1, 1)),
                     T_world_cam=orbit_poses(n), width=W, height=H, train_ids=(0, 1, 3), test_ids=(2, 4),
                     near=0.5, far=10.0, loader=lambda i: frame_image(i, W, H).astype(np.float32) / 255.0)


def _points(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 0.7, (n, 3)), rng.integers(0, 256, (n, 3)) / 255.0


def _project(K: np.ndarray, T_world_cam: np.ndarray, X: np.ndarray) -> np.ndarray:
    T = np.linalg.inv(T_world_cam)
    c = X @ T[:3, :3].T + T[:3, 3]
    return (c[:, :2] / c[:, 2:]) * [K[0, 0], K[1, 1]] + K[:2, 2]


def test_input_round_trips_cameras_images_and_points(tmp_path):
    scene, (P, C) = _scene(tmp_path), _points()
    frames = [0, 1, 3, 2]
    names = B.write_input(tmp_path / "in", scene, frames, P, C)
    assert names == [B.frame_name(i) for i in frames]
    got = B.read_input(tmp_path / "in")
    assert got.names == names and (got.width, got.height) == (W, H)
    np.testing.assert_allclose(got.T_world_cam, scene.T_world_cam[frames], atol=1e-12)
    np.testing.assert_array_equal(got.Ks, scene.Ks[frames])
    np.testing.assert_array_equal(got.points, P.astype(np.float32))  # float32, exactly
    np.testing.assert_array_equal(got.colors, np.round(C * 255).astype(np.uint8))
    B.check_input(tmp_path / "in", scene, frames)
    for name, i in zip(names, frames):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "in" / "images" / name)), frame_image(i, W, H))


def test_transforms_are_opengl_camera_to_world(tmp_path):
    scene, (P, C) = _scene(tmp_path), _points()
    B.write_input(tmp_path / "in", scene, [0], P, C)
    meta = json.loads((tmp_path / "in" / B.TRANSFORMS_FILE).read_text())
    assert meta["camera_model"] == "OPENCV" and meta["ply_file_path"] == B.POINTS_FILE
    f = meta["frames"][0]
    assert (f["w"], f["h"], f["cx"], f["cy"]) == (W, H, W / 2, H / 2) and f["k1"] == f["p1"] == 0.0
    M = np.array(f["transform_matrix"])
    T = scene.T_world_cam[0]
    np.testing.assert_allclose(M[:3, 0], T[:3, 0])  # x right in both
    np.testing.assert_allclose(M[:3, 1], -T[:3, 1])  # y up (OpenCV: down)
    np.testing.assert_allclose(M[:3, 2], -T[:3, 2])  # z back (OpenCV: forward)
    np.testing.assert_allclose(M[:3, 3], T[:3, 3])


def test_points_file_is_the_layout_opensplat_reads(tmp_path):
    P, C = _points(3)
    B.write_points_ply(tmp_path / "p.ply", P, B.colors_to_u8(C))
    lines = (tmp_path / "p.ply").read_text().splitlines()
    assert lines[:10] == ["ply", "format ascii 1.0", "element vertex 3", "property float x", "property float y",
                          "property float z", "property uchar red", "property uchar green", "property uchar blue",
                          "end_header"]
    assert len(lines) == 13 and all(len(ln.split()) == 6 for ln in lines[10:])


def test_our_nerfstudio_reader_sees_the_same_cameras(tmp_path):
    """Read back by the project's own nerfstudio reader (which normalizes the world), the written
    folder projects every point to the same pixel in every camera."""
    from scenes import load_scene

    scene, (P, C) = _scene(tmp_path), _points()
    frames = [0, 1, 3, 2, 4]
    B.write_input(tmp_path / "in", scene, frames, P, C)
    back = load_scene(tmp_path / "in")
    assert (back.width, back.height) == (W, H) and back.n_frames == len(frames)
    assert back.points is not None and len(back.points) == len(P)
    by_name = {p.name: k for k, p in enumerate(back.image_paths)}
    for i in frames:
        k = by_name[B.frame_name(i)]
        np.testing.assert_allclose(_project(back.Ks[k], back.T_world_cam[k], back.points),
                                   _project(scene.Ks[i], scene.T_world_cam[i], P.astype(np.float32)), atol=1e-4)
        np.testing.assert_allclose(back.image(k), scene.image(i), atol=1e-6)


def test_check_input_refuses_other_pixels_or_poses(tmp_path):
    scene, (P, C) = _scene(tmp_path), _points()
    B.write_input(tmp_path / "in", scene, [0, 1], P, C)
    img = frame_image(1, W, H)
    img[0, 0] ^= 1
    Image.fromarray(img).save(tmp_path / "in" / "images" / B.frame_name(1))
    with pytest.raises(B.BenchError, match="pixels differ"):
        B.check_input(tmp_path / "in", scene, [0, 1])
    with pytest.raises(B.BenchError, match="frames"):
        B.check_input(tmp_path / "in", scene, [0, 3])


def test_check_inputs(tmp_path):
    scene, (P, C) = _scene(tmp_path), _points()
    frame = 2
    inputs = B.check_inputs(scene, frame, P, C, seed=0)
    assert set(inputs) == set(B.CHECKS)
    dots, dot_colors = inputs["dots"]
    n = len(P)
    assert dots.shape == (4 * n, 3) and dot_colors.shape == (4 * n, 3)
    T = np.linalg.inv(scene.T_world_cam[frame])
    depth = P @ T[:3, :3].T[:, 2] + T[2, 3]
    for k in range(1, 4):  # each extra point lies DOT_PX pixels' worth of distance from its dot's centre
        np.testing.assert_allclose(np.linalg.norm(dots[k * n:(k + 1) * n] - P, axis=1),
                                   B.DOT_PX * depth / scene.Ks[frame][0, 0])
        np.testing.assert_array_equal(dot_colors[k * n:(k + 1) * n], dot_colors[:n])
    cover_points, cover_colors = inputs["cover"]
    assert cover_points is P and len(np.unique(cover_colors, axis=0)) == 1
    assert inputs["photo"][1] is C


def test_missing_binary_is_one_line(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("OPENSPLAT", None)
    r = subprocess.run(["bash", str(ROOT / "scripts" / "bench_opensplat.sh"), "--opensplat", str(tmp_path / "nope")],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error: "), r.stderr
    assert B.main(["--opensplat", str(tmp_path / "nope")]) == 2


def test_without_a_binary_it_builds_one_and_names_a_bad_source(tmp_path):
    """No binary given: the script goes to scripts/build_opensplat.sh, which refuses a source folder
    that is not an OpenSplat checkout in one line naming it, before installing or compiling anything."""
    env = {**os.environ, "PYTHON": sys.executable, "OPENSPLAT_SRC": str(tmp_path / "src")}
    env.pop("OPENSPLAT", None)
    (tmp_path / "src").mkdir()
    r = subprocess.run(["bash", str(ROOT / "scripts" / "bench_opensplat.sh")], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    last = r.stderr.strip().splitlines()[-1]
    assert last == f"error: {tmp_path / 'src'} is not an OpenSplat checkout (no CMakeLists.txt)", r.stderr
    assert "building one with scripts/build_opensplat.sh" in r.stderr


def test_last_json_line():
    assert B.last_json_line('table\n{"psnr": 1.5}\n') == {"psnr": 1.5}
    with pytest.raises(B.BenchError):
        B.last_json_line("no json here")
