"""Multiresolution hash encoding (Instant-NGP) with one interface and several implementations.

Parameter layout (identical to tiny-cuda-nn's ``HashGrid`` so weights move between them): one
flat float32 vector. Level ``l`` owns ``size_l`` entries of ``F`` features starting at entry
``offset_l`` (entry-major, features contiguous: ``params[(offset_l + i) * F + f]``), where

    scale_l = 2**(l * log2(per_level_scale)) * base_resolution - 1      (float32, as exp2f)
    res_l   = ceil(scale_l) + 1
    size_l  = min(next_multiple(res_l**3, 8), 2**log2_hashmap_size)

A corner ``(x, y, z)`` of level ``l`` is stored at ``x + y*res + z*res**2`` when ``res**3 <=
size_l`` (dense level) and at ``(x ^ y*2654435761 ^ z*805459861) mod 2**32`` otherwise, both
``mod size_l``. An input ``p`` in [0, 1]^3 maps to ``p * scale_l + 0.5``; its floor is the base
corner and the fraction gives the trilinear weights. Output: [N, L*F], level-major.

Implementations (``HashEncoding(..., implementation=...)``):

- ``"tcnn"``: tiny-cuda-nn on CUDA. Not on PyPI; GPU users build it with
  ``pip install git+https://github.com/NVlabs/tiny-cuda-nn/#subdirectory=bindings/torch``
  (needs the CUDA toolkit matching their torch build). Our ``params`` tensor is handed to it.
- ``"torch"``: the project's own: a ``torch.autograd.Function`` whose forward computes, level by
  level, the 8 hashed corner indices and trilinear weights and gathers; whose backward recomputes
  them level by level and scatters ``grad * weight`` into that level's slice with ``index_add_``
  (so one level's table is touched at a time). Works on any device.
- ``"numba"``: the same arithmetic as a compiled CPU kernel: forward parallel over points, backward
  parallel over levels (each level owns a disjoint slice of the gradient, so no races).
- ``"reference"``: plain autograd (gather + sum); for tests and the benchmark only.

``"auto"`` picks tcnn on CUDA when importable, else numba on CPU (it measured faster than the torch
Function there, see ``recon bench nerf``), else torch. Gradients flow to the table only (the NeRF
never differentiates through sample positions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

Implementation = Literal["auto", "tcnn", "torch", "numba", "reference"]

_PRIME_Y = 2654435761
_PRIME_Z = 805459861
_MASK32 = 0xFFFFFFFF


@dataclass(frozen=True)
class HashGridConfig:
    """Shape of the multiresolution hash grid (tiny-cuda-nn ``HashGrid`` fields)."""

    n_levels: int = 16
    """Number of resolution levels L."""
    features_per_level: int = 2
    """Features F stored per grid corner."""
    log2_hashmap_size: int = 19
    """Each level holds at most 2**this entries."""
    base_resolution: int = 16
    """Grid resolution of the coarsest level."""
    per_level_scale: float = 1.3819
    """Resolution growth factor between levels (1.3819 ~ 16 -> 2048 over 16 levels)."""

    def to_tcnn(self) -> dict:
        """The encoding config dict tiny-cuda-nn expects."""
        return {
            "otype": "HashGrid",
            "n_levels": self.n_levels,
            "n_features_per_level": self.features_per_level,
            "log2_hashmap_size": self.log2_hashmap_size,
            "base_resolution": self.base_resolution,
            "per_level_scale": self.per_level_scale,
            "interpolation": "Linear",
        }


@dataclass(frozen=True)
class LevelLayout:
    """Per-level constants (numpy arrays of length L) shared by every implementation."""

    scales: np.ndarray
    """[L] float32 scale_l."""
    resolutions: np.ndarray
    """[L] int64 res_l."""
    sizes: np.ndarray
    """[L] int64 entries in level l."""
    offsets: np.ndarray
    """[L+1] int64 first entry of each level (last = total entries)."""
    dense: np.ndarray
    """[L] bool: level indexed densely (no hashing)."""


def level_layout(cfg: HashGridConfig) -> LevelLayout:
    """The tcnn level table for ``cfg`` (float32 scale arithmetic, as the CUDA code)."""
    log2_scale = np.float32(math.log2(cfg.per_level_scale))
    scales, res, sizes, offsets, dense = [], [], [], [0], []
    for level in range(cfg.n_levels):
        s = np.float32(np.exp2(np.float32(level) * log2_scale) * np.float32(cfg.base_resolution) - np.float32(1.0))
        r = int(np.ceil(s)) + 1
        n = min(r**3, (2**32 - 1) // 2)
        n = (n + 7) // 8 * 8
        n = min(n, 2**cfg.log2_hashmap_size)
        scales.append(s)
        res.append(r)
        sizes.append(n)
        offsets.append(offsets[-1] + n)
        dense.append(r**3 <= n)
    return LevelLayout(
        np.array(scales, np.float32), np.array(res, np.int64), np.array(sizes, np.int64),
        np.array(offsets, np.int64), np.array(dense, bool),
    )


def n_params(cfg: HashGridConfig) -> int:
    """Number of float parameters of the grid (same as tcnn's ``n_params``)."""
    return int(level_layout(cfg).offsets[-1]) * cfg.features_per_level


# Corner c in 0..7 takes +1 along dim d when bit d of c is set (tcnn's loop order).
_CORNERS = np.array([[(c >> d) & 1 for d in range(3)] for c in range(8)], np.int64)  # [8, 3]


def level_corners(x: torch.Tensor, layout: LevelLayout, level: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hashed corner indices [N, 8] int64 (within the level) and trilinear weights [N, 8] of x [N, 3]."""
    scale = float(layout.scales[level])
    pos = x * scale + 0.5  # [N, 3]
    base = torch.floor(pos)
    frac = pos - base
    base = base.long()
    corners = torch.as_tensor(_CORNERS, device=x.device)
    c = base[:, None, :] + corners[None]  # [N, 8, 3]
    cf = corners[None].bool()
    w = torch.where(cf, frac[:, None, :], 1.0 - frac[:, None, :]).prod(-1)  # [N, 8]
    size = int(layout.sizes[level])
    if layout.dense[level]:
        r = int(layout.resolutions[level])
        idx = c[..., 0] + c[..., 1] * r + c[..., 2] * (r * r)
    else:
        idx = c[..., 0] ^ ((c[..., 1] * _PRIME_Y) & _MASK32) ^ ((c[..., 2] * _PRIME_Z) & _MASK32)
    return idx % size, w


class _HashGridFunction(torch.autograd.Function):
    """Own forward/backward: level by level gather, level by level ``index_add_`` scatter."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, params: torch.Tensor, layout: LevelLayout, n_feat: int, level_mask):
        n_levels = len(layout.sizes)
        out = x.new_empty(x.shape[0], n_levels, n_feat)
        table = params.view(-1, n_feat)
        for level in range(n_levels):
            if level_mask is not None and not level_mask[level]:
                out[:, level] = 0.0
                continue
            idx, w = level_corners(x, layout, level)
            feats = table[int(layout.offsets[level]) + idx.reshape(-1)].view(-1, 8, n_feat)  # [N, 8, F]
            out[:, level] = torch.einsum("nc,ncf->nf", w, feats)
        ctx.save_for_backward(x)
        ctx.layout, ctx.n_feat, ctx.level_mask, ctx.n_params = layout, n_feat, level_mask, params.numel()
        return out.view(x.shape[0], n_levels * n_feat)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (x,) = ctx.saved_tensors
        layout, n_feat = ctx.layout, ctx.n_feat
        n_levels = len(layout.sizes)
        grad = grad_out.reshape(x.shape[0], n_levels, n_feat)
        grad_table = grad_out.new_zeros(ctx.n_params // n_feat, n_feat)
        for level in range(n_levels):
            if ctx.level_mask is not None and not ctx.level_mask[level]:
                continue
            idx, w = level_corners(x, layout, level)
            contrib = w[:, :, None] * grad[:, level, None, :]  # [N, 8, F]
            lo, hi = int(layout.offsets[level]), int(layout.offsets[level + 1])
            grad_table[lo:hi].index_add_(0, idx.reshape(-1), contrib.reshape(-1, n_feat))
        return None, grad_table.view(-1), None, None, None


def encode_reference(x: torch.Tensor, params: torch.Tensor, layout: LevelLayout, n_feat: int) -> torch.Tensor:
    """Plain-autograd encoding (gather + weighted sum), [N, 3] -> [N, L*F]; tests and bench only."""
    table = params.view(-1, n_feat)
    outs = []
    for level in range(len(layout.sizes)):
        idx, w = level_corners(x, layout, level)
        feats = table[int(layout.offsets[level]) + idx]  # [N, 8, F]
        outs.append((w[..., None] * feats).sum(1))
    return torch.cat(outs, dim=-1)


def tcnn_available() -> bool:
    """True when tiny-cuda-nn's torch bindings import (never on the project's CPU machines)."""
    try:
        import tinycudann  # noqa: F401
    except Exception:  # ImportError, or a broken CUDA build raising at import
        return False
    return True


class HashEncoding(nn.Module):
    """Multiresolution hash encoding: ``forward(x [N, 3] in [0, 1]) -> [N, L*F]``.

    ``params`` is one flat parameter in tcnn layout; ``state_dict`` is the same whatever the
    implementation. ``level_mask`` ([L] bool, optional) zeroes whole levels (FreeNeRF-style
    frequency masking; masked levels get no gradient).
    """

    def __init__(self, config: HashGridConfig = HashGridConfig(), *, implementation: Implementation = "auto") -> None:
        super().__init__()
        self.config = config
        self.implementation = implementation
        self.layout = level_layout(config)
        total = int(self.layout.offsets[-1]) * config.features_per_level
        # tcnn initializes grid entries uniformly in [-1e-4, 1e-4].
        self.params = nn.Parameter(torch.empty(total).uniform_(-1e-4, 1e-4))
        self._tcnn: dict = {}  # lazily built tcnn module (kept out of the module tree)

    @property
    def n_output_dims(self) -> int:
        return self.config.n_levels * self.config.features_per_level

    def resolve(self, device: torch.device) -> str:
        """Which implementation runs on ``device`` for ``implementation="auto"``."""
        if self.implementation != "auto":
            return self.implementation
        if device.type != "cpu" and torch.cuda.is_available() and tcnn_available():
            return "tcnn"
        if device.type == "cpu":
            return "numba"
        return "torch"

    def forward(self, x: torch.Tensor, level_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [N, 3] in [0, 1] -> [N, L*F]. ``level_mask`` [L] (bool or float weights in [0, 1]): levels
        at 0 are skipped (no lookups, no gradient); fractional weights scale that level's features."""
        assert x.ndim == 2 and x.shape[1] == 3, x.shape
        x = x.float().clamp(0.0, 1.0).contiguous()
        impl = self.resolve(x.device)
        n_feat = self.config.features_per_level
        active = None if level_mask is None else (level_mask > 0)
        if impl == "reference":
            out = encode_reference(x, self.params, self.layout, n_feat)
        elif impl == "torch":
            mask = None if active is None else active.tolist()
            out = _HashGridFunction.apply(x, self.params, self.layout, n_feat, mask)
        elif impl == "numba":
            from reconstruct.nerf.hash_numba import hash_encode_numba

            mask_np = None if active is None else active.cpu().numpy()
            out = hash_encode_numba(x, self.params, self.layout, n_feat, mask_np)
        elif impl == "tcnn":
            out = self._forward_tcnn(x)
        else:
            raise ValueError(f"unknown hash-encoding implementation {impl!r}")
        if level_mask is not None and (impl in ("reference", "tcnn") or bool((level_mask.float() < 1).any())):
            out = out * level_mask.to(out.dtype).to(out.device).repeat_interleave(n_feat)
        return out

    def _forward_tcnn(self, x: torch.Tensor) -> torch.Tensor:
        import tinycudann as tcnn

        if "enc" not in self._tcnn:
            enc = tcnn.Encoding(3, self.config.to_tcnn(), dtype=torch.float32)
            assert enc.params.numel() == self.params.numel(), (enc.params.numel(), self.params.numel())
            self._tcnn["enc"] = enc.to(x.device)
        enc = self._tcnn["enc"]
        enc.params = self.params  # share our flat parameter (same layout)
        return enc(x).float()
