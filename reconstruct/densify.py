"""Densification: gsplat's DefaultStrategy as a strategy of ``reconstruct.splatting.GaussianModel``,
with a growth cap and an account of what every refinement did.

Each refinement step reports, in the strategy state's ``events``, how many Gaussians were
duplicated, split and pruned (gsplat's own counts), and an opacity reset is reported too, so a run
whose Gaussian count collapses shows which mechanism removed them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gsplat.strategy import DefaultStrategy

from reconstruct.config import DensifyConfig


class CountingDefaultStrategy(DefaultStrategy):
    """gsplat's DefaultStrategy, keeping the counts its grow and prune steps return."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.counts: dict[str, int] = {}

    def _grow_gs(self, params, optimizers, state, step):  # type: ignore[no-untyped-def]
        n_dupli, n_split = super()._grow_gs(params, optimizers, state, step)
        self.counts.update(densify_duplicated=int(n_dupli), densify_split=int(n_split))
        return n_dupli, n_split

    def _prune_gs(self, params, optimizers, state, step):  # type: ignore[no-untyped-def]
        n_prune = super()._prune_gs(params, optimizers, state, step)
        self.counts["densify_pruned"] = int(n_prune)
        return n_prune


@dataclass
class Densify:
    """Clone / split / prune / opacity reset (3DGS schedule) with a growth cap: once the model
    reaches ``max_gaussians`` densification stops for the rest of the run (recorded in the state as
    ``capped_at``; 3DGS stops pruning by opacity with it too)."""

    config: DensifyConfig
    inner: CountingDefaultStrategy = field(init=False)

    def __post_init__(self) -> None:
        d = self.config
        self.inner = CountingDefaultStrategy(
            prune_opa=d.prune_opa, grow_grad2d=d.grow_grad2d, refine_start_iter=d.refine_start_iter,
            refine_stop_iter=d.refine_stop_iter, refine_every=d.refine_every, reset_every=d.reset_every)

    def initialize_state(self, scene_scale: float) -> dict[str, Any]:
        return {**self.inner.initialize_state(scene_scale=scene_scale), "capped_at": -1}

    def step_pre_backward(self, model, state: dict, step: int, info: dict) -> None:
        self.inner.step_pre_backward(model.params, model.optimizers, state, step, info)

    def step_post_backward(self, model, state: dict, step: int, info: dict) -> None:
        if state["capped_at"] >= 0:
            return
        self.inner.counts = {}
        self.inner.step_post_backward(model.params, model.optimizers, state, step, info)
        events = dict(self.inner.counts)
        if len(model) >= self.config.max_gaussians:
            state["capped_at"] = step
            events["densify_capped"] = len(model)
        if events:
            state["events"] = events
