"""Numba kernels for tile compositing, forward and backward (float64 inside).

Layout: one prange iteration per (camera, tile). Inside a tile the Gaussians are visited in
their depth order and each one only touches the pixels of its bounding box (clipped to the
tile), with per-pixel state (transmittance, done flag, accumulators) in small local arrays.

Every (tile, Gaussian) intersection k owns row k of the gradient buffers, so tiles never
write to the same memory; the caller sums rows into Gaussians with one ``index_add_``.

Shading rules, gsplat 1.5.3's (RasterizeToPixels3DGSFwd.cu:145-168, Bwd.cu:173-237), the
same in both passes: alpha = min(ALPHA_MAX = 0.999, o exp(-power)); skipped when power < 0
or alpha < ALPHA_MIN = 1/255 (power > ln(255 o) is that test done before calling exp). A
pixel stops at the first Gaussian that would bring its transmittance to <= T_MIN = 1e-4;
that Gaussian is excluded. Where o exp(-power) > 0.999 the alpha is the constant clamp, so
that pixel passes no gradient to the opacity, conic or mean (only to the color).

The three constants come in as arguments (``alpha_min, alpha_max, t_min``), not as globals:
numba's on-disk cache keys on this file only, so a global imported from ``projection`` would
stay frozen at its value from the first compile.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

_FAST = {"contract", "arcp", "nsz", "reassoc", "afn"}
"""LLVM fast-math flags for compositing; not nnan/ninf, so NaN/inf tests stay meaningful."""
_MARGIN = 1e-3
"""Pixels this close (in px) outside the analytic ellipse are still tested exactly."""


@njit(cache=True, inline="always")
def _row_range(a, b, c, lim, mx, my, y0, ph):
    """Tile rows [i0, i1) where the ellipse power <= lim reaches a pixel center:
    |dy| <= sqrt(2 lim a / (a c - b^2)) (= sqrt(2 lim) times the 2D std along y)."""
    det = a * c - b * b
    if det <= 0.0 or a <= 0.0:
        return 0, 0
    reach = math.sqrt(2.0 * lim * a / det) + _MARGIN
    i0 = max(int(math.ceil(my - reach - 0.5)) - y0, 0)
    i1 = min(int(math.floor(my + reach - 0.5)) - y0 + 1, ph)
    return i0, i1


@njit(cache=True, inline="always")
def _col_range(a, b, c, lim, mx, dy, x0, pw):
    """Tile columns [j0, j1) of one row (offset dy = my - py) where power <= lim, from the
    roots of 0.5 a dx^2 + b dy dx + 0.5 c dy^2 - lim = 0 (dx = mx - px)."""
    disc = 2.0 * a * lim - dy * dy * (a * c - b * b)
    if disc < 0.0:
        return 0, 0
    root = math.sqrt(disc)
    dx_lo = (-b * dy - root) / a
    dx_hi = (-b * dy + root) / a
    j0 = max(int(math.ceil(mx - dx_hi - _MARGIN - 0.5)) - x0, 0)
    j1 = min(int(math.floor(mx - dx_lo + _MARGIN - 0.5)) - x0 + 1, pw)
    return j0, j1


@njit(cache=True, parallel=True, fastmath=_FAST)
def composite_forward(
    means2d,  # [G, 2] float64, G = C * N
    conics,  # [G, 3]
    opacities,  # [G]
    features,  # [G, D]
    offsets,  # [C * th * tw + 1] int64, last entry = M
    flatten_ids,  # [M] int64
    width,
    height,
    tile_size,
    tile_width,
    tile_height,
    alpha_min,  # ALPHA_MIN = 1/255
    alpha_max,  # ALPHA_MAX = 0.999
    t_min,  # T_MIN = 1e-4
    out,  # [C, H, W, D] float64, written
    T_final,  # [C, H, W] float64, written
    last_ids,  # [C, H, W] int64, written: last contributing intersection, start - 1 if none
):
    D = features.shape[1]
    n_tiles = offsets.shape[0] - 1
    per_cam = tile_width * tile_height
    for t in prange(n_tiles):
        cam = t // per_cam
        ty = (t % per_cam) // tile_width
        tx = t % tile_width
        x0 = tx * tile_size
        y0 = ty * tile_size
        pw = min(tile_size, width - x0)
        ph = min(tile_size, height - y0)
        start = offsets[t]
        end = offsets[t + 1]
        T = np.ones((ph, pw))
        acc = np.zeros((ph, pw, D))
        last = np.full((ph, pw), start - 1, dtype=np.int64)
        done = np.zeros((ph, pw), dtype=np.bool_)
        n_done = 0
        n_pix = ph * pw
        for k in range(start, end):
            if n_done == n_pix:
                break
            g = flatten_ids[k]
            mx = means2d[g, 0]
            my = means2d[g, 1]
            a = conics[g, 0]
            b = conics[g, 1]
            c = conics[g, 2]
            o = opacities[g]
            if o < alpha_min:
                continue
            lim = math.log(255.0 * o)
            i0, i1 = _row_range(a, b, c, lim, mx, my, y0, ph)
            for i in range(i0, i1):
                dy = my - (y0 + i + 0.5)
                j0, j1 = _col_range(a, b, c, lim, mx, dy, x0, pw)
                for j in range(j0, j1):
                    if done[i, j]:
                        continue
                    dx = mx - (x0 + j + 0.5)
                    power = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
                    if power < 0.0 or power > lim:
                        continue
                    alpha = min(alpha_max, o * math.exp(-power))
                    if alpha < alpha_min:
                        continue
                    next_T = T[i, j] * (1.0 - alpha)
                    if next_T <= t_min:
                        done[i, j] = True
                        n_done += 1
                        continue
                    w = alpha * T[i, j]
                    for d in range(D):
                        acc[i, j, d] += w * features[g, d]
                    T[i, j] = next_T
                    last[i, j] = k
        for i in range(ph):
            for j in range(pw):
                T_final[cam, y0 + i, x0 + j] = T[i, j]
                last_ids[cam, y0 + i, x0 + j] = last[i, j]
                for d in range(D):
                    out[cam, y0 + i, x0 + j, d] = acc[i, j, d]


@njit(cache=True, parallel=True, fastmath=_FAST)
def composite_backward(
    means2d,  # [G, 2] float64
    conics,  # [G, 3]
    opacities,  # [G]
    features,  # [G, D]
    backgrounds,  # [C, D] (zeros when there is none)
    offsets,  # [C * th * tw + 1] int64
    flatten_ids,  # [M] int64
    width,
    height,
    tile_size,
    tile_width,
    tile_height,
    alpha_min,
    alpha_max,
    t_min,
    T_final,  # [C, H, W] from the forward
    last_ids,  # [C, H, W] from the forward
    v_out,  # [C, H, W, D] dL/d(composited features, background included)
    v_alpha_pix,  # [C, H, W] dL/d(pixel alpha)
    v_means2d,  # [M, 2] written, per intersection
    v_absgrad,  # [M, 2] written, per intersection: sum over pixels of |dL/d means2d|
    v_conics,  # [M, 3] written
    v_opac,  # [M] written
    v_feat,  # [M, D] written
):
    D = features.shape[1]
    n_tiles = offsets.shape[0] - 1
    per_cam = tile_width * tile_height
    for t in prange(n_tiles):
        cam = t // per_cam
        ty = (t % per_cam) // tile_width
        tx = t % tile_width
        x0 = tx * tile_size
        y0 = ty * tile_size
        pw = min(tile_size, width - x0)
        ph = min(tile_size, height - y0)
        start = offsets[t]
        # Per-pixel back-to-front state: T = transmittance after the current Gaussian,
        # B = color of everything behind it (normalized by T), starting from the background.
        T = np.empty((ph, pw))
        B = np.empty((ph, pw, D))
        V = np.empty((ph, pw, D))  # v_out of the tile
        TA = np.empty((ph, pw))  # T_final * dL/d(pixel alpha)
        last = np.empty((ph, pw), dtype=np.int64)
        f = np.empty(D)
        gf = np.empty(D)
        k_max = start - 1
        for i in range(ph):
            for j in range(pw):
                T[i, j] = T_final[cam, y0 + i, x0 + j]
                TA[i, j] = T[i, j] * v_alpha_pix[cam, y0 + i, x0 + j]
                last[i, j] = last_ids[cam, y0 + i, x0 + j]
                k_max = max(k_max, last[i, j])
                for d in range(D):
                    B[i, j, d] = backgrounds[cam, d]
                    V[i, j, d] = v_out[cam, y0 + i, x0 + j, d]
        for k in range(k_max, start - 1, -1):
            g = flatten_ids[k]
            mx = means2d[g, 0]
            my = means2d[g, 1]
            a = conics[g, 0]
            b = conics[g, 1]
            c = conics[g, 2]
            o = opacities[g]
            if o < alpha_min:
                continue
            lim = math.log(255.0 * o)
            g_mx = 0.0
            g_my = 0.0
            g_absx = 0.0
            g_absy = 0.0
            g_a = 0.0
            g_b = 0.0
            g_c = 0.0
            g_o = 0.0
            for d in range(D):
                f[d] = features[g, d]
                gf[d] = 0.0
            i0, i1 = _row_range(a, b, c, lim, mx, my, y0, ph)
            for i in range(i0, i1):
                dy = my - (y0 + i + 0.5)
                j0, j1 = _col_range(a, b, c, lim, mx, dy, x0, pw)
                for j in range(j0, j1):
                    if k > last[i, j]:
                        continue
                    dx = mx - (x0 + j + 0.5)
                    power = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
                    if power < 0.0 or power > lim:
                        continue
                    e = math.exp(-power)
                    raw = o * e
                    alpha = min(alpha_max, raw)
                    if alpha < alpha_min:
                        continue
                    one_minus = 1.0 - alpha
                    T_k = T[i, j] / one_minus  # transmittance in front of Gaussian k
                    w = alpha * T_k
                    v_a = 0.0
                    for d in range(D):
                        vo = V[i, j, d]
                        gf[d] += w * vo
                        v_a += (f[d] - B[i, j, d]) * vo
                        B[i, j, d] = alpha * f[d] + one_minus * B[i, j, d]
                    v_a = v_a * T_k + TA[i, j] / one_minus
                    T[i, j] = T_k
                    if raw <= alpha_max:  # clamped alpha: no opacity/geometry gradient (Bwd.cu:222)
                        g_o += e * v_a
                        v_power = -alpha * v_a
                        g_a += 0.5 * dx * dx * v_power
                        g_b += dx * dy * v_power
                        g_c += 0.5 * dy * dy * v_power
                        gx = (a * dx + b * dy) * v_power
                        gy = (c * dy + b * dx) * v_power
                        g_mx += gx
                        g_my += gy
                        g_absx += abs(gx)
                        g_absy += abs(gy)
            v_means2d[k, 0] = g_mx
            v_means2d[k, 1] = g_my
            v_absgrad[k, 0] = g_absx
            v_absgrad[k, 1] = g_absy
            v_conics[k, 0] = g_a
            v_conics[k, 1] = g_b
            v_conics[k, 2] = g_c
            v_opac[k] = g_o
            for d in range(D):
                v_feat[k, d] = gf[d]


@njit(cache=True, inline="always")
def _tile_rect(mx, my, rx, ry, tile_size, tile_width, tile_height):
    """Tiles [x0, x1) x [y0, y1) touched by a bounding box (gsplat's rounding)."""
    tmx = mx / tile_size
    tmy = my / tile_size
    trx = rx / tile_size
    try_ = ry / tile_size
    x0 = min(max(int(math.floor(tmx - trx)), 0), tile_width)
    x1 = min(max(int(math.ceil(tmx + trx)), 0), tile_width)
    y0 = min(max(int(math.floor(tmy - try_)), 0), tile_height)
    y1 = min(max(int(math.ceil(tmy + try_)), 0), tile_height)
    return x0, x1, y0, y1


@njit(cache=True)
def bin_tiles(means2d, radii, order, tile_size, tile_width, tile_height):
    """Counting sort of (camera, tile, depth) intersections.

    means2d [C, N, 2] float64, radii [C, N, 2] int32, order [C, N] int64 (each camera's
    Gaussians sorted by depth, stable). Returns
    offsets [C * th * tw + 1] int64, flatten_ids [M] int64 (c * N + n) and tiles_per_gauss
    [C, N] int64. Gaussians are visited in stable depth order per camera, so each tile's run
    comes out front to back with ties in index order.
    """
    C, N = order.shape
    n_tiles = tile_width * tile_height
    counts = np.zeros(C * n_tiles + 1, dtype=np.int64)
    tiles_per_gauss = np.zeros((C, N), dtype=np.int64)
    for cam in range(C):
        for n in range(N):
            if radii[cam, n, 0] <= 0 or radii[cam, n, 1] <= 0:
                continue
            x0, x1, y0, y1 = _tile_rect(means2d[cam, n, 0], means2d[cam, n, 1], radii[cam, n, 0],
                                        radii[cam, n, 1], tile_size, tile_width, tile_height)
            tiles_per_gauss[cam, n] = (x1 - x0) * (y1 - y0)
            for ty in range(y0, y1):
                for tx in range(x0, x1):
                    counts[cam * n_tiles + ty * tile_width + tx + 1] += 1
    offsets = np.cumsum(counts)
    flatten_ids = np.empty(offsets[-1], dtype=np.int64)
    cursor = offsets[:-1].copy()
    for cam in range(C):
        for n in order[cam]:
            if radii[cam, n, 0] <= 0 or radii[cam, n, 1] <= 0:
                continue
            x0, x1, y0, y1 = _tile_rect(means2d[cam, n, 0], means2d[cam, n, 1], radii[cam, n, 0],
                                        radii[cam, n, 1], tile_size, tile_width, tile_height)
            for ty in range(y0, y1):
                for tx in range(x0, x1):
                    t = cam * n_tiles + ty * tile_width + tx
                    flatten_ids[cursor[t]] = cam * N + n
                    cursor[t] += 1
    return offsets, flatten_ids, tiles_per_gauss
