"""The Gaussian budget of densification: under it gsplat's DefaultStrategy unchanged; past it only
the largest gradients grow, and pruning goes on."""

from __future__ import annotations

import torch

from reconstruct.config import DensifyConfig
from reconstruct.densify import Densify


def _model(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    params = torch.nn.ParameterDict({
        "means": torch.randn(n, 3, generator=g), "scales": torch.full((n, 3), -6.0),  # small: they duplicate
        "quats": torch.randn(n, 4, generator=g), "opacities": torch.full((n,), 2.0),
        "sh0": torch.zeros(n, 1, 3), "shN": torch.zeros(n, 0, 3)})
    optimizers = {k: torch.optim.Adam([p], lr=1e-3) for k, p in params.items()}
    return type("Model", (), {"params": params, "optimizers": optimizers, "__len__": lambda self: n})()


def _refine(budget: int | None, grads: torch.Tensor, low_opacity: int = 0) -> tuple[dict, torch.Tensor, dict]:
    n = len(grads)
    model = _model(n)
    with torch.no_grad():
        model.params["opacities"][:low_opacity] = -10.0  # below prune_opa: pruned after growing
    d = Densify(DensifyConfig(max_gaussians=budget, grow_grad2d=2e-4, prune_big=True, refine_start_iter=0,
                              refine_stop_iter=15_000, refine_every=1, reset_every=10**9))
    state = d.initialize_state(scene_scale=1.0)
    state.update(grad2d=grads.clone(), count=torch.ones(n), radii=torch.zeros(n))
    means2d = torch.zeros(1, n, 2, requires_grad=True)
    means2d.grad = torch.zeros(1, n, 2)  # this step adds nothing: the statistics are the ones set above
    info = {"width": 64, "height": 64, "n_cameras": 1, "radii": torch.zeros(1, n, 2, dtype=torch.int32),
            "gaussian_ids": None, "means2d": means2d}
    d.step_post_backward(model, state, 1, info)
    return state, model.params["means"].detach(), state.get("events", {})


def test_under_the_budget_growth_is_gsplats():
    grads = torch.linspace(0, 4e-4, 100)  # half above the 2e-4 threshold
    _, means_free, ev_free = _refine(None, grads)
    _, means_big, ev_big = _refine(10_000, grads)
    assert ev_free["densify_duplicated"] == ev_big["densify_duplicated"] == int((grads > 2e-4).sum())
    assert "densify_over_budget" not in ev_big and torch.equal(means_free, means_big)


def test_past_the_budget_the_largest_gradients_grow_and_pruning_goes_on():
    grads = torch.rand(100, generator=torch.Generator().manual_seed(1)) * 4e-4
    wanted = int((grads > 2e-4).sum())
    state, means, ev = _refine(110, grads, low_opacity=5)
    assert ev["densify_over_budget"] == wanted - 10 and state["capped_at"] == 1
    assert 8 <= ev["densify_duplicated"] <= 10  # ties at the cut may leave one or two out
    grown = means[-ev["densify_duplicated"]:]  # duplicates are appended: copies of the largest-gradient ones
    top = torch.topk(grads, ev["densify_duplicated"]).indices
    assert torch.equal(torch.sort(grown, dim=0).values, torch.sort(_model(100).params["means"].detach()[top], dim=0).values)
    assert ev["densify_pruned"] == 5 and len(means) == 100 + ev["densify_duplicated"] - 5
    # at the budget nothing grows, the pruned ones make room for the next refinement
    _, _, full = _refine(100, grads)
    assert full["densify_duplicated"] == 0 and full["densify_over_budget"] == wanted
