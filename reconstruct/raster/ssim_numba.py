"""D-SSIM loss (1 - mean SSIM) as fused numba kernels, forward and backward, on CPU.

Same definition as ``reconstruct.metrics.dssim_loss``: an 11x11 Gaussian window (sigma 1.5)
applied as two 1D passes with zero padding ("same" size), K1 = 0.01, K2 = 0.03, the mean
over every pixel and channel. Per channel, with B the zero-padded blur:

    mu_x = B x, mu_y = B y, s_xx = B(x^2) - mu_x^2, s_yy = B(y^2) - mu_y^2, s_xy = B(xy) - mu_x mu_y
    S = (2 mu_x mu_y + c1)(2 s_xy + c2) / ((mu_x^2 + mu_y^2 + c1)(s_xx + s_yy + c2))

The forward fuses the five products into the horizontal pass (no [5, H, W, C] stack of
inputs) and computes, next to S, the per-pixel partials of S with respect to the blurred
maps. B is symmetric (its transpose is itself, zero padding included), so the backward is
two more blur passes over those partials:

    dL/dx = B(dS/dmu_x) + 2 x B(dS/dE[x^2]) + y B(dS/dE[xy])     (times dL/dS = -1 / count)

and the same with x and y swapped for the reference image when it requires a gradient.
Arithmetic is float64 inside whatever the input dtype; results come back in that dtype.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

C1 = 0.01**2
C2 = 0.03**2
WINDOW = 11
SIGMA = 1.5


def gaussian_window(size: int = WINDOW, sigma: float = SIGMA) -> np.ndarray:
    """[size] normalized 1D Gaussian taps (the same values as metrics._gaussian_window)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


@njit(cache=True, parallel=True)
def _blur_rows(src, g, out):
    """Horizontal zero-padded pass: out[m, i, j, c] = sum_k g[k] src[m, i, j + k - r, c].
    src, out [M, H, W, C]."""
    M, H, W, C = src.shape
    r = g.shape[0] // 2
    for t in prange(M * H):
        m = t // H
        i = t % H
        for j in range(W):
            k0 = max(0, r - j)
            k1 = min(g.shape[0], W + r - j)
            for c in range(C):
                acc = 0.0
                for k in range(k0, k1):
                    acc += g[k] * src[m, i, j + k - r, c]
                out[m, i, j, c] = acc


@njit(cache=True, parallel=True)
def _blur_cols(src, g, out):
    """Vertical zero-padded pass: out[m, i, j, c] = sum_k g[k] src[m, i + k - r, j, c]."""
    M, H, W, C = src.shape
    r = g.shape[0] // 2
    for t in prange(M * H):
        m = t // H
        i = t % H
        k0 = max(0, r - i)
        k1 = min(g.shape[0], H + r - i)
        for j in range(W):
            for c in range(C):
                acc = 0.0
                for k in range(k0, k1):
                    acc += g[k] * src[m, i + k - r, j, c]
                out[m, i, j, c] = acc


@njit(cache=True, parallel=True)
def _moments_rows(x, y, g, out):
    """Horizontal pass of the five SSIM inputs x, y, x^2, y^2, xy, formed on the fly.
    x, y [H, W, C]; out [5, H, W, C]."""
    H, W, C = x.shape
    r = g.shape[0] // 2
    for i in prange(H):
        for j in range(W):
            k0 = max(0, r - j)
            k1 = min(g.shape[0], W + r - j)
            for c in range(C):
                s0 = 0.0
                s1 = 0.0
                s2 = 0.0
                s3 = 0.0
                s4 = 0.0
                for k in range(k0, k1):
                    w = g[k]
                    xv = x[i, j + k - r, c]
                    yv = y[i, j + k - r, c]
                    s0 += w * xv
                    s1 += w * yv
                    s2 += w * xv * xv
                    s3 += w * yv * yv
                    s4 += w * xv * yv
                out[0, i, j, c] = s0
                out[1, i, j, c] = s1
                out[2, i, j, c] = s2
                out[3, i, j, c] = s3
                out[4, i, j, c] = s4


@njit(cache=True, parallel=True)
def _ssim_and_partials(moments, c1, c2, with_ref, ssim_rows, partials):
    """Per-pixel SSIM summed per row, and its partials w.r.t. the blurred maps.

    moments [5, H, W, C] = B x, B y, B x^2, B y^2, B xy. Writes ssim_rows [H] (row sums of
    S) and partials [3 or 5, H, W, C]: dS/d(B x), dS/d(B x^2), dS/d(B xy) and, with_ref,
    dS/d(B y), dS/d(B y^2)."""
    _, H, W, C = moments.shape
    for i in prange(H):
        row = 0.0
        for j in range(W):
            for c in range(C):
                mx = moments[0, i, j, c]
                my = moments[1, i, j, c]
                sxx = moments[2, i, j, c] - mx * mx
                syy = moments[3, i, j, c] - my * my
                sxy = moments[4, i, j, c] - mx * my
                a1 = 2.0 * mx * my + c1
                a2 = 2.0 * sxy + c2
                d1 = mx * mx + my * my + c1
                d2 = sxx + syy + c2
                s = (a1 * a2) / (d1 * d2)
                row += s
                # S = a1 a2 / (d1 d2); s_xx, s_xy, s_yy depend on mu_x, mu_y as well.
                partials[0, i, j, c] = s * (2.0 * my / a1 - 2.0 * my / a2 - 2.0 * mx / d1 + 2.0 * mx / d2)
                partials[1, i, j, c] = -s / d2
                partials[2, i, j, c] = 2.0 * s / a2
                if with_ref:
                    partials[3, i, j, c] = s * (2.0 * mx / a1 - 2.0 * mx / a2 - 2.0 * my / d1 + 2.0 * my / d2)
                    partials[4, i, j, c] = -s / d2
        ssim_rows[i] = row


@njit(cache=True, parallel=True)
def _combine(blurred, a, b, scale, out, first):
    """out = scale * (B dS/dmu_a + 2 a B dS/dE[a^2] + b B dS/dE[ab]) for one image a (x or y)
    with partner b. blurred [3 or 5, H, W, C]; `first` is the map index of dS/dmu_a (0 or 3),
    its E[a^2] partial follows at first + 1, and dS/dE[ab] is map 2."""
    H, W, C = a.shape
    for i in prange(H):
        for j in range(W):
            for c in range(C):
                out[i, j, c] = scale * (blurred[first, i, j, c] + 2.0 * a[i, j, c] * blurred[first + 1, i, j, c]
                                        + b[i, j, c] * blurred[2, i, j, c])


def _np64(t: Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to(torch.float64).cpu().numpy())


class _DSSIM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, img, ref):
        assert img.shape == ref.shape and img.dim() == 3, (img.shape, ref.shape)
        x, y = _np64(img), _np64(ref)  # [H, W, C]
        H, W, C = x.shape
        g = gaussian_window()
        rows = np.empty((5, H, W, C))
        _moments_rows(x, y, g, rows)
        moments = np.empty_like(rows)
        _blur_cols(rows, g, moments)
        with_ref = bool(ctx.needs_input_grad[1])
        partials = np.empty((5 if with_ref else 3, H, W, C))
        ssim_rows = np.empty(H)
        _ssim_and_partials(moments, C1, C2, with_ref, ssim_rows, partials)
        ctx.saved = (x, y, g, partials, with_ref)
        ctx.dtype = img.dtype
        return torch.tensor(1.0 - ssim_rows.sum() / (H * W * C), dtype=img.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        x, y, g, partials, with_ref = ctx.saved
        H, W, C = x.shape
        scale = -float(grad_out) / (H * W * C)  # dL/dS for every pixel and channel
        tmp = np.empty_like(partials)
        _blur_rows(partials, g, tmp)
        blurred = np.empty_like(partials)
        _blur_cols(tmp, g, blurred)
        v_img = v_ref = None
        if ctx.needs_input_grad[0]:
            out = np.empty((H, W, C))
            _combine(blurred, x, y, scale, out, 0)
            v_img = torch.from_numpy(out).to(ctx.dtype)
        if with_ref:
            out = np.empty((H, W, C))
            _combine(blurred, y, x, scale, out, 3)
            v_ref = torch.from_numpy(out).to(ctx.dtype)
        return v_img, v_ref


def dssim_loss_numba(img: Tensor, ref: Tensor) -> Tensor:
    """(1 - SSIM) of [H, W, C] CPU images as a 0-dim tensor in img's dtype, differentiable
    w.r.t. img (and ref when it requires a gradient). Same value as metrics.dssim_loss."""
    assert img.device.type == "cpu" and ref.device.type == "cpu", (img.device, ref.device)
    return _DSSIM.apply(img, ref)


__all__ = ["dssim_loss_numba", "gaussian_window", "C1", "C2", "WINDOW", "SIGMA"]
