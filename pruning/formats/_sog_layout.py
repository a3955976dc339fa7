"""Where each splat goes in SOG's 2-D textures: the grid size and the texel orders.

Texel ``t`` (row major) of a W x H texture holds splat ``order[t]`` for ``t < N``; the rest is
padding. Orders:

- ``"morton"`` (the default): a 3-D Morton (Z-curve) order of the centers written row by row
  (near in space along a row, not across rows).
- ``"kd"``: a k-d split of the splats onto the grid. The grid rectangle is halved along its
  longer side and the splats of the rectangle are split at the rank that fills the first half, by
  the feature of largest spread among them (the log-transformed positions SOG stores, per axis
  scaled to 0..1); both halves recurse until every rectangle is one texel, so texels near on the
  grid across rows as well as along them hold splats near in space (the simple relative of the
  PLAS sort of Self-Organizing Gaussians), computed level by level for all rectangles at once.
- ``"morton2d"``: the Morton sequence along a 2-D Z-curve over texel coordinates.
- ``"random"``: shuffled (the reference point for size comparisons).
- ``"identity"``: the splats are already in texel order.

Measured on the 22.7k-splat demo run (SH degree 3, splat-transform's 16k palette), bytes a splat
of the whole .sog: morton 20.85, kd 21.05, morton2d 21.19, random 22.79; of the textures alone,
morton 20.18, kd 20.43, kd with the DC colors as three more features 20.33. On the smooth
synthetic 16k-splat ``_scenes.surface_splats`` (SH 0): kd 168.9 kB, morton 171.7 kB.
kd makes the upper position bytes of vertical neighbours alike but loses on
the horizontal ones, which WebP's predictors weigh most; morton stays the default.
"""

from __future__ import annotations

import math

import numpy as np

from scenes.errors import ReconError

from .compressed_ply import morton_order

LAYOUTS = ("morton", "kd", "morton2d", "random")


def grid_size(n: int) -> tuple[int, int]:
    """(width, height) of the textures for ``n`` splats, both multiples of 4."""
    width = max(4, math.ceil(math.sqrt(n) / 4) * 4)
    height = max(4, math.ceil(n / width / 4) * 4)
    return width, height


def _part1by1(v: np.ndarray) -> np.ndarray:
    """Spread the low 16 bits of ``v`` so bit i lands at bit 2i (uint64 arithmetic)."""
    v = v.astype(np.uint64) & np.uint64(0xFFFF)
    for shift, mask in ((8, 0x00FF00FF), (4, 0x0F0F0F0F), (2, 0x33333333), (1, 0x55555555)):
        v = (v | (v << np.uint64(shift))) & np.uint64(mask)
    return v


def _valid(n: int, width: int, r0, r1, c0, c1):
    """Texels of rectangles [r0, r1) x [c0, c1) (arrays) that hold a splat (row-major index < n)."""
    full, rem = n // width, n % width
    rows = np.clip(np.minimum(r1, full) - r0, 0, None) * (c1 - c0)
    last = (r0 <= full) & (full < r1)
    return rows + last * np.clip(np.minimum(c1, rem) - c0, 0, None)


def kd_order(features: np.ndarray, width: int) -> np.ndarray:
    """[N] int64 texel order of a k-d split of ``features`` [N, D] onto a ``width``-wide grid."""
    n = len(features)
    feats = np.asarray(features, np.float64)
    node = np.zeros(n, np.int64)  # rectangle of each splat
    r0, r1 = np.array([0]), np.array([math.ceil(n / width)])
    c0, c1 = np.array([0]), np.array([width])
    while True:
        h, w = r1 - r0, c1 - c0
        if (h * w <= 1).all():
            break
        k = len(r0)
        # split along the longer side (a one-texel rectangle has an empty first half and keeps its splat)
        by_cols = w >= h
        mid_r = np.where(by_cols, r1, r0 + h // 2)
        mid_c = np.where(by_cols, c0 + w // 2, c1)
        first = _valid(n, width, r0, mid_r, c0, mid_c)
        # feature of largest spread within each rectangle
        counts = np.bincount(node, minlength=k).astype(np.float64)
        sums = np.stack([np.bincount(node, feats[:, d], k) for d in range(feats.shape[1])], 1)
        sq = np.stack([np.bincount(node, feats[:, d] ** 2, k) for d in range(feats.shape[1])], 1)
        c = np.maximum(counts, 1.0)[:, None]
        axis = np.argmax(sq / c - (sums / c) ** 2, axis=1)
        key = feats[np.arange(n), axis[node]]
        order = np.lexsort((key, node))
        starts = np.concatenate([[0], np.cumsum(np.bincount(node, minlength=k))[:-1]])
        rank = np.empty(n, np.int64)
        rank[order] = np.arange(n) - starts[node[order]]
        second = rank >= first[node]
        node = 2 * node + second
        # children: first half then second half of every rectangle
        r0 = np.stack([r0, np.where(by_cols, r0, mid_r)], 1).reshape(-1)
        r1 = np.stack([mid_r, r1], 1).reshape(-1)
        c0 = np.stack([c0, np.where(by_cols, mid_c, c0)], 1).reshape(-1)
        c1 = np.stack([mid_c, c1], 1).reshape(-1)
        used = np.bincount(node, minlength=2 * k) > 0  # drop rectangles without splats
        remap = np.cumsum(used) - 1
        node, r0, r1, c0, c1 = remap[node], r0[used], r1[used], c0[used], c1[used]
    cell = r0[node] * width + c0[node]
    out = np.empty(n, np.int64)
    out[cell] = np.arange(n)
    return out


def texel_order(means: np.ndarray, layout: str = "morton", seed: int = 0) -> np.ndarray:
    """[N] int64: texel t holds splat ``order[t]``, for [N, 3] centers."""
    n = len(means)
    if layout == "identity":  # splats already in texel order
        return np.arange(n, dtype=np.int64)
    if layout == "random":
        return np.random.default_rng(seed).permutation(n).astype(np.int64)
    width, _ = grid_size(n)
    if layout == "kd":
        m = np.asarray(means, np.float64)
        lt = np.sign(m) * np.log1p(np.abs(m))
        span = lt.max(0) - lt.min(0)
        return kd_order((lt - lt.min(0)) / np.where(span > 0, span, 1.0), width)
    seq = morton_order(means)
    if layout == "morton":
        return seq
    if layout != "morton2d":
        raise ReconError(None, f"unknown SOG layout {layout!r} (one of {', '.join(LAYOUTS)})")
    cells = np.arange(n, dtype=np.int64)
    z = _part1by1(cells % width) | (_part1by1(cells // width) << np.uint64(1))
    order = np.empty(n, np.int64)
    order[np.argsort(z, kind="stable")] = seq  # the i-th cell along the 2-D curve gets seq[i]
    return order
