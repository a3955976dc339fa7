"""Gaussians whose footprint is far larger than the image or whose center projects far
outside it. gsplat 1.5.3 keeps the full radius (ProjectionEWA3DGSFused.cu:183-201, no cap)
and clips the tile range to the image (IntersectTile.cu:73-77); the backends must do the
same, or such a splat is cut at a tile boundary and the render shows a straight seam.

The oracle here is a dense renderer: every visible Gaussian evaluated at every pixel in
depth order, no bounding boxes and no tiles, with autograd for the gradients.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reconstruct.raster import rasterize
from reconstruct.raster.projection import project_gaussians
from test_raster import (
    GSPLAT_ALPHA_CLAMP,
    GSPLAT_ALPHA_THRESHOLD,
    GSPLAT_T_STOP,
    PARAM_NAMES,
    assert_close,
    directional_derivative_error,
)
from test_raster_gsplat_rules import gsplat_project

W, H = 40, 36
OLD_CAP = 2 * max(W, H) + 32  # the radius cap the backends used to apply


def camera(dtype=torch.float64):
    """Identity pose (OpenCV axes) and a pinhole with f = H: viewmats [1, 4, 4], Ks [1, 3, 3]."""
    K = torch.tensor([[[36.0, 0.0, 20.0], [0.0, 36.0, 18.0], [0.0, 0.0, 1.0]]], dtype=dtype)
    return torch.eye(4, dtype=dtype)[None], K


def offscreen_scene() -> dict:
    """Three wide splats centered well outside the image (above, left, below-right) whose
    footprints cover it, one wide splat centered inside, and a few ordinary ones."""
    g = torch.Generator().manual_seed(0)
    z = 2.0
    # pixel (u, v) at depth z -> world ((u - cx) z / f, (v - cy) z / f, z)
    centers_px = [(22.0, -3 * H), (-3 * W, 15.0), (W + 160.0, H + 140.0), (18.0, 20.0)]
    means = [[(u - 20.0) * z / 36.0, (v - 18.0) * z / 36.0, z + 0.3 * k] for k, (u, v) in enumerate(centers_px)]
    n_small = 8
    small = torch.rand(n_small, 3, generator=g, dtype=torch.float64) * torch.tensor([1.6, 1.4, 1.0]) \
        + torch.tensor([-0.8, -0.7, 1.2])
    means = torch.cat([torch.tensor(means, dtype=torch.float64), small])
    n = means.shape[0]
    scales = torch.cat([
        torch.tensor([[5.0, 4.0, 3.0], [4.0, 6.0, 2.0], [6.0, 6.0, 6.0], [7.0, 6.0, 2.0]], dtype=torch.float64),
        torch.exp(torch.randn(n_small, 3, generator=g, dtype=torch.float64) * 0.3 + math.log(0.08)),
    ])
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    opacities = torch.cat([torch.tensor([0.8, 0.6, 1.0, 0.3], dtype=torch.float64),
                           torch.rand(n_small, generator=g, dtype=torch.float64) * 0.9 + 0.1])
    colors = torch.rand(n, 3, generator=g, dtype=torch.float64)
    backgrounds = torch.rand(1, 3, generator=g, dtype=torch.float64)
    return dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors,
                backgrounds=backgrounds)


def dense_render(means, quats, scales, opacities, colors, backgrounds, viewmats, Ks, width, height):
    """gsplat's shading rules over all pixels and all visible Gaussians at once.
    Returns images [C, H, W, 3] and alphas [C, H, W, 1], differentiable."""
    proj = project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height,
                             near_plane=0.01, far_plane=1e10)
    C = viewmats.shape[0]
    ys, xs = torch.meshgrid(torch.arange(height, dtype=means.dtype), torch.arange(width, dtype=means.dtype),
                            indexing="ij")
    px, py = xs.reshape(-1) + 0.5, ys.reshape(-1) + 0.5  # [P]
    images, alphas = [], []
    for cam in range(C):
        ids = (proj.radii[cam] > 0).all(-1).nonzero()[:, 0].tolist()
        depths = proj.depths.detach()
        ids.sort(key=lambda i: (float(depths[cam, i]), i))
        ids = torch.tensor(ids, dtype=torch.long)
        m, q = proj.means2d[cam, ids], proj.conics[cam, ids]  # [n, 2], [n, 3]
        dx, dy = m[:, 0:1] - px[None], m[:, 1:2] - py[None]  # [n, P]
        power = 0.5 * (q[:, 0:1] * dx * dx + q[:, 2:3] * dy * dy) + q[:, 1:2] * dx * dy
        raw = opacities[ids][:, None] * torch.exp(-power)
        alpha = torch.where(raw <= GSPLAT_ALPHA_CLAMP, raw, torch.full_like(raw, GSPLAT_ALPHA_CLAMP))
        hit = (power >= 0) & (alpha >= GSPLAT_ALPHA_THRESHOLD)
        alpha = torch.where(hit, alpha, torch.zeros_like(alpha))
        with torch.no_grad():
            keep = hit & (torch.cumprod(1.0 - alpha, 0) > GSPLAT_T_STOP)
        alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
        T_before = torch.cumprod(torch.cat([torch.ones_like(alpha[:1]), 1.0 - alpha[:-1]]), 0)
        rgb = (alpha * T_before).transpose(0, 1) @ colors[ids]  # [P, 3]
        T = T_before[-1] * (1.0 - alpha[-1])  # [P]
        images.append((rgb + T[:, None] * backgrounds[cam]).reshape(height, width, 3))
        alphas.append((1.0 - T).reshape(height, width, 1))
    return torch.stack(images), torch.stack(alphas)


def render(params, backend, width=W, height=H):
    viewmats, Ks = camera()
    img, alpha, info = rasterize(
        params["means"], params["quats"], params["scales"], params["opacities"], params["colors"],
        viewmats, Ks, width, height, backgrounds=params["backgrounds"], backend=backend,
    )
    return img, alpha, info


def test_offscreen_splats_keep_their_full_radius_like_gsplat():
    p = offscreen_scene()
    viewmats, Ks = camera()
    _, _, info = render(p, "cpu")
    proj = project_gaussians(p["means"], p["quats"], p["scales"], p["opacities"], viewmats, Ks, W, H,
                             near_plane=0.01, far_plane=1e10)
    want = gsplat_project(*(p[k].numpy() for k in ("means", "quats", "scales", "opacities")),
                          viewmats.numpy(), Ks.numpy(), W, H)[0]
    assert (info["radii"].numpy() == want).all() and (proj.radii.numpy() == want).all()
    means2d = info["means2d"].detach()[0]
    assert float(means2d[0, 1]) < -2 * H and float(means2d[1, 0]) < -2 * W  # centers far off screen
    assert float(means2d[2, 0]) > W + 50 and float(means2d[2, 1]) > H + 50
    assert (info["radii"][0, :4] > OLD_CAP).any(-1).all(), info["radii"][0, :4]
    # Every tile of the image holds each of the three off-screen splats.
    n_tiles = info["tile_width"] * info["tile_height"]
    assert (info["tiles_per_gauss"][0, :3] == n_tiles).all(), info["tiles_per_gauss"][0, :3]


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_offscreen_splats_match_the_dense_renderer(backend):
    """Values and every gradient against the tile-free dense renderer (no radius at all)."""
    p = offscreen_scene()
    viewmats, Ks = camera()
    leaves = {k: v.clone().requires_grad_(True) for k, v in p.items()}
    want_img, want_alpha = dense_render(*(leaves[k] for k in PARAM_NAMES), viewmats, Ks, W, H)
    assert float(want_alpha.detach().min()) > 0.5, "the wide splats should cover the whole image"
    g = torch.Generator().manual_seed(3)
    w_img = torch.randn(want_img.shape, generator=g, dtype=torch.float64)
    w_alpha = torch.randn(want_alpha.shape, generator=g, dtype=torch.float64)
    want_grads = torch.autograd.grad((want_img * w_img).sum() + (want_alpha * w_alpha).sum(),
                                     [leaves[k] for k in PARAM_NAMES])

    leaves = {k: v.clone().requires_grad_(True) for k, v in p.items()}
    img, alpha, _ = render(leaves, backend)
    grads = torch.autograd.grad((img * w_img).sum() + (alpha * w_alpha).sum(), [leaves[k] for k in PARAM_NAMES])
    assert_close(img.detach(), want_img.detach(), 1e-10, "images")
    assert_close(alpha.detach(), want_alpha.detach(), 1e-10, "alphas")
    for name, got, want in zip(PARAM_NAMES, grads, want_grads):
        assert float(want[:3].abs().max()) > 0, f"off-screen splats get no d/d{name}"
        assert_close(got, want, 1e-9, f"d/d{name}")


def test_offscreen_splat_gradients_match_finite_differences():
    p = offscreen_scene()
    viewmats, Ks = camera()
    inputs = tuple(p[k].clone().requires_grad_(True) for k in PARAM_NAMES)

    def fn(means, quats, scales, opacities, colors, backgrounds):
        img, alpha, _ = rasterize(means, quats, scales, opacities, colors, viewmats, Ks, W, H,
                                  backgrounds=backgrounds, backend="cpu")
        return img, alpha

    for seed in range(3):
        assert directional_derivative_error(fn, inputs, seed) < 1e-6


@pytest.mark.parametrize("which", [0, 1, 2])
def test_offscreen_splat_renders_without_seams(which):
    """One off-screen splat alone: its alpha is smooth over the whole image, so no row (or
    column) jumps against its neighbours. A radius cut at a tile boundary makes the second
    difference across that boundary as large as the alpha itself."""
    p = {k: (v[which : which + 1] if k != "backgrounds" else v) for k, v in offscreen_scene().items()}
    for backend in ("cpu", "reference"):
        _, alpha, _ = render(p, backend)
        a = alpha.detach()[0, :, :, 0].numpy()  # [H, W]
        assert a.min() > 0.05, (backend, a.min())
        rows = np.abs(a[2:] - 2 * a[1:-1] + a[:-2]).max()  # second difference across rows
        cols = np.abs(a[:, 2:] - 2 * a[:, 1:-1] + a[:, :-2]).max()
        steps = np.abs(np.diff(a, axis=0)).max()
        assert rows < 1e-3 and cols < 1e-3, (backend, rows, cols)
        assert steps < 0.02, (backend, steps)


def test_footprint_beyond_int32_saturates():
    """A splat so wide its radius exceeds int32 gets gsplat's saturated radius 2^31 - 1 on
    both projections (no wrap to a negative radius) and covers the image uniformly."""
    viewmats, Ks = camera()
    p = dict(means=torch.tensor([[0.0, 0.0, 2.0]], dtype=torch.float64),
             quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64),
             scales=torch.full((1, 3), 1e9, dtype=torch.float64),
             opacities=torch.tensor([0.7], dtype=torch.float64),
             colors=torch.tensor([[0.2, 0.4, 0.6]], dtype=torch.float64),
             backgrounds=torch.zeros(1, 3, dtype=torch.float64))
    for backend in ("cpu", "reference"):
        img, alpha, info = render(p, backend)
        assert (info["radii"] == 2**31 - 1).all(), info["radii"]
        torch.testing.assert_close(alpha, torch.full_like(alpha, 0.7), rtol=0, atol=1e-12)
        torch.testing.assert_close(img[0, 5, 7], torch.tensor([0.14, 0.28, 0.42], dtype=torch.float64))
