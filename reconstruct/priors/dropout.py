"""DropGaussian: drop random Gaussians from each training render, compensate the survivors.

With rate p, each Gaussian's opacity is multiplied by m / (1 - p), m ~ Bernoulli(1 - p) (what
``nn.Dropout`` does to a vector of ones). The remaining Gaussians must explain the image on their
own, which spreads gradient to Gaussians that sparse views would otherwise leave untouched.
Evaluation renders never see the modifier (the trainer applies modifiers to training renders only).
"""

from __future__ import annotations

import torch

from typing import TYPE_CHECKING

from reconstruct.gaussians import Activated
from reconstruct.priors.config import DropoutConfig

if TYPE_CHECKING:
    from reconstruct.splatting import StepContext


def dropout_rate(cfg: DropoutConfig, step: int, total_steps: int) -> float:
    """The scheduled rate at ``step`` of ``total_steps`` (0 when off)."""
    rate = cfg.rate * min(1.0, step / max(total_steps - 1, 1)) if cfg.progressive else cfg.rate
    return cfg.schedule.weight(step, rate, enabled=cfg.enabled)


def dropout_mask(n: int, rate: float, *, seed: int, step: int, device: torch.device) -> torch.Tensor:
    """[n] float mask: 0 for dropped Gaussians, 1/(1-rate) for kept ones; reproducible per (seed, step)."""
    assert 0.0 <= rate < 1.0, rate
    gen = torch.Generator(device="cpu").manual_seed(int(seed) * 1_000_003 + int(step))
    keep = torch.rand(n, generator=gen) >= rate
    return (keep.float() / (1.0 - rate)).to(device)


class GaussianDropout:
    """Modifier: ``(gs, ctx) -> gs`` with dropped-out, compensated opacities."""

    def __init__(self, cfg: DropoutConfig, seed: int, *, total_steps: int) -> None:
        self.cfg, self.seed, self.total_steps = cfg, seed, total_steps
        self.calls = 0  # several renders in one step (pseudo / binocular views) get different masks
        self._step = -1

    def __call__(self, gs: Activated, ctx: "StepContext") -> Activated:
        step = ctx.step
        rate = dropout_rate(self.cfg, step, self.total_steps)
        if rate <= 0.0:
            return gs
        if step != self._step:  # the k-th render of a step gets the same mask on every run (and resume)
            self._step, self.calls = step, 0
        self.calls += 1
        mask = dropout_mask(len(gs.opacities), rate, seed=self.seed + 7919 * self.calls, step=step,
                            device=gs.opacities.device)
        return gs.replace(opacities=gs.opacities * mask)
