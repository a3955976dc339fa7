"""Initialization: epipolar geometry, DLT triangulation, SfM from the training views, random points."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from reconstruct.demo import demo_gaussians
from reconstruct.config import SplatTrainConfig, resolve
from reconstruct.init import (_dlt, _fundamental, _projection, _sampson, epipolar_matches, random_points,
                              triangulate_views)
from scenes import load_scene

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"


@pytest.fixture(scope="module")
def demo():
    return load_scene(DEMO, views=8)


def _project(P: np.ndarray, X: np.ndarray) -> np.ndarray:
    h = np.concatenate([X, np.ones((len(X), 1))], 1) @ P.T
    return h[:, :2] / h[:, 2:]


def test_fundamental_and_dlt_on_exact_projections(demo):
    rng = np.random.default_rng(0)
    X = rng.uniform(-0.5, 0.5, (50, 3))
    i, j, k = demo.train_ids[:3]
    xi, xj, xk = (_project(_projection(demo, f), X) for f in (i, j, k))
    assert np.all(_sampson(_fundamental(demo, i, j), xi, xj) < 1e-8)
    shifted = xj + [0.0, 5.0]  # off the epipolar line
    assert np.median(_sampson(_fundamental(demo, i, j), xi, shifted)) > 1.0
    for n in range(len(X)):
        Y = _dlt([_projection(demo, f) for f in (i, j, k)], np.stack([xi[n], xj[n], xk[n]]))
        assert np.allclose(Y, X[n], atol=1e-6)


def test_epipolar_matching_rejects_lookalikes_off_the_epipolar_line(demo):
    rng = np.random.default_rng(3)
    X = rng.uniform(-0.5, 0.5, (200, 3))
    i, j = demo.train_ids[:2]
    xa, xb = (_project(_projection(demo, f), X) for f in (i, j))
    desc = rng.normal(size=(200, 128)).astype(np.float32)
    da = desc + 0.05 * rng.normal(size=desc.shape).astype(np.float32)
    # b holds every true match plus a lookalike of each a keypoint 30 px across its epipolar line,
    # whose descriptor is nearer than the true one: unconstrained matching would pick the lookalike.
    F = _fundamental(demo, i, j)
    lines = np.concatenate([xa, np.ones((200, 1))], 1) @ F.T
    normal = lines[:, :2] / np.linalg.norm(lines[:, :2], axis=1, keepdims=True)
    xb_all = np.concatenate([xb, xb + 30.0 * normal])
    db_all = np.concatenate([desc + 0.2 * rng.normal(size=desc.shape).astype(np.float32), da])
    m = epipolar_matches(F, xa, xb_all, da, db_all)
    assert m.shape[1] == 2 and len(m) >= 190, len(m)
    assert np.array_equal(m[:, 0], m[:, 1]), "every match is the true one, none a lookalike"
    assert np.all(np.diff(m[:, 0]) > 0), "each a keypoint matched at most once"
    nearest = np.argmin(((da[:, None] - db_all[None]) ** 2).sum(-1), axis=1)
    assert np.all(nearest >= 200), "the lookalikes are the unconstrained nearest neighbours"
    assert epipolar_matches(F, xa[:1], xb_all, da[:1], db_all).shape == (0, 2)


@pytest.mark.parametrize("matching,upscale", [("exhaustive", 1), ("epipolar", 1), ("epipolar", 2)])
def test_sfm_points_lie_on_the_demo_object(demo, matching, upscale):
    points, colors = triangulate_views(demo, list(demo.train_ids), matching=matching, sift_upscale=upscale)
    assert len(points) >= 40 and colors.shape == points.shape
    assert colors.min() >= 0 and colors.max() <= 1
    truth = demo_gaussians()["means"].numpy()
    dist, _ = cKDTree(truth).query(points)
    assert np.median(dist) < 0.1, np.median(dist)


def test_random_points_are_inside_training_frustums(demo):
    pts, cols = random_points(demo, list(demo.train_ids), 500, np.random.default_rng(1))
    assert pts.shape == (500, 3) and cols.shape == (500, 3)
    inside = np.zeros(len(pts), bool)
    for f in demo.train_ids:
        T = np.linalg.inv(demo.T_world_cam[f])
        cam = pts @ T[:3, :3].T + T[:3, 3]
        px = cam @ demo.Ks[f].T
        uv = px[:, :2] / px[:, 2:]
        ok = (cam[:, 2] >= demo.near - 1e-6) & (cam[:, 2] <= demo.far + 1e-6)
        ok &= (uv >= 0).all(1) & (uv[:, 0] <= demo.width) & (uv[:, 1] <= demo.height)
        inside |= ok
    assert inside.all()


def test_the_sparse_preset_matches_along_epipolar_lines_on_upscaled_images():
    sparse = resolve(SplatTrainConfig(scene=DEMO, views=3), device_type="cpu").init
    vanilla = resolve(SplatTrainConfig(scene=DEMO, preset="vanilla"), device_type="cpu").init
    assert (sparse.matching, sparse.sift_upscale) == ("epipolar", 2)
    assert (vanilla.matching, vanilla.sift_upscale) == ("exhaustive", 1)
