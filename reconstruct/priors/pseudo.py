"""FSGS-style pseudo views: cameras between two training cameras, regularized without ground truth.

A pseudo camera interpolates the position (linear) and orientation (slerp) of two nearby training
cameras at a random fraction, plus a small random translation. Its render has no photo to match; two
weak terms shape it instead: edge-aware smoothness of the normalized expected depth (depth changes
where the color changes) and the binary entropy of the accumulated opacity (the half-transparent
haze that sparse views leave between the cameras is penalized, solid surfaces and empty space are not).
"""

from __future__ import annotations

import numpy as np
import torch

from reconstruct.priors.config import PseudoViewsConfig


def _quat_from_matrix(R: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(R).as_quat()  # xyzw


def interpolate_pose(T_a: np.ndarray, T_b: np.ndarray, t: float) -> np.ndarray:
    """[4,4] camera-to-world a fraction ``t`` of the way from T_a to T_b: position on the line,
    orientation along the geodesic (slerp). ``t`` outside [0, 1] continues the same path."""
    from scipy.spatial.transform import Rotation

    rel = Rotation.from_matrix(T_a[:3, :3].T @ T_b[:3, :3]).as_rotvec()
    out = np.eye(4)
    out[:3, :3] = T_a[:3, :3] @ Rotation.from_rotvec(t * rel).as_matrix()
    out[:3, 3] = (1 - t) * T_a[:3, 3] + t * T_b[:3, 3]
    return out


def pseudo_camera(T_world_cam: np.ndarray, ids: list[int], rng: np.random.Generator, *, jitter: float,
                  scene_scale: float) -> tuple[np.ndarray, int]:
    """A random pseudo pose between a training camera and one of its two nearest training neighbours.

    Returns the [4,4] pose and the frame whose intrinsics it borrows.
    """
    a = ids[int(rng.integers(len(ids)))]
    others = sorted((j for j in ids if j != a), key=lambda j: np.linalg.norm(T_world_cam[a][:3, 3] - T_world_cam[j][:3, 3]))
    b = others[int(rng.integers(min(2, len(others))))]
    T = interpolate_pose(T_world_cam[a], T_world_cam[b], float(rng.uniform(0.2, 0.8)))
    T[:3, 3] += rng.normal(size=3) * jitter * scene_scale
    return T, a


def edge_aware_smoothness(depth: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
    """Mean |grad depth| * exp(-|grad color|) of depth [H,W] (normalized by its mean) and rgb [H,W,3]."""
    d = depth / depth.detach().mean().clamp_min(1e-6)
    img = rgb.detach()
    dx = (d[:, 1:] - d[:, :-1]).abs() * torch.exp(-10 * (img[:, 1:] - img[:, :-1]).abs().mean(-1))
    dy = (d[1:] - d[:-1]).abs() * torch.exp(-10 * (img[1:] - img[:-1]).abs().mean(-1))
    return dx.mean() + dy.mean()


def opacity_entropy(alpha: torch.Tensor) -> torch.Tensor:
    """Mean binary entropy of accumulated opacity [..] in (0, 1)."""
    a = alpha.clamp(1e-4, 1 - 1e-4)
    return -(a * torch.log(a) + (1 - a) * torch.log(1 - a)).mean()


class PseudoViewLoss:
    """Regularizer: renders one pseudo view per application (own render, not the training render)."""

    name = "pseudo_views"
    needs_depth = False

    def __init__(self, cfg: PseudoViewsConfig) -> None:
        self.cfg = cfg

    def loss(self, ctx, render: torch.Tensor) -> torch.Tensor | None:
        weight = self.cfg.schedule.weight(ctx.step, self.cfg.weight, enabled=self.cfg.enabled)
        if weight == 0.0 or len(ctx.train_ids) < 2:
            return None
        scene, dev = ctx.scene, ctx.device
        T, frame = pseudo_camera(scene.T_world_cam, ctx.train_ids, ctx.rng("pseudo_views"), jitter=self.cfg.jitter,
                                 scene_scale=ctx.scene_scale)
        out, alpha, _ = ctx.render(torch.as_tensor(T, dtype=torch.float32, device=dev)[None],
                                   torch.as_tensor(scene.Ks[frame], dtype=torch.float32, device=dev)[None], mode="RGB+ED",
                                   scale=self.cfg.resolution_scale)
        term = self.cfg.smooth_weight * edge_aware_smoothness(out[0, ..., 3], out[0, ..., :3])
        term = term + self.cfg.opacity_weight * opacity_entropy(alpha[0, ..., 0])
        return weight * term
