"""D-SSIM loss (1 - mean SSIM) as fused numba kernels, forward and backward, on CPU.

Same definition as ``reconstruct.metrics.dssim_loss``: an 11x11 Gaussian window (sigma 1.5)
applied as two 1D passes with zero padding ("same" size), K1 = 0.01, K2 = 0.03, the mean
over every pixel and channel. Per channel, with B the zero-padded blur:

    mu_x = B x, mu_y = B y, s_xx = B(x^2) - mu_x^2, s_yy = B(y^2) - mu_y^2, s_xy = B(xy) - mu_x mu_y
    S = (2 mu_x mu_y + c1)(2 s_xy + c2) / ((mu_x^2 + mu_y^2 + c1)(s_xx + s_yy + c2))

Images are planar inside ([C, H, W]), so every pass runs its inner loop over contiguous
pixels of one row and vectorizes. The forward fuses the five products into the horizontal
pass (no stack of five input images) and computes, next to S, the per-pixel partials of S
with respect to the blurred maps. B is symmetric (its transpose is itself, zero padding included), so the backward is
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


@njit(cache=True, inline="always")
def _row_index(t, C, H):
    """(map q, channel c, row i) of flat row t of a [Q, C, H, W] array."""
    return t // (C * H), (t // H) % C, t % H


@njit(cache=True, parallel=True, fastmath={"contract"})
def _blur_rows(src, g, out):
    """Horizontal zero-padded pass: out[q, c, i, j] = sum_k g[k] src[q, c, i, j + k - r].
    src, out [Q, C, H, W] (planar). Each row is copied into a zero-padded local buffer and
    summed into a local accumulator: fixed bounds and no possible aliasing, so it vectorizes."""
    Q, C, H, W = src.shape
    K = g.shape[0]
    r = K // 2
    for t in prange(Q * C * H):
        q, c, i = _row_index(t, C, H)
        pad = np.zeros(W + 2 * r)
        pad[r:r + W] = src[q, c, i]
        acc = np.zeros(W)
        for k in range(K):
            w = g[k]
            for j in range(W):
                acc[j] += w * pad[j + k]
        out[q, c, i, :] = acc


@njit(cache=True, parallel=True, fastmath={"contract"})
def _blur_cols(src, g, out):
    """Vertical zero-padded pass: out[q, c, i, j] = sum_k g[k] src[q, c, i + k - r, j].
    src, out [Q, C, H, W]."""
    Q, C, H, W = src.shape
    K = g.shape[0]
    r = K // 2
    for t in prange(Q * C * H):
        q, c, i = _row_index(t, C, H)
        orow = out[q, c, i]
        orow[:] = 0.0
        for k in range(max(0, r - i), min(K, H + r - i)):
            srow = src[q, c, i + k - r]
            w = g[k]
            for j in range(W):
                orow[j] += w * srow[j]


@njit(cache=True, parallel=True, fastmath={"contract"})
def _moments_rows(x, y, g, out):
    """Horizontal pass of the five SSIM inputs x, y, x^2, y^2, xy, formed on the fly (zero-padded
    local rows, as in ``_blur_rows``). x, y [C, H, W]; out [5, C, H, W]."""
    C, H, W = x.shape
    K = g.shape[0]
    r = K // 2
    for t in prange(C * H):
        c = t // H
        i = t % H
        xp = np.zeros(W + 2 * r)
        yp = np.zeros(W + 2 * r)
        xp[r:r + W] = x[c, i]
        yp[r:r + W] = y[c, i]
        acc = np.zeros((5, W))
        for k in range(K):
            w = g[k]
            for j in range(W):
                xv = xp[j + k]
                yv = yp[j + k]
                acc[0, j] += w * xv
                acc[1, j] += w * yv
                acc[2, j] += w * (xv * xv)
                acc[3, j] += w * (yv * yv)
                acc[4, j] += w * (xv * yv)
        for m in range(5):
            out[m, c, i, :] = acc[m]


@njit(cache=True, parallel=True, fastmath={"contract"})
def _ssim_and_partials(moments, c1, c2, with_ref, ssim_rows, partials):
    """Per-pixel SSIM summed per image row, and its partials w.r.t. the blurred maps.

    moments [5, C, H, W] = B x, B y, B x^2, B y^2, B xy. Writes ssim_rows [C * H] (row sums
    of S) and partials [3 or 5, C, H, W]: dS/d(B x), dS/d(B x^2), dS/d(B xy) and, with_ref,
    dS/d(B y), dS/d(B y^2)."""
    _, C, H, W = moments.shape
    for t in prange(C * H):
        c = t // H
        i = t % H
        row = 0.0
        for j in range(W):
            mx = moments[0, c, i, j]
            my = moments[1, c, i, j]
            sxx = moments[2, c, i, j] - mx * mx
            syy = moments[3, c, i, j] - my * my
            sxy = moments[4, c, i, j] - mx * my
            a1 = 2.0 * mx * my + c1
            a2 = 2.0 * sxy + c2
            d1 = mx * mx + my * my + c1
            d2 = sxx + syy + c2
            s = (a1 * a2) / (d1 * d2)
            row += s
            # S = a1 a2 / (d1 d2); s_xx, s_xy, s_yy depend on mu_x, mu_y as well.
            partials[0, c, i, j] = s * (2.0 * my / a1 - 2.0 * my / a2 - 2.0 * mx / d1 + 2.0 * mx / d2)
            partials[1, c, i, j] = -s / d2
            partials[2, c, i, j] = 2.0 * s / a2
            if with_ref:  # the same for every pixel (a loop-invariant test)
                partials[3, c, i, j] = s * (2.0 * mx / a1 - 2.0 * mx / a2 - 2.0 * my / d1 + 2.0 * my / d2)
                partials[4, c, i, j] = -s / d2
        ssim_rows[t] = row


@njit(cache=True, parallel=True, fastmath={"contract"})
def _combine(blurred, a, b, scale, out, first):
    """out = scale * (B dS/dmu_a + 2 a B dS/dE[a^2] + b B dS/dE[ab]) for one image a (x or y)
    with partner b, all planar [C, H, W]. blurred [3 or 5, C, H, W]; `first` is the map index
    of dS/dmu_a (0 or 3), its E[a^2] partial follows at first + 1, and dS/dE[ab] is map 2."""
    C, H, W = a.shape
    for t in prange(C * H):
        c = t // H
        i = t % H
        for j in range(W):
            out[c, i, j] = scale * (blurred[first, c, i, j] + 2.0 * a[c, i, j] * blurred[first + 1, c, i, j]
                                    + b[c, i, j] * blurred[2, c, i, j])


def _planar64(t: Tensor) -> np.ndarray:
    """[H, W, C] tensor -> contiguous float64 [C, H, W] array."""
    return np.ascontiguousarray(t.detach().to(torch.float64).cpu().permute(2, 0, 1).numpy())


class _DSSIM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, img, ref):
        assert img.shape == ref.shape and img.dim() == 3, (img.shape, ref.shape)
        x, y = _planar64(img), _planar64(ref)  # [C, H, W]
        C, H, W = x.shape
        g = gaussian_window()
        rows = np.empty((5, C, H, W))
        _moments_rows(x, y, g, rows)
        moments = np.empty_like(rows)
        _blur_cols(rows, g, moments)
        with_ref = bool(ctx.needs_input_grad[1])
        partials = np.empty((5 if with_ref else 3, C, H, W))
        ssim_rows = np.empty(C * H)
        _ssim_and_partials(moments, C1, C2, with_ref, ssim_rows, partials)
        ctx.saved = (x, y, g, partials, with_ref)
        ctx.dtype = img.dtype
        return torch.tensor(1.0 - ssim_rows.sum() / (H * W * C), dtype=img.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        x, y, g, partials, with_ref = ctx.saved
        C, H, W = x.shape
        scale = -float(grad_out) / (H * W * C)  # dL/dS for every pixel and channel
        tmp = np.empty_like(partials)
        _blur_rows(partials, g, tmp)
        blurred = np.empty_like(partials)
        _blur_cols(tmp, g, blurred)
        v_img = v_ref = None
        if ctx.needs_input_grad[0]:
            out = np.empty((C, H, W))
            _combine(blurred, x, y, scale, out, 0)
            v_img = torch.from_numpy(out).permute(1, 2, 0).to(ctx.dtype)
        if with_ref:
            out = np.empty((C, H, W))
            _combine(blurred, y, x, scale, out, 3)
            v_ref = torch.from_numpy(out).permute(1, 2, 0).to(ctx.dtype)
        return v_img, v_ref


def dssim_loss_numba(img: Tensor, ref: Tensor) -> Tensor:
    """(1 - SSIM) of [H, W, C] CPU images as a 0-dim tensor in img's dtype, differentiable
    w.r.t. img (and ref when it requires a gradient). Same value as metrics.dssim_loss."""
    assert img.device.type == "cpu" and ref.device.type == "cpu", (img.device, ref.device)
    return _DSSIM.apply(img, ref)


__all__ = ["dssim_loss_numba", "gaussian_window", "C1", "C2", "WINDOW", "SIGMA"]
