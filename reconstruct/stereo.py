"""Plane-sweep stereo between training views: the points of ``--init.kind dense``.

For each training view, depth hypotheses uniform in inverse depth are swept against its nearest
training neighbours with windowed normalized cross-correlation; the best depth per pixel is kept
when its score is high and a neighbour's depth agrees (cross-check), then back-projected.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from reconstruct.config import DenseInitConfig

BACKGROUND_TOL = 2.0 / 255.0
"""A pixel within this of the render background on every channel is background (``skip_background``)."""


def _gray(img: np.ndarray, max_width: int) -> tuple[torch.Tensor, float]:
    """[H,W,3] float image -> [1,1,h,w] gray tensor at most max_width wide, and the scale factor."""
    t = torch.as_tensor(img, dtype=torch.float32).permute(2, 0, 1)[None]
    s = min(1.0, max_width / t.shape[-1])
    if s < 1.0:
        t = F.interpolate(t, scale_factor=s, mode="area")
    return (t * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True), s


def _ncc(a: torch.Tensor, b: torch.Tensor, window: int) -> torch.Tensor:
    """Windowed normalized cross-correlation of [B,1,h,w] images -> [B,1,h,w] in [-1, 1]."""
    pool = lambda z: F.avg_pool2d(z, window, stride=1, padding=window // 2, count_include_pad=False)  # noqa: E731
    ma, mb = pool(a), pool(b)
    cov = pool(a * b) - ma * mb
    va = (pool(a * a) - ma**2).clamp_min(0)
    vb = (pool(b * b) - mb**2).clamp_min(0)
    return cov / torch.sqrt(va * vb + 1e-6)


def _unproject(K: np.ndarray, T_world_cam: np.ndarray, h: int, w: int, depth: torch.Tensor) -> torch.Tensor:
    """World points [D,h,w,3] of every pixel at depths ``depth`` [D] (or [h,w] -> [h,w,3])."""
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    rays = torch.stack([xs, ys, torch.ones_like(xs)], -1) @ torch.as_tensor(np.linalg.inv(K), dtype=torch.float32).T
    cam = rays * (depth[..., None, None, None] if depth.ndim == 1 else depth[..., None])
    T = torch.as_tensor(T_world_cam, dtype=torch.float32)
    return cam @ T[:3, :3].T + T[:3, 3]


def _project(K: np.ndarray, T_world_cam: np.ndarray, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels [...,2] and depths [...] of world points X [...,3] in a camera."""
    T_cam_world = torch.as_tensor(np.linalg.inv(T_world_cam), dtype=torch.float32)
    cam = X @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]
    z = cam[..., 2]
    uv = cam @ torch.as_tensor(K, dtype=torch.float32).T
    return uv[..., :2] / uv[..., 2:3].clamp_min(1e-6), z


def plane_sweep_depth(scene, ref: int, others: list[int], cfg: DenseInitConfig) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Depth [h,w] and NCC score [h,w] of frame ``ref`` against ``others``; returns the scaled K too."""
    gray_ref, s = _gray(scene.image(ref), cfg.max_width)
    h, w = gray_ref.shape[-2:]
    scale = np.diag([w / scene.width, h / scene.height, 1.0])
    K_ref = scale @ scene.Ks[ref]
    near, far = max(float(scene.near), 1e-3), float(scene.far)
    depths = 1.0 / torch.linspace(1.0 / near, 1.0 / far, cfg.depths)
    grays = {j: _gray(scene.image(j), cfg.max_width)[0] for j in others}
    best = torch.full((h, w), -2.0)
    best_depth = torch.zeros(h, w)
    for d in depths:
        X = _unproject(K_ref, scene.T_world_cam[ref], h, w, d.view(1))[0]  # [h,w,3]
        scores = []
        for j in others:
            gj = grays[j]
            hj, wj = gj.shape[-2:]
            Kj = np.diag([wj / scene.width, hj / scene.height, 1.0]) @ scene.Ks[j]
            uv, z = _project(Kj, scene.T_world_cam[j], X)
            grid = torch.stack([uv[..., 0] / wj * 2 - 1, uv[..., 1] / hj * 2 - 1], -1)[None]
            sampled = F.grid_sample(gj, grid, align_corners=False, padding_mode="zeros")
            score = _ncc(gray_ref, sampled, cfg.window)[0, 0]
            inside = (grid[0].abs() <= 1).all(-1) & (z > 0)
            scores.append(torch.where(inside, score, torch.full_like(score, -1.0)))
        stack = torch.stack(scores)
        k = min(2, len(others))
        score = stack.topk(k, dim=0).values.mean(0)
        better = score > best
        best = torch.where(better, score, best)
        best_depth = torch.where(better, d.expand(h, w), best_depth)
    return best_depth, best, K_ref


def dense_points(scene, ids: list[int], cfg: DenseInitConfig, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Points [P,3] and colors [P,3] from plane-sweep stereo over the training views, cross-checked."""
    if len(ids) < 2:
        return np.zeros((0, 3)), np.zeros((0, 3))
    centers = {i: scene.T_world_cam[i][:3, 3] for i in ids}
    neighbours = {i: sorted((j for j in ids if j != i), key=lambda j: np.linalg.norm(centers[i] - centers[j]))[:4]
                  for i in ids}
    maps = {i: plane_sweep_depth(scene, i, neighbours[i], cfg) for i in ids}
    points, colors = [], []
    for i in ids:
        depth, score, K = maps[i]
        h, w = depth.shape
        X = _unproject(K, scene.T_world_cam[i], h, w, depth)  # [h,w,3]
        agree = torch.zeros(h, w, dtype=torch.bool)
        for j in neighbours[i]:
            dj, _, Kj = maps[j]
            uv, z = _project(Kj, scene.T_world_cam[j], X)
            u = uv[..., 0].floor().long()
            v = uv[..., 1].floor().long()
            inside = (u >= 0) & (u < dj.shape[1]) & (v >= 0) & (v < dj.shape[0]) & (z > 0)
            dz = dj[v.clamp(0, dj.shape[0] - 1), u.clamp(0, dj.shape[1] - 1)]
            agree |= inside & ((dz - z).abs() < cfg.max_reproj_rel * z)
        keep = agree & (score >= cfg.min_ncc)
        grid = torch.zeros(h, w, dtype=torch.bool)
        grid[:: cfg.stride, :: cfg.stride] = True
        keep &= grid
        img = F.interpolate(torch.as_tensor(scene.image(i)).permute(2, 0, 1)[None], size=(h, w), mode="area")[0]
        if cfg.skip_background:
            background = torch.tensor(scene.background, dtype=img.dtype).view(3, 1, 1)
            keep &= ((img - background).abs() > BACKGROUND_TOL).any(0)  # [h, w]
        points.append(X[keep].numpy())
        colors.append(img.permute(1, 2, 0)[keep].numpy())
    P, C = np.concatenate(points).astype(np.float64), np.concatenate(colors).astype(np.float64)
    if len(P) > cfg.max_points:
        pick = np.random.default_rng(seed).choice(len(P), cfg.max_points, replace=False)
        P, C = P[pick], C[pick]
    return P, C
