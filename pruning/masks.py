"""Learnable per-Gaussian masks (Compact 3DGS, Lee et al. 2024) as a densification-style strategy.

Each Gaussian i carries a mask logit m_i (a "masks" entry in the parameter dict, with its own
Adam). In the render the hard mask M_i = 1[sigmoid(m_i) > threshold] multiplies the activated
opacity and the activated scale; the gradient flows through it straight-through (as if M_i were
sigmoid(m_i)). The loss term ``lambda_mask * mean(sigmoid(m))`` pushes masks down; Gaussians whose
hard mask is 0 are removed for real (parameters, optimizer state, strategy state) every
``prune_every`` steps, the same way gsplat's densification strategies remove Gaussians.

How a trainer uses it (during training or as a fine-tuning phase on a finished run)::

    strategy = MaskStrategy(lambda_mask=5e-4)
    add_mask_param(params, optimizers, lr=strategy.lr)     # once, after the params exist
    state = strategy.initialize_state()
    ...
    opacities, scales = apply_masks(params, threshold=strategy.threshold)   # instead of sigmoid/exp
    render(..., opacities=opacities, scales=scales)
    loss = photometric + strategy.loss(params)
    strategy.step_pre_backward(params, optimizers, state, step, info)
    loss.backward()
    strategy.step_post_backward(params, optimizers, state, step, info)    # may remove Gaussians
    for opt in optimizers.values(): opt.step(); opt.zero_grad()

It composes with gsplat's DefaultStrategy: that strategy duplicates/splits every entry of the
parameter dict, so the "masks" row follows its Gaussian.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

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
    """Learnable-mask pruning with gsplat's strategy interface."""

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
    verbose: bool = False
    """Print one line per removal."""

    final_step: int | None = None
    """Also remove masked Gaussians at this step (the trainer's last), so the saved splats carry no
    Gaussian whose hard mask is off."""
    init_logit: float = 2.0
    """Initial mask logit (sigmoid(2) = 0.88: every Gaussian starts on)."""
    linked_states: Callable[[], list[dict]] | None = field(default=None, repr=False)
    """Returns the running states of the other strategies on the same Gaussians (e.g. gsplat's
    DefaultStrategy grad2d/count/radii): their per-Gaussian tensors are cut with the same rows."""

    def initialize_state(self, **_: Any) -> dict[str, Any]:
        """Running state: counts only (gsplat's remove() also slices any per-Gaussian tensors here)."""
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

    def step_pre_backward(self, params: Any, optimizers: Any, state: dict, step: int, info: dict) -> None:
        """Nothing to record before backward (no screen-space gradients needed)."""

    def step_post_backward(
        self, params: Any, optimizers: dict, state: dict, step: int, info: dict, packed: bool = False
    ) -> None:
        """Every ``prune_every`` steps in [prune_start, prune_stop], remove the masked Gaussians."""
        final = self.final_step is not None and step == self.final_step
        if not final and (step < self.prune_start or step > self.prune_stop or step % self.prune_every != 0):
            return
        self.prune(params, optimizers, state)

    @torch.no_grad()
    def prune(self, params: Any, optimizers: dict, state: dict) -> int:
        """Remove all currently masked Gaussians now; returns how many were removed."""
        remove = self.masked(params)
        n = remove.shape[0]
        if n - int(remove.sum()) < self.keep_min:
            # Keep the keep_min Gaussians with the highest mask probability.
            order = torch.argsort(params[MASK_KEY].detach(), descending=True)
            remove = torch.ones_like(remove)
            remove[order[: self.keep_min]] = False
        n_removed = remove_rows(params, optimizers, state, remove)
        if n_removed and self.linked_states is not None:
            keep = ~remove
            for other in self.linked_states():
                if other is state:
                    continue
                for k, v in list(other.items()):
                    if isinstance(v, Tensor) and v.ndim >= 1 and v.shape[0] == n:
                        other[k] = v[keep.to(v.device)]
        state["n_removed"] = state.get("n_removed", 0) + n_removed
        if self.verbose and n_removed:
            print(f"masks: removed {n_removed} of {n} Gaussians")
        return n_removed


def mask_modifier(strategy: MaskStrategy):
    """A trainer modifier (Activated, params, step) -> Activated applying the hard mask to the
    activated opacities and scales (reconstruct.gaussians.Modifier)."""

    def modify(gs, params, step):
        if MASK_KEY not in params:
            return gs
        m = hard_mask(params[MASK_KEY].reshape(-1), strategy.threshold)
        return gs.replace(opacities=gs.opacities * m, scales=gs.scales * m[:, None])

    return modify


@dataclass
class MaskLoss:
    """The mask regularizer in the trainer's Regularizer shape."""

    strategy: MaskStrategy
    name: str = "mask"
    needs_depth: bool = False

    def loss(self, trainer: Any, view: Any, render: Tensor, step: int) -> Tensor:
        return self.strategy.loss(trainer.params)


def attach_masks(trainer: Any, strategy: MaskStrategy | None = None) -> MaskStrategy:
    """Wire learnable masks into a reconstruct.train.Trainer after ``initialize()``: the "masks"
    parameter and its Adam, the render modifier, the loss term and the removal strategy (run after
    the densification strategy, so newly split Gaussians inherit their parent's mask logit)."""
    strategy = strategy or MaskStrategy(final_step=trainer.cfg.optim.iters - 1)
    # The trainer's list is replaced on restore, so look it up each time.
    strategy.linked_states = lambda: trainer.strategy_states
    n = trainer.params["means"].shape[0]
    trainer.add_parameter(MASK_KEY, torch.full((n,), float(strategy.init_logit)), strategy.lr)
    trainer.strategies.append(strategy)
    trainer.strategy_states.append(strategy.initialize_state())
    trainer.modifiers.append(mask_modifier(strategy))
    trainer.regularizers.append(MaskLoss(strategy))
    return strategy
