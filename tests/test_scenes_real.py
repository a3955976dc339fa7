"""Readers on the real scenes in ../shared/data (skipped with a reason when absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scenes import load_scene

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _scene_dir(name: str) -> Path:
    d = DATA / name
    if not d.is_dir():
        pytest.skip(f"real data not present: {d} (needs /work/shared/data)")
    return d


def test_fern_reads_images_8_and_points_reproject_into_views():
    scene = load_scene(_scene_dir("llff_fern"), views=3)
    assert scene.format == "llff" and scene.n_frames == 20
    assert (scene.width, scene.height) == (504, 378) and scene.downscale == 8
    assert scene.image_paths[0].parent.name == "images_8"
    assert scene.near == pytest.approx(1 / 0.75)
    assert scene.has_points and len(scene.points) > 1000
    # The COLMAP points and the LLFF poses share one world: after normalization most points
    # must land inside each view in front of the camera (this catches axis-order mistakes).
    for i in (0, 10, 19):
        T_cam_world = np.linalg.inv(scene.T_world_cam[i])
        p = scene.points @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]
        uv = p[:, :2] / p[:, 2:3] @ scene.Ks[i][:2, :2].T + scene.Ks[i][:2, 2]
        inside = (p[:, 2] > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < 504) & (uv[:, 1] >= 0) & (uv[:, 1] < 378)
        assert inside.mean() > 0.8, (i, inside.mean())
        assert (p[:, 2] > 0).mean() > 0.99
        depth = p[:, 2]
        assert np.percentile(depth, 5) > 0.5 * scene.near and np.percentile(depth, 95) < 1.5 * scene.far
    img = scene.image(1)
    assert img.shape == (378, 504, 3) and img.dtype == np.float32 and 0.1 < img.mean() < 0.9


def test_lego_cameras_look_at_origin_and_images_composite_on_white():
    scene = load_scene(_scene_dir("blender_lego"), views=8, downscale=2)
    assert scene.format == "blender" and scene.n_frames == 300 and (scene.width, scene.height) == (400, 400)
    centers = scene.T_world_cam[:, :3, 3]
    fwd = scene.T_world_cam[:, :3, 2]  # OpenCV +z looks into the scene
    cos = np.einsum("fk,fk->f", fwd, -centers / np.linalg.norm(centers, axis=1, keepdims=True))
    assert cos.min() > 0.99
    assert np.linalg.norm(centers, axis=1) == pytest.approx(4.031, abs=0.01)
    assert scene.Ks[0, 0, 0] == pytest.approx(0.5 * 400 / np.tan(0.5 * 0.6911112070083618))
    img = scene.image(26)
    assert img.shape == (400, 400, 3)
    np.testing.assert_allclose(img[:5, :5], 1.0)  # empty corner is white background
    assert img.mean() < 0.95  # the model is there


def test_epipolar_matching_on_2x_images_triangulates_fern_densely_and_on_the_dataset_points():
    from scipy.spatial import cKDTree

    from reconstruct.init import triangulate_views

    scene = load_scene(_scene_dir("llff_fern"), views=3)
    ids = list(scene.train_ids)
    exhaustive = triangulate_views(scene, ids)[0]
    epipolar = triangulate_views(scene, ids, matching="epipolar", sift_upscale=2)[0]
    assert len(epipolar) > 5 * len(exhaustive), (len(epipolar), len(exhaustive))
    # Distance to the nearest point of the dataset's 20-view, full-resolution reconstruction,
    # relative to depth in the first training view (measured: median 0.7% exhaustive, 0.9% epipolar).
    tree = cKDTree(scene.points)
    T_cam_world = np.linalg.inv(scene.T_world_cam[ids[0]])
    for points, median in ((exhaustive, 0.01), (epipolar, 0.015)):
        rel = tree.query(points)[0] / np.abs(points @ T_cam_world[2, :3] + T_cam_world[2, 3])
        assert np.median(rel) < median and np.percentile(rel, 90) < 0.07, (len(points), np.median(rel))
