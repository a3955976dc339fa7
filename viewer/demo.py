"""A tiny known scene for viewer tests and demos: a red cluster on the left and a green one on
the right of a camera looking down +z (OpenCV), with a few cameras around it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from reconstruct.splats import SH_C0, Splats
from scenes.geometry import look_at


def two_clusters(
    n_per_cluster: int = 400,
    *,
    separation: float = 0.8,
    radius: float = 0.25,
    splat_scale: float = 0.05,
    red_opacity: float = 0.95,
    green_opacity: float = 0.4,
    seed: int = 0,
) -> Splats:
    """Red Gaussians around x = -separation, green ones around x = +separation (y = z = 0).

    Seen from :func:`front_camera` red is on the left half of the image, green on the right.
    """
    rng = np.random.default_rng(seed)
    n = n_per_cluster
    means = np.concatenate([
        rng.normal((-separation, 0.0, 0.0), radius, (n, 3)),
        rng.normal((separation, 0.0, 0.0), radius, (n, 3)),
    ]).astype(np.float32)
    rgb = np.zeros((2 * n, 3), np.float32)
    rgb[:n, 0] = 1.0
    rgb[n:, 1] = 1.0
    opacity = np.concatenate([np.full(n, red_opacity), np.full(n, green_opacity)]).astype(np.float32)
    return Splats(
        means=means,
        quats=np.tile(np.array([1.0, 0.0, 0.0, 0.0], np.float32), (2 * n, 1)),
        log_scales=np.full((2 * n, 3), math.log(splat_scale), np.float32),
        opacity_logits=np.log(opacity / (1.0 - opacity)).astype(np.float32),
        sh0=((rgb - 0.5) / SH_C0).astype(np.float32),
        shN=np.zeros((2 * n, 0, 3), np.float32),
    )


def front_camera(distance: float = 4.0) -> np.ndarray:
    """[4, 4] camera at (0, 0, -distance) looking at the origin, x right, y down."""
    return look_at(np.array([0.0, 0.0, -distance]), np.zeros(3), up=(0.0, -1.0, 0.0))


def demo_scene(*, width: int = 160, height: int = 120, distance: float = 4.0, fov_deg: float = 50.0):
    """A synthetic SceneData: train cameras (front, left-front, right-front) and two test
    cameras above and below, flat-colored images (no files)."""
    from scenes.types import SceneData

    positions = [
        (0.0, 0.0, -distance),
        (-0.5 * distance, 0.0, -0.85 * distance),
        (0.5 * distance, 0.0, -0.85 * distance),
        (0.0, -0.5 * distance, -0.85 * distance),
        (0.0, 0.5 * distance, -0.85 * distance),
    ]
    T = np.stack([look_at(np.array(p), np.zeros(3), up=(0.0, -1.0, 0.0)) for p in positions])
    f = 0.5 * height / math.tan(0.5 * math.radians(fov_deg))
    K = np.array([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])
    tints = np.array([[0.9, 0.3, 0.3], [0.3, 0.9, 0.3], [0.3, 0.3, 0.9], [0.6, 0.6, 0.6], [0.6, 0.6, 0.6]])

    def loader(i: int) -> np.ndarray:
        return np.broadcast_to(tints[i].astype(np.float32), (height, width, 3)).copy()

    return SceneData(
        format="synthetic", root=Path("."), image_paths=tuple(Path("") for _ in positions),
        Ks=np.repeat(K[None], len(positions), 0), T_world_cam=T, width=width, height=height,
        train_ids=(0, 1, 2), test_ids=(3, 4), near=0.5 * distance, far=1.5 * distance,
        background=(1.0, 1.0, 1.0), loader=loader,
    )
