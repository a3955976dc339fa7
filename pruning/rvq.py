"""k-means codebooks and residual vector quantization (RVQ), in torch.

RVQ (as used by Compact 3DGS for scale and rotation): S stages, each a codebook of E entries of
dimension D. Encoding is greedy: stage s picks the entry nearest to the residual left by stages
< s; the decoded vector is the sum of the picked entries. Each stage's codebook is initialized
by k-means on the residuals of the previous stages, so the mean squared error never increases
from one stage to the next (a k-means solution is never worse than the single mean, which is
never worse than zero).

During fine-tuning the quantizer sits in the loop with a straight-through estimator
(``x + (q(x) - x).detach()``) and its codebooks follow the data with an exponential moving average
of the vectors assigned to each entry (the VQ-VAE EMA update).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def _nearest(x: Tensor, centers: Tensor, chunk: int = 65536) -> tuple[Tensor, Tensor]:
    """Index [N] (int64) of the nearest center for each row of x [N, D], and the squared distance [N]."""
    assert x.ndim == 2 and centers.ndim == 2 and x.shape[1] == centers.shape[1], (x.shape, centers.shape)
    c2 = (centers * centers).sum(1)  # [K]
    idx_out = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    d_out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for i in range(0, x.shape[0], chunk):
        xc = x[i : i + chunk]
        # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; argmin does not need ||x||^2.
        d = c2[None, :] - 2.0 * (xc @ centers.T)  # [n, K]
        dmin, idx = d.min(1)
        idx_out[i : i + chunk] = idx
        d_out[i : i + chunk] = (dmin + (xc * xc).sum(1)).clamp_min(0.0)
    return idx_out, d_out


@torch.no_grad()
def kmeans(
    x: Tensor,
    k: int,
    *,
    iters: int = 20,
    seed: int = 0,
    weights: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means with k-means++-style seeding on a subsample.

    Args:
        x: [N, D] float data.
        k: number of centers (clamped to N).
        iters: Lloyd iterations.
        seed: seed of the initialization (deterministic for a fixed seed).
        weights: optional [N] nonnegative weights of the rows.

    Returns:
        centers [k, D] (same dtype as x) and assignment [N] int64.
    """
    assert x.ndim == 2, x.shape
    n, d = x.shape
    k = max(1, min(int(k), n))
    x = x.float()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    # k-means++ seeding on at most 20k rows (cost O(sample * k)).
    sample = x[torch.randperm(n, generator=gen)[: min(n, max(20_000, 4 * k))].to(x.device)]
    first = int(torch.randint(sample.shape[0], (1,), generator=gen))
    centers = [sample[first]]
    dist = ((sample - sample[first]) ** 2).sum(1)
    # Batched seeding: add several centers per round once k is large, to bound the cost.
    while len(centers) < k:
        m = min(k - len(centers), max(1, k // 16))
        p = dist.clamp_min(0).cpu().double()
        if float(p.sum()) <= 0.0:
            picks = torch.randint(sample.shape[0], (m,), generator=gen)
        else:
            picks = torch.multinomial(p / p.sum(), m, replacement=True, generator=gen)
        new = sample[picks.to(x.device)]
        centers.extend(list(new))
        dist = torch.minimum(dist, _nearest(sample, new)[1])
    c = torch.stack(centers[:k])
    w = torch.ones(n, device=x.device) if weights is None else weights.float().reshape(n)
    assign = torch.zeros(n, dtype=torch.int64, device=x.device)
    for _ in range(iters):
        assign, _ = _nearest(x, c)
        sums = torch.zeros_like(c).index_add_(0, assign, x * w[:, None])
        counts = torch.zeros(k, device=x.device).index_add_(0, assign, w)
        empty = counts <= 0
        c = torch.where(empty[:, None], c, sums / counts.clamp_min(1e-12)[:, None])
        if bool(empty.any()):
            # Re-seed empty clusters at the worst-fit points.
            _, dcur = _nearest(x, c)
            worst = torch.argsort(dcur, descending=True)[: int(empty.sum())]
            c[empty] = x[worst]
    assign, _ = _nearest(x, c)
    return c, assign


@dataclass
class ResidualVQ:
    """S-stage residual vector quantizer with codebooks [S, E, D]."""

    codebooks: Tensor
    """[S, E, D] float codebook entries, stage-major."""

    @property
    def stages(self) -> int:
        return self.codebooks.shape[0]

    @property
    def entries(self) -> int:
        return self.codebooks.shape[1]

    @property
    def dim(self) -> int:
        return self.codebooks.shape[2]

    @staticmethod
    @torch.no_grad()
    def fit(x: Tensor, *, stages: int = 6, entries: int = 64, iters: int = 15, seed: int = 0) -> "ResidualVQ":
        """k-means initialization stage by stage on the residuals of x [N, D]."""
        assert x.ndim == 2, x.shape
        residual = x.float().clone()
        books = []
        for s in range(stages):
            c, assign = kmeans(residual, entries, iters=iters, seed=seed + s)
            if c.shape[0] < entries:  # fewer rows than entries: pad with copies (never picked twice)
                c = torch.cat([c, c[:1].expand(entries - c.shape[0], -1)], 0)
            books.append(c)
            residual = residual - c[assign]
        return ResidualVQ(torch.stack(books))

    @torch.no_grad()
    def encode(self, x: Tensor, *, stages: int | None = None) -> Tensor:
        """Greedy codes [S, N] int64 for x [N, D] (only the first ``stages`` stages if given)."""
        assert x.ndim == 2 and x.shape[1] == self.dim, (x.shape, self.dim)
        s_use = self.stages if stages is None else stages
        residual = x.float().clone()
        codes = []
        for s in range(s_use):
            idx, _ = _nearest(residual, self.codebooks[s])
            codes.append(idx)
            residual = residual - self.codebooks[s][idx]
        return torch.stack(codes) if codes else torch.zeros((0, x.shape[0]), dtype=torch.int64)

    def decode(self, codes: Tensor) -> Tensor:
        """[N, D] sum over stages of codebooks[s, codes[s]] for codes [S', N] (S' <= S)."""
        assert codes.ndim == 2 and codes.shape[0] <= self.stages, codes.shape
        out = torch.zeros((codes.shape[1], self.dim), dtype=self.codebooks.dtype, device=self.codebooks.device)
        for s in range(codes.shape[0]):
            out = out + self.codebooks[s][codes[s]]
        return out

    def quantize_ste(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(quantized [N, D] with straight-through gradient to x, codes [S, N])."""
        codes = self.encode(x.detach())
        q = self.decode(codes).to(x.dtype)
        return x + (q - x).detach(), codes

    @torch.no_grad()
    def ema_update(self, x: Tensor, codes: Tensor, *, decay: float = 0.9) -> None:
        """Move each used entry toward the mean of the residuals assigned to it (VQ-VAE EMA).

        Stage s sees the residual x - sum_{t<s} codebooks[t, codes[t]]; entries no row picked stay put.
        """
        residual = x.detach().float().clone()
        for s in range(codes.shape[0]):
            book = self.codebooks[s]
            idx = codes[s]
            sums = torch.zeros_like(book).index_add_(0, idx, residual)
            counts = torch.zeros(book.shape[0], device=book.device).index_add_(0, idx, torch.ones_like(idx, dtype=book.dtype))
            used = counts > 0
            mean = sums / counts.clamp_min(1.0)[:, None]
            book[used] = decay * book[used] + (1.0 - decay) * mean[used]
            residual = residual - book[idx]

    def mse(self, x: Tensor, *, stages: int | None = None) -> float:
        """Mean squared error per row (summed over D) of encoding x with the first ``stages`` stages."""
        codes = self.encode(x, stages=stages)
        return float(((self.decode(codes) - x.float()) ** 2).sum(1).mean())


def canonical_quats(q: Tensor) -> Tensor:
    """[N, 4] unit quaternions with w >= 0 (q and -q are the same rotation)."""
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.where(q[:, :1] < 0, -q, q)


@dataclass
class Codebook:
    """Plain vector quantization: a learned codebook [E, D] and fixed per-row indices [N]."""

    entries: Tensor
    """[E, D] codebook (a leaf tensor; set requires_grad to learn it through the render)."""
    index: Tensor
    """[N] int64 entry of each row."""

    @staticmethod
    @torch.no_grad()
    def fit(x: Tensor, *, entries: int = 4096, iters: int = 10, seed: int = 0) -> "Codebook":
        c, assign = kmeans(x, entries, iters=iters, seed=seed)
        return Codebook(c, assign)

    def decode(self) -> Tensor:
        """[N, D] codebook rows of every index (differentiable w.r.t. the entries)."""
        return self.entries[self.index]

    @torch.no_grad()
    def reassign(self, x: Tensor) -> None:
        """Point each row to its nearest entry (x [N, D])."""
        self.index = _nearest(x.float(), self.entries.detach().float())[0]
