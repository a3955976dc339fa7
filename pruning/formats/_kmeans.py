"""Quantizers used by the SOG writer: a 1-D k-means codebook and a vector k-means palette.

Both are deterministic (fixed seed, stable sorts) so equal splats give equal files.
"""

from __future__ import annotations

import numpy as np


def codebook_1d(values: np.ndarray, k: int = 256, iterations: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """1-D k-means of all ``values`` pooled together.

    values [...] float -> (codebook [k] float32 ascending, labels [...] uint8/uint16 indices).
    Starts from the values' quantiles and runs Lloyd steps on the sorted values (each step is a
    searchsorted against the midpoints plus segment means from a cumulative sum). When the
    values have fewer than ``k`` distinct levels the codebook is those levels, padded with the
    last one, so every value is stored exactly.
    """
    flat = np.asarray(values, np.float64).reshape(-1)
    dtype = np.uint8 if k <= 256 else np.uint16
    if flat.size == 0:
        return np.zeros(k, np.float32), np.zeros(np.shape(values), dtype)
    sorted_v = np.sort(flat)
    unique = np.unique(sorted_v)
    if len(unique) <= k:
        centers = unique
    else:
        qs = (np.arange(k) + 0.5) / k
        centers = np.unique(np.quantile(sorted_v, qs))
        csum = np.concatenate([[0.0], np.cumsum(sorted_v)])
        for _ in range(iterations):
            edges = np.searchsorted(sorted_v, (centers[1:] + centers[:-1]) * 0.5, side="left")
            starts = np.concatenate([[0], edges])
            ends = np.concatenate([edges, [len(sorted_v)]])
            counts = ends - starts
            keep = counts > 0
            new = (csum[ends[keep]] - csum[starts[keep]]) / counts[keep]
            if len(new) == len(centers) and np.array_equal(new, centers):
                break
            centers = np.unique(new)
    codebook = np.full(k, centers[-1], np.float32)
    codebook[:len(centers)] = centers.astype(np.float32)
    return codebook, nearest_1d(codebook, flat).astype(dtype).reshape(np.shape(values))


def nearest_1d(codebook: np.ndarray, values: np.ndarray) -> np.ndarray:
    """codebook [k] ascending, values [M] -> [M] int64 index of the nearest entry."""
    cb = codebook.astype(np.float64)
    idx = np.searchsorted((cb[1:] + cb[:-1]) * 0.5, values, side="right")
    return np.clip(idx, 0, len(cb) - 1)


def _assign(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """points [N, D], centroids [K, D] float32 -> [N] int64 nearest centroid (squared L2),
    computed in row chunks through one matrix product each (a chunk's distances stay ~64 MB)."""
    chunk = max(64, (1 << 24) // max(1, len(centroids)))
    c_sq = (centroids * centroids).sum(axis=1)
    out = np.empty(len(points), np.int64)
    for s in range(0, len(points), chunk):
        p = points[s:s + chunk]
        d = c_sq[None, :] - 2.0 * (p @ centroids.T)  # [chunk, K]; |p|^2 is the same for every k
        out[s:s + chunk] = np.argmin(d, axis=1)
    return out


def kmeans(points: np.ndarray, k: int, iterations: int = 10, seed: int = 0,
           sample: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd k-means: points [N, D] -> (centroids [k, D] float32, labels [N] int64).

    Initial centroids are ``k`` distinct rows drawn with a fixed seed; a cluster that empties
    keeps its previous centroid. ``k`` is clipped to N. The Lloyd steps run on at most
    ``sample * k`` rows drawn with the same seed, then every row is assigned once: each step
    costs about 2 * rows * k * D flops (16k rows x 16k entries x 45 coefficients: ~1 s here).
    """
    pts_all = np.ascontiguousarray(points, np.float32)
    n = len(pts_all)
    k = max(1, min(k, n))
    if n == 0:
        return np.zeros((k, pts_all.shape[1]), np.float32), np.zeros(0, np.int64)
    rng = np.random.default_rng(seed)
    pts = pts_all
    if n > sample * k:
        pts = pts_all[np.sort(rng.choice(n, size=sample * k, replace=False))]
    centroids = pts[np.sort(rng.choice(len(pts), size=k, replace=False))].copy()
    labels = _assign(pts, centroids)
    for _ in range(iterations):
        order = np.argsort(labels, kind="stable")
        counts = np.bincount(labels, minlength=k)
        filled = np.flatnonzero(counts)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[filled]
        sums = np.add.reduceat(pts[order].astype(np.float64), starts, axis=0)  # [filled, D]
        centroids[filled] = (sums / counts[filled, None]).astype(np.float32)
        new_labels = _assign(pts, centroids)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
    return centroids, (labels if pts is pts_all else _assign(pts_all, centroids))
