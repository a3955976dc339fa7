"""ADMM saliency-grid pruning for hash-grid NeRFs (HollowNeRF, Xie et al. 2023).

A coarse trainable grid G [R, R, R] of logits gates the hash-grid features: a sample at x gets
``features(x) * s(x)`` where s(x) is sigmoid(G) trilinearly interpolated at x. Training solves

    min_G  L(G)   subject to  ||sigmoid(G)||_1 <= budget

with ADMM: an auxiliary Z (the constrained copy of sigmoid(G)) and a scaled dual U. The loss gets
the augmented-Lagrangian penalty ``rho/2 ||sigmoid(G) - Z + U||^2``; every k steps

    Z <- P_budget(sigmoid(G) + U)        (exact Euclidean projection onto the L1 ball)
    U <- U + sigmoid(G) - Z

The projection is the sort-based algorithm of Duchi et al. (2008). Cells whose saliency ends
below a threshold are pruned; hash-table entries that only vertices of pruned cells map to
are never read and can be dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def project_l1_ball(v: Tensor, budget: float) -> Tensor:
    """Euclidean projection of v (any shape) onto {w : ||w||_1 <= budget} (Duchi et al. 2008).

    Exact: sort |v| descending, find the largest j with u_j > (sum_{i<=j} u_i - budget) / j,
    threshold theta = (sum_{i<=rho} u_i - budget) / rho, w = sign(v) * max(|v| - theta, 0).
    """
    assert budget >= 0, budget
    flat = v.reshape(-1)
    a = flat.abs()
    if float(a.sum()) <= budget:
        return v.clone()
    if budget == 0:
        return torch.zeros_like(v)
    u, _ = torch.sort(a.double(), descending=True)
    css = torch.cumsum(u, 0)
    j = torch.arange(1, u.numel() + 1, dtype=torch.float64, device=v.device)
    cond = u - (css - budget) / j > 0
    rho = int(torch.nonzero(cond).max()) + 1
    theta = (css[rho - 1] - budget) / rho
    w = torch.sign(flat.double()) * (a.double() - theta).clamp_min(0.0)
    return w.to(v.dtype).reshape(v.shape)


class SaliencyGrid(torch.nn.Module):
    """Trainable [R, R, R] logit grid; forward samples sigmoid(G) trilinearly at points in [0, 1]^3."""

    keep: Tensor
    """[R, R, R] bool buffer: False in pruned cells."""

    def __init__(self, resolution: int = 32, *, init_logit: float = 2.0) -> None:
        super().__init__()
        assert resolution >= 2, resolution
        self.resolution = int(resolution)
        self.logits = torch.nn.Parameter(torch.full((resolution,) * 3, float(init_logit)))
        self.register_buffer("keep", torch.ones((resolution,) * 3, dtype=torch.bool))

    def saliency(self) -> Tensor:
        """[R, R, R] sigmoid(G), exactly 0 in pruned cells; index order (x, y, z)."""
        return torch.sigmoid(self.logits) * self.keep

    @torch.no_grad()
    def prune(self, kept: Tensor) -> None:
        """Gate the cells outside ``kept`` [R, R, R] bool to exactly zero from now on."""
        assert kept.shape == self.keep.shape, (kept.shape, self.keep.shape)
        self.keep.copy_(kept.to(self.keep.device))

    def forward(self, x01: Tensor) -> Tensor:
        """[N] saliency at x01 [N, 3] in [0, 1]^3 (cell centers at (i + 0.5) / R, clamped at borders)."""
        assert x01.ndim == 2 and x01.shape[1] == 3, x01.shape
        vol = self.saliency()[None, None]  # [1, 1, X, Y, Z]
        # grid_sample wants (x, y, z) mapped to the volume's (W, H, D) = (Z, Y, X) axes.
        g = (x01 * 2.0 - 1.0).flip(-1).reshape(1, -1, 1, 1, 3).to(vol.dtype)
        out = F.grid_sample(vol, g, mode="bilinear", padding_mode="border", align_corners=False)
        return out.reshape(-1)


@dataclass
class ADMMConfig:
    """ADMM pruner settings."""

    budget_fraction: float = 0.25
    """L1 budget as a fraction of the number of grid cells (the constraint ||sigmoid(G)||_1 <= budget)."""
    rho: float = 1e-3
    """Augmented-Lagrangian penalty weight."""
    update_every: int = 20
    """Z/U update interval in steps."""
    start: int = 0
    """First step of the ADMM updates (earlier steps train without the penalty)."""
    prune_threshold: float = 0.05
    """A cell is pruned when its final saliency is below this."""


class ADMMPruner:
    """ADMM state (Z, U) for one SaliencyGrid."""

    def __init__(self, grid: SaliencyGrid, config: ADMMConfig | None = None) -> None:
        self.grid = grid
        self.config = config or ADMMConfig()
        self.budget = self.config.budget_fraction * grid.logits.numel()
        with torch.no_grad():
            s = grid.saliency().detach()
            self.Z = project_l1_ball(s, self.budget)
            self.U = torch.zeros_like(s)

    def penalty(self, step: int) -> Tensor:
        """rho/2 ||sigmoid(G) - Z + U||^2 (zero before ``start``)."""
        s = self.grid.saliency()
        if step < self.config.start:
            return s.sum() * 0.0
        return 0.5 * self.config.rho * ((s - self.Z + self.U) ** 2).sum()

    @torch.no_grad()
    def step(self, step: int) -> bool:
        """Z/U updates every ``update_every`` steps; returns True when an update happened."""
        if step < self.config.start or step % self.config.update_every != 0:
            return False
        s = self.grid.saliency().detach()
        self.Z = project_l1_ball(s + self.U, self.budget)
        self.U = self.U + s - self.Z
        return True

    @torch.no_grad()
    def kept_cells(self) -> Tensor:
        """[R, R, R] bool, True where the saliency is at least the prune threshold."""
        return self.grid.saliency() >= self.config.prune_threshold


@torch.no_grad()
def hash_usage(
    kept: Tensor,
    resolutions: list[int],
    table_sizes: list[int],
    index_fn: Callable[[int, Tensor], Tensor],
    *,
    lo_hi: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None,
    chunk: int = 1 << 21,
) -> list[tuple[int, int]]:
    """Per level, (entries read by vertices of kept cells, table size).

    A hash-grid level of resolution Rl has vertices at integer coordinates 0..Rl (scaled to
    [0, 1] by 1/Rl, or as the encoding defines through ``index_fn``). A sample inside kept
    saliency cell c reads the 8 corners of its level cell, so the vertices read are those of
    level cells that overlap a kept saliency cell. Every such vertex is enumerated (per kept
    cell, chunked) and its table index marked; the enumeration of a level stops early once all
    entries are marked, which is exact and keeps hashed fine levels cheap.

    Args:
        kept: [R, R, R] bool kept saliency cells (x, y, z).
        resolutions: vertex resolution Rl of each level (cells per unit).
        table_sizes: entries of each level's table (dense levels: (Rl+1)^3 or the table size).
        index_fn: (level, ints [M, 3] vertex coordinates) -> [M] int64 table index.
        lo_hi: optional (cells [C, 3] float) -> (lo, hi) [C, 3] int64 inclusive corner ranges of
            each kept cell, for encodings whose corner convention differs from the default
            floor(c / R * res) .. ceil((c + 1) / R * res).
    """
    R = kept.shape[0]
    cells = torch.nonzero(kept).to(torch.float64)  # [C, 3]
    out = []
    for level, (res, size) in enumerate(zip(resolutions, table_sizes)):
        used = torch.zeros(size, dtype=torch.bool)
        if cells.shape[0] == 0:
            out.append((0, size))
            continue
        # Level-cell index range covered by each kept saliency cell.
        if lo_hi is not None:
            lo, hi = lo_hi(cells)
        else:
            lo = torch.floor(cells / R * res).to(torch.int64).clamp(0, res)
            hi = torch.ceil((cells + 1) / R * res).to(torch.int64).clamp(0, res)  # inclusive vertex bound
        ext = int((hi - lo + 1).max())
        off = torch.stack(torch.meshgrid(*(torch.arange(ext),) * 3, indexing="ij"), -1).reshape(-1, 3)
        per_cell = off.shape[0]
        cells_per_chunk = max(1, chunk // per_cell)
        n_used = 0
        for i in range(0, lo.shape[0], cells_per_chunk):
            l, h = lo[i : i + cells_per_chunk], hi[i : i + cells_per_chunk]
            v = l[:, None, :] + off[None]  # [c, P, 3]
            ok = (v <= h[:, None, :]).all(-1)
            v = v[ok]
            used[index_fn(level, v)] = True
            n_used = int(used.sum())
            if n_used == size:
                break
        out.append((n_used, size))
    return out
