"""Initialization: epipolar geometry, DLT triangulation, SfM from the training views, random points."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from reconstruct.demo import demo_gaussians
from reconstruct.init import _dlt, _fundamental, _projection, _sampson, random_points, triangulate_views
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


def test_sfm_points_lie_on_the_demo_object(demo):
    points, colors = triangulate_views(demo, list(demo.train_ids))
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
