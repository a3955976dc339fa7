"""Codebooks in the training loop: RVQ for scale and rotation, k-means codebooks for SH colors.

``SplatQuantizer`` is built from a trained parameter dict and then used as a render modifier
during a short fine-tuning phase:

- scales: log scales [N, 3] -> RVQ (stages x entries, default 6 x 64), straight-through; the
  per-Gaussian log scales keep learning, the codebooks follow them by EMA;
- rotations: canonical unit quaternions [N, 4] (w >= 0) -> RVQ, same scheme;
- colors: sh0 [N, 3] and shN [N, (K-1)*3] each replaced by a k-means codebook (default 4096
  entries) with fixed per-Gaussian indices; the codebook entries themselves are learned through
  the render (Adam), so the colors adapt to the quantized geometry;
- positions and opacities are stored as float16 (``encode``), nothing to learn.

``encode(params)`` gives the CompactSplats written by pruning.artifact (codebooks as float16,
rows in Morton order so zstd sees neighbouring positions together).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pruning.artifact import Attribute, CompactSplats
from pruning.rvq import Codebook, ResidualVQ, canonical_quats


@dataclass
class QuantizeConfig:
    """Codebook sizes and their training."""

    scale_stages: int = 6
    """RVQ stages for the log scales."""
    scale_entries: int = 64
    """Entries per RVQ stage for the log scales."""
    rot_stages: int = 6
    """RVQ stages for the rotations."""
    rot_entries: int = 64
    """Entries per RVQ stage for the rotations."""
    sh0_entries: int = 4096
    """k-means codebook entries for the DC color (0 = keep float16 per Gaussian)."""
    shN_entries: int = 4096
    """k-means codebook entries for the higher SH bands (0 = keep float16 per Gaussian)."""
    sh0_max_fraction: float = 0.25
    """The DC codebook never has more entries than this fraction of the Gaussians."""
    shN_max_fraction: float = 1 / 32
    """The higher-band codebook never has more entries than this fraction of the Gaussians: an entry
    is 3(K-1) float16 values (90 bytes at degree 3) against 2 bytes an index, so on the 10k-100k
    Gaussians of a sparse-view scene a 4096-entry codebook would outweigh everything else."""
    kmeans_iters: int = 10
    """Lloyd iterations of every codebook initialization."""
    ema_decay: float = 0.8
    """EMA decay of the RVQ codebooks per fine-tuning step."""
    codebook_lr: float = 2.5e-3
    """Adam learning rate of the color codebook entries (sh0; shN uses a 20th, as 3DGS)."""
    seed: int = 0
    """Seed of the k-means initializations."""


def morton_order(means: np.ndarray, bits: int = 10) -> np.ndarray:
    """[N] permutation sorting points along a 3D Morton (Z-order) curve of their bounding box."""
    lo, hi = means.min(0), means.max(0)
    q = ((means - lo) / np.maximum(hi - lo, 1e-12) * (2**bits - 1)).astype(np.uint64)
    code = np.zeros(len(means), np.uint64)
    for b in range(bits):
        for axis in range(3):
            code |= ((q[:, axis] >> np.uint64(b)) & np.uint64(1)) << np.uint64(3 * b + axis)
    return np.argsort(code, kind="stable")


class SplatQuantizer:
    """Codebooks for one set of Gaussians (the row count must not change while it is in use)."""

    def __init__(self, params, config: QuantizeConfig | None = None) -> None:
        cfg = self.config = config or QuantizeConfig()
        with torch.no_grad():
            n = params["means"].shape[0]
            self.n = n
            dev = params["means"].device
            self.scale_rvq = ResidualVQ.fit(params["scales"].detach(), stages=cfg.scale_stages,
                                            entries=cfg.scale_entries, iters=cfg.kmeans_iters, seed=cfg.seed)
            self.rot_rvq = ResidualVQ.fit(canonical_quats(params["quats"].detach()), stages=cfg.rot_stages,
                                          entries=cfg.rot_entries, iters=cfg.kmeans_iters, seed=cfg.seed + 100)
            self.books: dict[str, Codebook] = {}
            for name, entries, frac in (("sh0", cfg.sh0_entries, cfg.sh0_max_fraction),
                                        ("shN", cfg.shN_entries, cfg.shN_max_fraction)):
                x = params[name].detach().reshape(n, -1)
                cap = max(16, int(frac * n))
                if entries > 0 and x.shape[1] > 0:
                    book = Codebook.fit(x, entries=min(entries, cap), iters=cfg.kmeans_iters, seed=cfg.seed + 200)
                    book.entries = torch.nn.Parameter(book.entries.to(dev))
                    self.books[name] = book
        self.optimizer = None
        if self.books:
            groups = [{"params": [b.entries], "lr": cfg.codebook_lr / (20.0 if name == "shN" else 1.0), "name": name}
                      for name, b in self.books.items()]
            self.optimizer = torch.optim.Adam(groups, eps=1e-15)

    def trainable_names(self) -> list[str]:
        """Per-Gaussian parameters that stay trainable (colors are replaced by their codebooks)."""
        return [k for k in ("means", "quats", "scales", "opacities", "sh0", "shN") if k not in self.books]

    def colors(self, params) -> Tensor:
        """[N, K, 3] SH coefficients with the codebook colors substituted."""
        n = params["means"].shape[0]
        sh0 = self.books["sh0"].decode().reshape(n, 1, 3) if "sh0" in self.books else params["sh0"]
        shN = self.books["shN"].decode().reshape(n, -1, 3) if "shN" in self.books else params["shN"]
        return torch.cat([sh0, shN], 1)

    def modifier(self, gs, ctx):
        """Render modifier (reconstruct.splatting.Modifier): quantized scales, rotations and colors.

        It replaces the scales, so a mask modifier has to come after it."""
        params = ctx.params
        assert params["means"].shape[0] == self.n, "the Gaussian count changed under the quantizer"
        log_s, _ = self.scale_rvq.quantize_ste(params["scales"])
        quats, _ = self.rot_rvq.quantize_ste(canonical_quats(params["quats"]))
        return gs.replace(scales=torch.exp(log_s), quats=quats, colors=self.colors(params))

    @torch.no_grad()
    def after_step(self, ctx) -> None:
        """Codebook updates once the per-Gaussian parameters have stepped: RVQ EMA, color Adam."""
        params = ctx.params
        d = self.config.ema_decay
        x = params["scales"].detach()
        self.scale_rvq.ema_update(x, self.scale_rvq.encode(x), decay=d)
        q = canonical_quats(params["quats"].detach())
        self.rot_rvq.ema_update(q, self.rot_rvq.encode(q), decay=d)
        if self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def encode(self, params) -> CompactSplats:
        """The compact form (float16 codebooks; indices chosen against the float16 values), Morton-sorted."""
        n = params["means"].shape[0]
        order_np = morton_order(params["means"].detach().cpu().numpy())
        order = torch.as_tensor(order_np, device=params["means"].device)

        def rows(t: Tensor) -> np.ndarray:
            return t.detach()[order].reshape(n, -1).float().cpu().numpy()

        def rvq_attr(rvq: ResidualVQ, x: Tensor) -> Attribute:
            half = ResidualVQ(rvq.codebooks.half().float())
            return Attribute.rvq(half.encode(x[order]).cpu().numpy(), half.codebooks.cpu().numpy())

        attrs = {
            "means": Attribute.raw(rows(params["means"])),
            "opacities": Attribute.raw(rows(params["opacities"])),
            "scales": rvq_attr(self.scale_rvq, params["scales"].detach().float()),
            "quats": rvq_attr(self.rot_rvq, canonical_quats(params["quats"].detach().float())),
        }
        for name in ("sh0", "shN"):
            if name in self.books:
                b = self.books[name]
                attrs[name] = Attribute.vq(b.index[order].cpu().numpy(), b.entries.detach().half().cpu().numpy())
            else:
                attrs[name] = Attribute.raw(rows(params[name]))
        degree = int(round(np.sqrt(params["shN"].shape[1] + 1))) - 1
        return CompactSplats(degree, attrs)
