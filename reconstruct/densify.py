"""Densification: gsplat's DefaultStrategy as a strategy of ``reconstruct.splatting.GaussianModel``,
within a Gaussian budget and with an account of what every refinement did.

Each refinement step reports, in the strategy state's ``events``, how many Gaussians were
duplicated, split and pruned (gsplat's own counts; ``densify_unseen``: pruned because no training
render drew them; ``densify_near``: pruned because a training render drew them closer than the
scene's near bound), and an opacity reset is reported too, so a run
whose Gaussian count collapses shows which mechanism removed them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from gsplat.strategy import DefaultStrategy
from gsplat.strategy.ops import remove

from reconstruct.config import DensifyConfig


class CountingDefaultStrategy(DefaultStrategy):
    """gsplat's DefaultStrategy with a Gaussian budget, keeping the counts its grow and prune steps
    return. Under the budget it is gsplat's, unchanged; a refinement that would grow beyond
    ``budget`` grows only the candidates with the largest averaged image-plane gradients (the
    gradient threshold raised to the one that leaves room for them), then prunes as usual; with
    ``prune_unseen`` it also prunes what no training render drew since the last refinement; with
    ``near`` what a training render drew closer to its camera than that depth (``state["near_hits"]``,
    filled by ``Densify.step_post_backward``)."""

    def __init__(self, *, budget: int | None = None, regrow_at_budget: bool = True, prune_unseen: bool = False,
                 near: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.budget, self.regrow_at_budget = budget, regrow_at_budget
        self.prune_unseen = prune_unseen
        self.near = near
        self.counts: dict[str, int] = {}

    def _grow_gs(self, params, optimizers, state, step):  # type: ignore[no-untyped-def]
        threshold = self.grow_grad2d
        if not self.regrow_at_budget and state.get("capped_at", -1) >= 0:
            self.counts.update(densify_duplicated=0, densify_split=0)
            return 0, 0
        if self.budget is not None:
            grads = state["grad2d"] / state["count"].clamp_min(1)  # [N], as gsplat averages them
            wanted = int((grads > threshold).sum())
            room = self.budget - len(grads)
            if wanted > max(room, 0):
                self.counts["densify_over_budget"] = wanted - max(room, 0)
                # each duplicate or split adds one Gaussian: keep the `room` largest gradients
                self.grow_grad2d = float("inf") if room <= 0 else float(torch.topk(grads, room).values[-1])
        try:
            n_dupli, n_split = super()._grow_gs(params, optimizers, state, step)
        finally:
            self.grow_grad2d = threshold
        self.counts.update(densify_duplicated=int(n_dupli), densify_split=int(n_split))
        return n_dupli, n_split

    def _prune_gs(self, params, optimizers, state, step):  # type: ignore[no-untyped-def]
        n_prune = super()._prune_gs(params, optimizers, state, step)
        self.counts["densify_pruned"] = int(n_prune)
        if self.prune_unseen:
            # state["count"]: the training renders since the last refinement that drew each Gaussian
            unseen = state["count"] == 0  # [N]
            n_unseen = int(unseen.sum())
            if n_unseen:
                remove(params=params, optimizers=optimizers, state=state, mask=unseen)
            self.counts["densify_unseen"] = n_unseen
            n_prune += n_unseen
        if self.near is not None:
            close = state.get("near_hits")  # [N] bool, aligned by gsplat's ops like every state tensor
            n_near = 0 if close is None else int(close.sum())
            if n_near:
                remove(params=params, optimizers=optimizers, state=state, mask=close)
            state["near_hits"] = None  # counted afresh until the next refinement
            self.counts["densify_near"] = n_near
            n_prune += n_near
        return n_prune


@dataclass
class Densify:
    """Clone / split / prune / opacity reset (3DGS schedule) within a Gaussian budget
    (``max_gaussians``: growth past it takes the largest gradients first, pruning goes on; the
    first step the budget limited growth is recorded in the state as ``capped_at``)."""

    config: DensifyConfig
    near: float | None = None
    """The scene's near bound: with ``config.prune_near``, what a training render draws closer to its
    camera than this is pruned at the next refinement (None, zero or not finite: no such prune)."""
    inner: CountingDefaultStrategy = field(init=False)

    def __post_init__(self) -> None:
        d = self.config
        assert None not in (d.grow_grad2d, d.refine_stop_iter, d.prune_big, d.prune_unseen, d.prune_near,
                            d.regrow_at_budget), \
            "resolve the config first"
        assert d.grow_grad2d is not None and d.refine_stop_iter is not None  # for the type checker
        self.inner = CountingDefaultStrategy(
            budget=d.max_gaussians, regrow_at_budget=bool(d.regrow_at_budget), prune_unseen=bool(d.prune_unseen),
            near=self.near if d.prune_near and _is_bound(self.near) else None,
            prune_opa=d.prune_opa, grow_grad2d=d.grow_grad2d,
            prune_scale3d=0.1 if d.prune_big else float("inf"),
            refine_start_iter=d.refine_start_iter, refine_stop_iter=d.refine_stop_iter,
            refine_every=d.refine_every, reset_every=d.reset_every)

    def initialize_state(self, scene_scale: float) -> dict[str, Any]:
        return {**self.inner.initialize_state(scene_scale=scene_scale), "capped_at": -1}

    def step_pre_backward(self, model, state: dict, step: int, info: dict) -> None:
        self.inner.step_pre_backward(model.params, model.optimizers, state, step, info)

    def step_post_backward(self, model, state: dict, step: int, info: dict) -> None:
        self.inner.counts = {}
        near = self.inner.near
        if near is not None and step < self.inner.refine_stop_iter:
            drawn = info["radii"] > 0  # [C, N, 2] (or [C, N])
            drawn = drawn.all(dim=-1) if drawn.ndim == 3 else drawn
            close = (drawn & (info["depths"] < near)).any(dim=0)  # [N]
            hits = state.get("near_hits")
            state["near_hits"] = close if hits is None else hits | close
        self.inner.step_post_backward(model.params, model.optimizers, state, step, info)
        events = dict(self.inner.counts)
        if "densify_over_budget" in events and state.get("capped_at", -1) < 0:
            state["capped_at"] = step
        if events:
            state["events"] = events


def _is_bound(near: float | None) -> bool:
    return near is not None and math.isfinite(near) and near > 0
