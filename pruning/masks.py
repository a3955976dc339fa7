"""Learnable per-Gaussian masks (Compact 3DGS, Lee et al. 2024) as a densification-style strategy.

Each Gaussian i carries a mask logit m_i (a "masks" entry in the parameter dict, with its own
Adam). In the render the hard mask M_i = 1[sigmoid(m_i) > threshold] multiplies the activated
opacity and the activated scale; the gradient flows through it straight-through (as if M_i were
sigmoid(m_i)). The loss term ``lambda_mask * mean(sigmoid(m))`` pushes masks down; Gaussians whose
hard mask is 0 are removed for real (parameters, optimizer state, strategy state) every
``prune_every`` steps, the same way gsplat's densification strategies remove Gaussians.

How a method uses it (training with ``recon train --masks``, or a compression fine-tuning phase)::

    strategy = attach_masks(method, MaskStrategy(lambda_mask=0.02, lr=0.1))   # parameter, modifier,
    train_loop(method, LoopState(), until=600)                                # loss and strategy

It composes with gsplat's DefaultStrategy: that strategy duplicates/splits every entry of the
parameter dict, so the "masks" row follows its Gaussian.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

log = logging.getLogger(__name__)

MASK_KEY = "masks"
"""Name of the mask-logit parameter in the trainer's parameter dict."""


def hard_mask(mask_logits: Tensor, threshold: float) -> Tensor:
    """[N] float mask in {0, 1} whose gradient is that of sigmoid(mask_logits) (straight-through).

    Forward value: 1[sigmoid(m) > threshold]. Backward: d/dm sigmoid(m).
    """
    assert mask_logits.ndim == 1, mask_logits.shape
    return _HardMask.apply(mask_logits, float(threshold))


class _HardMask(torch.autograd.Function):
    """Exactly binary forward (no float round-off from hard + soft - soft), sigmoid' backward."""

    @staticmethod
    def forward(ctx, logits: Tensor, threshold: float) -> Tensor:  # noqa: D102
        soft = torch.sigmoid(logits)
        ctx.save_for_backward(soft)
        return (soft > threshold).to(logits.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: D102
        (soft,) = ctx.saved_tensors
        return grad * soft * (1.0 - soft), None


def apply_masks(params: Any, *, threshold: float = 0.01) -> tuple[Tensor, Tensor]:
    """Activated opacities [N] and scales [N, 3] with the hard mask applied.

    ``params`` holds gsplat-named tensors: "opacities" [N] logits, "scales" [N, 3] log scales and
    "masks" [N] mask logits. Without a "masks" entry the plain activations are returned, so a
    trainer can call this unconditionally.
    """
    opacities = torch.sigmoid(params["opacities"].reshape(-1))
    scales = torch.exp(params["scales"])
    n = opacities.shape[0]
    assert scales.shape == (n, 3), scales.shape
    if MASK_KEY not in params:
        return opacities, scales
    m = hard_mask(params[MASK_KEY].reshape(-1), threshold)
    assert m.shape == (n,), (m.shape, n)
    return opacities * m, scales * m[:, None]


def add_mask_param(
    params: Any,
    optimizers: dict[str, torch.optim.Optimizer],
    *,
    lr: float = 0.01,
    init_logit: float = 2.0,
) -> None:
    """Insert the [N] mask logits (initialized to ``init_logit``, i.e. mask on) and their Adam.

    ``params`` is a torch.nn.ParameterDict (or a dict of Parameters); ``optimizers`` maps each
    parameter name to its own optimizer, as gsplat's strategies expect.
    """
    means = params["means"]
    n = means.shape[0]
    logits = torch.nn.Parameter(torch.full((n,), float(init_logit), device=means.device))
    params[MASK_KEY] = logits
    # eps as in gsplat's simple_trainer; one param group per optimizer.
    optimizers[MASK_KEY] = torch.optim.Adam([{"params": [logits], "lr": lr, "name": MASK_KEY}], eps=1e-15)


@torch.no_grad()
def remove_rows(
    params: Any,
    optimizers: dict[str, torch.optim.Optimizer],
    state: dict[str, Any],
    remove: Tensor,
) -> int:
    """Remove Gaussians where ``remove`` [N] bool is True from params, Adam state and strategy state.

    Kept rows keep their values and their Adam moments unchanged. Returns the number removed.
    Uses gsplat's own ``remove`` when importable (it is pure torch), so state handling matches
    gsplat's densification exactly.
    """
    assert remove.dtype == torch.bool and remove.ndim == 1, (remove.dtype, remove.shape)
    n_removed = int(remove.sum().item())
    if n_removed == 0:
        return 0
    from gsplat.strategy.ops import remove as gsplat_remove

    gsplat_remove(params=params, optimizers=optimizers, state=state, mask=remove)
    return n_removed


@dataclass
class MaskStrategy:
    """Learnable-mask pruning as a strategy of ``reconstruct.splatting.GaussianModel``: the model
    removes the masked rows from the parameters, their Adam state and every strategy's state."""

    lambda_mask: float = 5e-4
    """Weight of the mask loss lambda * mean(sigmoid(m)) (Compact 3DGS uses 5e-4)."""
    threshold: float = 0.01
    """A Gaussian is masked (and later removed) when sigmoid(m) <= threshold."""
    lr: float = 0.01
    """Adam learning rate of the mask logits."""
    prune_every: int = 100
    """Remove masked Gaussians every this many steps."""
    prune_start: int = 0
    """First step at which removal may happen."""
    prune_stop: int = 1_000_000
    """No removal after this step (the hard mask still applies in the render)."""
    keep_min: int = 1
    """Never remove below this many Gaussians (guards a degenerate, all-masked scene)."""
    final_step: int | None = None
    """Also remove masked Gaussians at this step (the run's last), so the saved splats carry no
    Gaussian whose hard mask is off."""
    init_logit: float = 2.0
    """Initial mask logit (sigmoid(2) = 0.88: every Gaussian starts on)."""

    def initialize_state(self, scene_scale: float = 1.0) -> dict[str, Any]:
        """Running state: the number removed so far."""
        return {"n_removed": 0}

    def check_sanity(self, params: Any, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        """The mask logits exist, have one row per Gaussian and their own single-group optimizer."""
        assert MASK_KEY in params, f"params has no '{MASK_KEY}' entry: call add_mask_param first"
        n = params["means"].shape[0]
        assert params[MASK_KEY].shape == (n,), (params[MASK_KEY].shape, n)
        trainable = {k for k, p in params.items() if p.requires_grad}
        assert trainable == set(optimizers.keys()), (trainable, set(optimizers.keys()))
        for opt in optimizers.values():
            assert len(opt.param_groups) == 1, "one param group per optimizer"

    def loss(self, params: Any) -> Tensor:
        """lambda * mean(sigmoid(m)), a scalar to add to the photometric loss."""
        return self.lambda_mask * torch.sigmoid(params[MASK_KEY]).mean()

    def masked(self, params: Any) -> Tensor:
        """[N] bool, True where the hard mask is off."""
        return torch.sigmoid(params[MASK_KEY].detach()) <= self.threshold

    def step_pre_backward(self, model: Any, state: dict, step: int, info: dict) -> None:
        """Nothing to record before backward (no screen-space gradients needed)."""

    def step_post_backward(self, model: Any, state: dict, step: int, info: dict) -> None:
        """Every ``prune_every`` steps in [prune_start, prune_stop], remove the masked Gaussians."""
        final = self.final_step is not None and step == self.final_step
        if not final and (step < self.prune_start or step > self.prune_stop or step % self.prune_every != 0):
            return
        removed = self.prune(model)
        state["n_removed"] = int(state.get("n_removed", 0)) + removed
        if removed:
            state["events"] = {"mask_removed": removed}

    @torch.no_grad()
    def prune(self, model: Any) -> int:
        """Remove all currently masked Gaussians of ``model`` now; returns how many were removed."""
        params = model.params
        remove = self.masked(params)
        if remove.shape[0] - int(remove.sum()) < self.keep_min:
            # Keep the keep_min Gaussians with the highest mask probability.
            order = torch.argsort(params[MASK_KEY].detach(), descending=True)
            remove = torch.ones_like(remove)
            remove[order[: self.keep_min]] = False
        n_removed = model.remove(remove)
        if n_removed:
            log.debug("masks: removed %d Gaussians", n_removed)
        return n_removed


@dataclass
class MaskModifier:
    """Modifier applying the hard mask to the activated opacities and scales."""

    strategy: MaskStrategy

    def __call__(self, gs, ctx):
        params = ctx.params
        if MASK_KEY not in params:
            return gs
        m = hard_mask(params[MASK_KEY].reshape(-1), self.strategy.threshold)
        return gs.replace(opacities=gs.opacities * m, scales=gs.scales * m[:, None])


@dataclass
class MaskLoss:
    """The mask regularizer (lambda * mean(sigmoid(m)))."""

    strategy: MaskStrategy
    name: str = "mask"
    needs_depth: bool = False

    def loss(self, ctx: Any, render: Tensor) -> Tensor:
        return self.strategy.loss(ctx.params)


def attach_masks(method: Any, strategy: MaskStrategy | None = None, *, final_step: int | None = None) -> MaskStrategy:
    """Wire learnable masks into a ``reconstruct.splatting.SplatMethod``: the "masks" parameter and
    its Adam, the render modifier, the loss term and the removal strategy (after the densification
    strategy, so newly split Gaussians inherit their parent's mask logit)."""
    strategy = strategy or MaskStrategy(final_step=final_step)
    model = method.model
    model.add_parameter(MASK_KEY, torch.full((len(model),), float(strategy.init_logit)), strategy.lr)
    model.add_strategy(strategy)
    method.modifiers.append(MaskModifier(strategy))
    method.regularizers.append(MaskLoss(strategy))
    return strategy
