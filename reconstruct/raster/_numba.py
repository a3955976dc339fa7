"""Numba kernels for tile compositing, forward and backward (float64 inside).

Layout: one prange iteration per (camera, tile). Inside a tile the Gaussians are visited in
their depth order and each one only touches the rows its ellipse reaches and, in each row, the
chunks of _LANES pixels that hold the row's span. A chunk is shaded branch-free (out-of-span
pixels masked by selects) with a polynomial exp, so LLVM turns it into one AVX-512 vector of
float64. The per-pixel state (transmittance, negated once done; last contributor; accumulators) lives
in one array S[row, chunk, field, lane] of constant shape: with every field at a constant
offset LLVM can prove the loads and stores of a chunk independent, which it cannot for
separate arrays. Features come in blocks of CHANNELS (the caller splits and pads).

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
from numba import njit, prange, uint64

_FAST = {"contract", "arcp", "nsz", "reassoc", "afn"}
"""LLVM fast-math flags for compositing; not nnan/ninf, so NaN/inf tests stay meaningful."""
_LANES = 8
"""Pixels of a tile row handled together (one AVX-512 register of float64): the row loops run
over whole chunks of this many pixels, branch-free, with the ones outside the ellipse masked."""
MAX_TILE = 16
"""Largest tile side the kernels take (gsplat's 16): the per-tile state has a constant shape."""
CHANNELS = 4
"""Feature channels per kernel call; `kernel_cpu` pads fewer with zeros and splits more into
calls of this many (RGB + depth is one call)."""
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
def _col_ranges(a, b, c, lim, mx, my, x0, y0, pw, i0, i1, spans):
    """For each tile row i in [i0, i1), the columns [spans[i, 0], spans[i, 1]) where power <= lim,
    from the roots of 0.5 a dx^2 + b dy dx + 0.5 c dy^2 - lim = 0 (dx = mx - px, dy = my - py).
    Branch-free over the rows, so the square roots of a Gaussian's rows go in one vector."""
    det = a * c - b * b
    two_a_lim = 2.0 * a * lim
    inv_a = 1.0 / a
    for i in range(i0, i1):
        dy = my - (y0 + i + 0.5)
        disc = two_a_lim - dy * dy * det
        root = math.sqrt(max(disc, 0.0))
        dx_lo = (-b * dy - root) * inv_a
        dx_hi = (-b * dy + root) * inv_a
        j0 = max(int(math.ceil(mx - dx_hi - _MARGIN - 0.5)) - x0, 0)
        j1 = min(int(math.floor(mx - dx_lo + _MARGIN - 0.5)) - x0 + 1, pw)
        spans[i, 0] = j0
        spans[i, 1] = j1 if disc >= 0.0 else 0


@njit(cache=True, inline="always")
def _exp_neg(p):
    """exp(-p) for 0 <= p <= 6 without a libm call, so a row of pixels vectorizes: the Taylor
    series of exp(-p/8) to degree 13, raised to the 8th power by three squarings. Relative
    error below 4e-12 on that range (the compositing only evaluates p <= ln(255 o) <= 5.55)."""
    x = -0.125 * p
    r = 1.0 / 6227020800.0
    r = r * x + 1.0 / 479001600.0
    r = r * x + 1.0 / 39916800.0
    r = r * x + 1.0 / 3628800.0
    r = r * x + 1.0 / 362880.0
    r = r * x + 1.0 / 40320.0
    r = r * x + 1.0 / 5040.0
    r = r * x + 1.0 / 720.0
    r = r * x + 1.0 / 120.0
    r = r * x + 1.0 / 24.0
    r = r * x + 1.0 / 6.0
    r = r * x + 0.5
    r = r * x + 1.0
    r = r * x + 1.0
    r = r * r
    r = r * r
    return r * r


@njit(cache=True, parallel=True, fastmath=_FAST, error_model="numpy")
def composite_forward(
    means2d,  # [G, 2] float64, G = C * N
    conics,  # [G, 3]
    opacities,  # [G]
    features,  # [G, CHANNELS] (the caller pads or splits other channel counts)
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
    out,  # [C, H, W, CHANNELS] float64, written
    T_final,  # [C, H, W] float64, written
    last_ids,  # [C, H, W] int64, written: last contributing intersection, start - 1 if none
):
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
        # S[row, chunk, field, lane]: pixel x = chunk * _LANES + lane of the row; fields 0 = T
        # (negated once the pixel is done: the next Gaussian would bring it to t_min or below),
        # 1 = last contributor (as a float), 2.. = accumulated channels.
        S = np.empty((MAX_TILE, MAX_TILE // _LANES, 2 + CHANNELS, _LANES))  # constant shape: vectorizes
        n_chunks = (pw + _LANES - 1) // _LANES
        for i in range(ph):  # only the tile's rows and chunks are ever read
            for ch in range(n_chunks):
                for lane in range(_LANES):
                    S[i, ch, 0, lane] = 1.0
                    S[i, ch, 1, lane] = start - 1
                    for d in range(CHANNELS):
                        S[i, ch, 2 + d, lane] = 0.0
        spans = np.empty((MAX_TILE, 2), dtype=np.int64)  # each row's column range for one Gaussian
        n_done = 0.0
        n_pix = ph * pw
        for k in range(start, end):
            if n_done >= n_pix:
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
            f0 = features[g, 0]
            f1 = features[g, 1]
            f2 = features[g, 2]
            f3 = features[g, 3]
            lim = math.log(255.0 * o)
            i0, i1 = _row_range(a, b, c, lim, mx, my, y0, ph)
            _col_ranges(a, b, c, lim, mx, my, x0, y0, pw, i0, i1, spans)
            for i in range(i0, i1):
                ui = uint64(i)  # unsigned indices: numba's negative-index wraparound blocks vectorizing
                dy = my - (y0 + i + 0.5)
                j0 = spans[i, 0]
                j1 = spans[i, 1]
                cy = 0.5 * c * dy * dy
                for ch in range(j0 // _LANES, (j1 + _LANES - 1) // _LANES):
                    uc = uint64(ch)
                    stopped = 0.0
                    for lane in range(_LANES):
                        j = ch * _LANES + lane
                        dx = mx - (x0 + j + 0.5)
                        power = 0.5 * a * dx * dx + b * dx * dy + cy
                        alpha = min(alpha_max, o * _exp_neg(min(max(power, 0.0), lim)))
                        Tij = S[ui, uc, 0, lane]
                        next_T = Tij * (1.0 - alpha)
                        hit = ((j >= j0) & (j < j1) & (power >= 0.0) & (power <= lim) & (alpha >= alpha_min)
                               & (Tij > 0.0))
                        stop = hit & (next_T <= t_min)
                        use = hit & (next_T > t_min)
                        stopped += 1.0 if stop else 0.0
                        w = alpha * Tij if use else 0.0
                        S[ui, uc, 0, lane] = next_T if use else (-Tij if stop else Tij)
                        S[ui, uc, 1, lane] = k if use else S[ui, uc, 1, lane]
                        S[ui, uc, 2, lane] += w * f0
                        S[ui, uc, 3, lane] += w * f1
                        S[ui, uc, 4, lane] += w * f2
                        S[ui, uc, 5, lane] += w * f3
                    n_done += stopped
        for i in range(ph):
            for j in range(pw):
                ch = j // _LANES
                lane = j % _LANES
                T_final[cam, y0 + i, x0 + j] = abs(S[i, ch, 0, lane])
                last_ids[cam, y0 + i, x0 + j] = int(S[i, ch, 1, lane])
                for d in range(CHANNELS):
                    out[cam, y0 + i, x0 + j, d] = S[i, ch, 2 + d, lane]


@njit(cache=True, parallel=True, fastmath=_FAST, error_model="numpy")
def composite_backward(
    means2d,  # [G, 2] float64
    conics,  # [G, 3]
    opacities,  # [G]
    features,  # [G, CHANNELS]
    backgrounds,  # [C, CHANNELS] (zeros when there is none)
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
    v_out,  # [C, H, W, CHANNELS] dL/d(composited features, background included)
    v_alpha_pix,  # [C, H, W] dL/d(pixel alpha)
    v_means2d,  # [M, 2] written, per intersection
    v_absgrad,  # [M, 2] written, per intersection: sum over pixels of |dL/d means2d|
    v_conics,  # [M, 3] written
    v_opac,  # [M] written
    v_feat,  # [M, CHANNELS] written
):
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
        # Per-pixel back-to-front state in S[row, chunk, field, lane] (as in the forward):
        # 0 = T, the transmittance after the current Gaussian; 1 = T_final * dL/d(pixel alpha);
        # 2 = last contributor; 3..6 = B, the color of everything behind the current Gaussian
        # (normalized by T), starting from the background; 7..10 = v_out.
        S = np.empty((MAX_TILE, MAX_TILE // _LANES, 3 + 2 * CHANNELS, _LANES))  # constant shape: vectorizes
        spans = np.empty((MAX_TILE, 2), dtype=np.int64)  # each row's column range for one Gaussian
        n_chunks = (pw + _LANES - 1) // _LANES
        k_max = start - 1
        for i in range(ph):
            for j in range(pw, n_chunks * _LANES):  # lanes past the tile's edge: finite, never shaded
                for f in range(3 + 2 * CHANNELS):
                    S[i, j // _LANES, f, j % _LANES] = 0.0
                S[i, j // _LANES, 2, j % _LANES] = start - 1
            for j in range(pw):
                ch = j // _LANES
                lane = j % _LANES
                S[i, ch, 0, lane] = T_final[cam, y0 + i, x0 + j]
                S[i, ch, 1, lane] = T_final[cam, y0 + i, x0 + j] * v_alpha_pix[cam, y0 + i, x0 + j]
                S[i, ch, 2, lane] = last_ids[cam, y0 + i, x0 + j]
                k_max = max(k_max, last_ids[cam, y0 + i, x0 + j])
                for d in range(CHANNELS):
                    S[i, ch, 3 + d, lane] = backgrounds[cam, d]
                    S[i, ch, 3 + CHANNELS + d, lane] = v_out[cam, y0 + i, x0 + j, d]
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
            f0 = features[g, 0]
            f1 = features[g, 1]
            f2 = features[g, 2]
            f3 = features[g, 3]
            lim = math.log(255.0 * o)
            g_mx = 0.0
            g_my = 0.0
            g_absx = 0.0
            g_absy = 0.0
            g_a = 0.0
            g_b = 0.0
            g_c = 0.0
            g_o = 0.0
            gf0 = 0.0
            gf1 = 0.0
            gf2 = 0.0
            gf3 = 0.0
            i0, i1 = _row_range(a, b, c, lim, mx, my, y0, ph)
            _col_ranges(a, b, c, lim, mx, my, x0, y0, pw, i0, i1, spans)
            for i in range(i0, i1):
                ui = uint64(i)
                dy = my - (y0 + i + 0.5)
                j0 = spans[i, 0]
                j1 = spans[i, 1]
                cy = 0.5 * c * dy * dy
                for ch in range(j0 // _LANES, (j1 + _LANES - 1) // _LANES):
                    uc = uint64(ch)
                    for lane in range(_LANES):
                        j = ch * _LANES + lane
                        dx = mx - (x0 + j + 0.5)
                        power = 0.5 * a * dx * dx + b * dx * dy + cy
                        e = _exp_neg(min(max(power, 0.0), lim))
                        alpha = min(alpha_max, o * e)
                        hit = ((j >= j0) & (j < j1) & (power >= 0.0) & (power <= lim) & (alpha >= alpha_min)
                               & (k <= S[ui, uc, 2, lane]))
                        alpha = alpha if hit else 0.0  # a pixel the Gaussian does not shade: state unchanged
                        one_minus = 1.0 - alpha
                        inv = 1.0 / one_minus
                        T_k = S[ui, uc, 0, lane] * inv  # transmittance in front of Gaussian k
                        w = alpha * T_k
                        v0 = S[ui, uc, 7, lane]
                        v1 = S[ui, uc, 8, lane]
                        v2 = S[ui, uc, 9, lane]
                        v3 = S[ui, uc, 10, lane]
                        b0 = S[ui, uc, 3, lane]
                        b1 = S[ui, uc, 4, lane]
                        b2 = S[ui, uc, 5, lane]
                        b3 = S[ui, uc, 6, lane]
                        gf0 += w * v0
                        gf1 += w * v1
                        gf2 += w * v2
                        gf3 += w * v3
                        v_a = (f0 - b0) * v0 + (f1 - b1) * v1 + (f2 - b2) * v2 + (f3 - b3) * v3
                        S[ui, uc, 3, lane] = alpha * f0 + one_minus * b0
                        S[ui, uc, 4, lane] = alpha * f1 + one_minus * b1
                        S[ui, uc, 5, lane] = alpha * f2 + one_minus * b2
                        S[ui, uc, 6, lane] = alpha * f3 + one_minus * b3
                        v_a = v_a * T_k + S[ui, uc, 1, lane] * inv
                        S[ui, uc, 0, lane] = T_k
                        # clamped alpha (o e > alpha_max): no opacity/geometry gradient (Bwd.cu:222)
                        v_a = v_a if hit & (o * e <= alpha_max) else 0.0
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
            v_feat[k, 0] = gf0
            v_feat[k, 1] = gf1
            v_feat[k, 2] = gf2
            v_feat[k, 3] = gf3


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
