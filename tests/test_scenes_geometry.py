"""Property tests of the camera-frame helpers and normalizations (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from scenes.geometry import center_and_scale, opengl_to_opencv, similarity, transform_points, transform_poses
from scenes.llff import llff_normalization


def _poses(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, :3] = Rotation.random(n, random_state=seed).as_matrix()
    T[:, :3, 3] = rng.normal(size=(n, 3)) * rng.uniform(0.1, 50)
    return T


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 12), log_s=st.floats(-3, 3))
def test_similarity_round_trip(seed, n, log_s):
    T = _poses(seed, n)
    s = float(np.exp(log_s))
    A = similarity(s, Rotation.random(random_state=seed + 1).as_matrix(), np.random.default_rng(seed).normal(size=3))
    out = transform_poses(A, s, T)
    np.testing.assert_allclose(out[:, :3, :3] @ out[:, :3, :3].transpose(0, 2, 1), np.tile(np.eye(3), (n, 1, 1)), atol=1e-9)
    np.testing.assert_allclose(out[:, :3, 3], transform_points(A, T[:, :3, 3]), atol=1e-9 * max(1.0, s) * 100)
    back = transform_poses(np.linalg.inv(A), 1.0 / s, out)
    np.testing.assert_allclose(back, T, atol=1e-8 * max(1.0, np.abs(T).max()))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 12))
def test_center_and_scale_puts_cameras_on_unit_ball(seed, n):
    T = _poses(seed, n)
    A, s = center_and_scale(T)
    c = transform_poses(A, s, T)[:, :3, 3]
    np.testing.assert_allclose(c.mean(0), 0, atol=1e-9)
    assert abs(np.linalg.norm(c, axis=1).max() - 1.0) < 1e-9


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 12))
def test_llff_normalization_recenters_on_average_pose(seed, n):
    T = _poses(seed, n)
    rng = np.random.default_rng(seed)
    bounds = rng.uniform(0.5, 20, size=(n, 2))
    A, s = llff_normalization(T, bounds)
    out = transform_poses(A, s, T)
    assert abs(s * bounds.min() * 0.75 - 1.0) < 1e-12
    np.testing.assert_allclose(out[:, :3, 3].mean(0), 0, atol=1e-9)  # centers average to the origin
    back = -out[:, :3, 2].sum(0)  # summed OpenGL back axes point along world +z
    assert np.allclose(back / np.linalg.norm(back), [0, 0, 1], atol=1e-9)
    up = -out[:, :3, 1].sum(0)  # summed up axes have no x component
    assert abs(up[0]) < 1e-9 * max(1.0, np.abs(up).max())


def test_opengl_to_opencv_is_its_own_inverse_and_flips_view_direction():
    T = _poses(3, 5)
    cv = opengl_to_opencv(T)
    np.testing.assert_allclose(opengl_to_opencv(cv), T)
    np.testing.assert_allclose(cv[:, :3, 2], -T[:, :3, 2])
    np.testing.assert_allclose(cv[:, :3, 0], T[:, :3, 0])
    assert np.allclose(np.linalg.det(cv[:, :3, :3]), 1.0)
