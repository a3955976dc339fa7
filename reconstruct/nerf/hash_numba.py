"""Compiled CPU kernel for the hash encoding (numba), same arithmetic as ``level_corners``.

Forward runs in parallel over points (each writes its own output row); backward runs in parallel
over levels: every level owns a disjoint slice of the parameter gradient, so threads never write
the same entry and no atomics are needed. Compiled on first call (cached on disk by numba).
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconstruct.nerf.hash_encoding import LevelLayout


@numba.njit(cache=True, inline="always")
def _corner_index(cx, cy, cz, res, size, dense):
    if dense:
        idx = cx + cy * res + cz * res * res
    else:
        idx = cx ^ ((cy * 2654435761) & 0xFFFFFFFF) ^ ((cz * 805459861) & 0xFFFFFFFF)
    return idx % size


@numba.njit(parallel=True, cache=True)
def _forward(x, table, scales, res, sizes, offsets, dense, active, out):
    n = x.shape[0]
    n_levels = scales.shape[0]
    n_feat = table.shape[1]
    for i in numba.prange(n):
        a = np.zeros(n_feat, np.float32)
        x0, x1, x2 = x[i, 0], x[i, 1], x[i, 2]
        for lv in range(n_levels):
            for f in range(n_feat):
                a[f] = 0.0
            if active[lv]:
                s = scales[lv]
                px = x0 * s + np.float32(0.5)
                py = x1 * s + np.float32(0.5)
                pz = x2 * s + np.float32(0.5)
                bx, by, bz = np.floor(px), np.floor(py), np.floor(pz)
                fx, fy, fz = px - bx, py - by, pz - bz
                ix, iy, iz = np.int64(bx), np.int64(by), np.int64(bz)
                r, size, dn, off = res[lv], sizes[lv], dense[lv], offsets[lv]
                for c in range(8):
                    dx, dy, dz = c & 1, (c >> 1) & 1, (c >> 2) & 1
                    w = (fx if dx else np.float32(1.0) - fx) * (fy if dy else np.float32(1.0) - fy)
                    w = w * (fz if dz else np.float32(1.0) - fz)
                    e = off + _corner_index(ix + dx, iy + dy, iz + dz, r, size, dn)
                    for f in range(n_feat):
                        a[f] += w * table[e, f]
            for f in range(n_feat):
                out[i, lv * n_feat + f] = a[f]


@numba.njit(parallel=True, cache=True, fastmath=False)
def _backward(x, grad_out, scales, res, sizes, offsets, dense, active, grad_table):
    n = x.shape[0]
    n_levels = scales.shape[0]
    n_feat = grad_table.shape[1]
    for lv in numba.prange(n_levels):
        if not active[lv]:
            continue
        s = scales[lv]
        for i in range(n):
            px = x[i, 0] * s + np.float32(0.5)
            py = x[i, 1] * s + np.float32(0.5)
            pz = x[i, 2] * s + np.float32(0.5)
            bx, by, bz = np.floor(px), np.floor(py), np.floor(pz)
            fx, fy, fz = px - bx, py - by, pz - bz
            ix, iy, iz = np.int64(bx), np.int64(by), np.int64(bz)
            for c in range(8):
                dx, dy, dz = c & 1, (c >> 1) & 1, (c >> 2) & 1
                w = (fx if dx else np.float32(1.0) - fx) * (fy if dy else np.float32(1.0) - fy)
                w = w * (fz if dz else np.float32(1.0) - fz)
                e = offsets[lv] + _corner_index(ix + dx, iy + dy, iz + dz, res[lv], sizes[lv], dense[lv])
                for f in range(n_feat):
                    grad_table[e, f] += w * grad_out[i, lv * n_feat + f]


def _consts(layout: "LevelLayout", mask: np.ndarray | None):
    active = np.ones(len(layout.sizes), np.bool_) if mask is None else np.asarray(mask, np.bool_)
    return layout.scales, layout.resolutions, layout.sizes, layout.offsets, layout.dense, active


class _NumbaHashGrid(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, params, layout, n_feat, mask):
        xs = x.detach().numpy()
        table = params.detach().view(-1, n_feat).numpy()
        out = np.empty((xs.shape[0], len(layout.sizes) * n_feat), np.float32)
        _forward(xs, table, *_consts(layout, mask), out)
        ctx.save_for_backward(x)
        ctx.layout, ctx.n_feat, ctx.mask, ctx.n_params = layout, n_feat, mask, params.numel()
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        g = np.ascontiguousarray(grad_out.detach().float().numpy())
        grad_table = np.zeros((ctx.n_params // ctx.n_feat, ctx.n_feat), np.float32)
        _backward(x.numpy(), g, *_consts(ctx.layout, ctx.mask), grad_table)
        return None, torch.from_numpy(grad_table.reshape(-1)), None, None, None


def hash_encode_numba(x: torch.Tensor, params: torch.Tensor, layout: "LevelLayout", n_feat: int,
                      mask: np.ndarray | None = None) -> torch.Tensor:
    """[N, 3] float32 CPU positions in [0, 1] -> [N, L*F] features; gradient to ``params`` only."""
    assert x.device.type == "cpu" and x.dtype == torch.float32, (x.device, x.dtype)
    return _NumbaHashGrid.apply(x.contiguous(), params, layout, n_feat, mask)
