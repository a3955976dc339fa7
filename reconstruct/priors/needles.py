"""Needle penalty: Gaussians whose largest scale is far above their middle one.

A few training views are explained as well by a line segment along a training ray as by a surface
patch: from its own camera the segment is a dot, from anywhere else a streak. Sparse-view runs grow
many of them (DTU scan24, 3 views: 62% of the final splats had a largest-to-middle scale ratio above
10, the median 28; fern 3 views: the median 26). On DTU the penalty bounded the ratio without
raising the test PSNR, so it is a flag, not part of the sparse preset (reconstruct/priors/__init__.py).

Flat discs (two large scales, one small) are what surfaces should be and are left alone: only the
ratio of the largest to the middle scale is penalised,

    L = weight * mean_n max(0, ln s_max(n) - ln s_mid(n) - ln max_ratio)

in log space, so that the gradient does not explode on ratios of 1e5 (which do occur) and a
Gaussian's overall size is not touched. PhysGaussian bounds the ratio of the largest to the smallest
scale in the same hinge form; bounding the middle scale instead keeps discs.
"""

from __future__ import annotations

import math

import torch

from reconstruct.priors.config import NeedleConfig


def needle_excess(log_scales: torch.Tensor, max_ratio: float) -> torch.Tensor:
    """[N] max(0, ln(s_max / s_mid) - ln max_ratio) of log scales [N, 3]."""
    assert log_scales.dim() == 2 and log_scales.shape[1] == 3, log_scales.shape
    assert max_ratio >= 1.0, max_ratio
    ordered = torch.sort(log_scales, dim=1).values  # [N, 3] ascending
    return torch.relu(ordered[:, 2] - ordered[:, 1] - math.log(max_ratio))


class NeedleLoss:
    """Regularizer on the model's log scales (no render)."""

    name = "needles"
    needs_depth = False

    def __init__(self, cfg: NeedleConfig) -> None:
        self.cfg = cfg

    def loss(self, ctx, render: torch.Tensor) -> torch.Tensor | None:
        weight = self.cfg.schedule.weight(ctx.step, self.cfg.weight, enabled=self.cfg.enabled)
        log_scales = ctx.params["scales"]  # [N, 3]
        if weight == 0.0 or len(log_scales) == 0:
            return None
        return weight * needle_excess(log_scales, self.cfg.max_ratio).mean()
