"""The Gaussian budget of densification: under it gsplat's DefaultStrategy unchanged; past it only
the largest gradients grow, and pruning goes on."""

from __future__ import annotations

import numpy as np
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


def _refine(budget: int | None, grads: torch.Tensor, low_opacity: int = 0, *, unseen: int = 0,
            prune_unseen: bool = False, close: int = 0, near: float | None = None, regrow: bool = True,
            capped_at: int = -1) -> tuple[dict, torch.Tensor, dict]:
    n = len(grads)
    model = _model(n)
    with torch.no_grad():
        model.params["opacities"][:low_opacity] = -10.0  # below prune_opa: pruned after growing
    d = Densify(DensifyConfig(max_gaussians=budget, grow_grad2d=2e-4, prune_big=True, refine_start_iter=0,
                              refine_stop_iter=15_000, refine_every=1, reset_every=10**9, prune_unseen=prune_unseen,
                              prune_near=near is not None, regrow_at_budget=regrow), near=near)
    state = d.initialize_state(scene_scale=1.0)
    state["capped_at"] = capped_at
    count = torch.ones(n)
    count[n - unseen:] = 0  # the last `unseen` were drawn by no training render since the last refinement
    state.update(grad2d=grads.clone(), count=count, radii=torch.zeros(n))
    means2d = torch.zeros(1, n, 2, requires_grad=True)
    means2d.grad = torch.zeros(1, n, 2)  # this step adds nothing: the statistics are the ones set above
    radii = torch.zeros(1, n, 2, dtype=torch.int32)
    radii[0, n - close:] = 3  # the last `close` are drawn by this step's render, at depth 0.5
    depths = torch.full((1, n), 5.0)
    depths[0, n - close:] = 0.5
    info = {"width": 64, "height": 64, "n_cameras": 1, "radii": radii, "depths": depths,
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


def test_without_regrowth_nothing_grows_after_the_budget_was_first_reached():
    grads = torch.rand(100, generator=torch.Generator().manual_seed(1)) * 4e-4
    _, _, first = _refine(110, grads, low_opacity=5, regrow=False)  # the first capped refinement fills the room
    assert 8 <= first["densify_duplicated"] <= 10 and first["densify_pruned"] == 5
    _, again, regrown = _refine(110, grads, low_opacity=5, capped_at=0)  # later: the room is refilled ...
    assert regrown["densify_duplicated"] > 0
    _, means, later = _refine(110, grads, low_opacity=5, regrow=False, capped_at=0)  # ... unless told not to
    assert later["densify_duplicated"] == later["densify_split"] == 0
    assert later["densify_pruned"] == 5 and len(means) == 95  # pruning goes on


def test_unseen_gaussians_are_pruned_only_when_asked():
    grads = torch.zeros(50)  # nothing grows
    _, means_kept, ev_kept = _refine(None, grads, unseen=7)
    assert len(means_kept) == 50 and "densify_unseen" not in ev_kept
    state, means, ev = _refine(None, grads, low_opacity=3, unseen=7, prune_unseen=True)
    assert ev["densify_pruned"] == 3 and ev["densify_unseen"] == 7 and len(means) == 40
    assert torch.equal(means, _model(50).params["means"].detach()[3:43])  # the opacity prune, then the unseen ones
    assert len(state["count"]) == 40


def test_gaussians_drawn_in_front_of_the_near_bound_are_pruned_only_when_asked():
    grads = torch.full((50,), 1e-5)  # nothing grows
    _, means_kept, ev_kept = _refine(None, grads, close=4)
    assert len(means_kept) == 50 and "densify_near" not in ev_kept
    state, means, ev = _refine(None, grads, low_opacity=2, close=4, near=1.0)
    assert ev["densify_pruned"] == 2 and ev["densify_near"] == 4 and len(means) == 44
    assert torch.equal(means, _model(50).params["means"].detach()[2:46])
    assert state["near_hits"] is None  # counted afresh after the refinement
    _, means_far, ev_far = _refine(None, grads, close=4, near=0.4)  # drawn at 0.5, behind a near bound of 0.4
    assert len(means_far) == 50 and ev_far["densify_near"] == 0
    for bound in (0.0, float("nan")):  # a scene without a near bound: nothing to prune against
        _, means_none, ev_none = _refine(None, grads, close=4, near=bound)
        assert len(means_none) == 50 and "densify_near" not in ev_none


def _train(scene, points: np.ndarray, **densify: bool) -> tuple[np.ndarray, list[dict]]:
    """Means left after 25 steps from ``points`` (refinements at steps 10 and 20) and the history."""
    from reconstruct.config import InitConfig, LossConfig, OptimConfig
    from reconstruct.loop import LoopState, train_loop
    from reconstruct.splatting import SplatMethod, model_from_points

    optim = OptimConfig(sh_degree=0)
    colors = np.random.default_rng(1).uniform(0, 1, points.shape)
    model = model_from_points(points, colors, init=InitConfig(), optim=optim, scene=scene, device=torch.device("cpu"))
    model.add_strategy(Densify(DensifyConfig(max_gaussians=None, grow_grad2d=1.0, prune_big=False, prune_opa=0.0,
                                             refine_start_iter=10, refine_stop_iter=1000, refine_every=20,
                                             reset_every=10**9, regrow_at_budget=True, **densify),
                                     near=float(scene.near)))
    method = SplatMethod(scene, model, optim=optim, loss=LossConfig(), total_steps=25, seed=0)
    state = train_loop(method, LoopState(), until=25, label="densify", show_progress=False)
    return model.params["means"].detach().numpy(), state.history


def test_training_prunes_the_gaussians_no_training_camera_sees(tmp_path):
    """Gaussians behind every training camera get no gradient; with ``prune_unseen`` the first
    refinement removes exactly them (the step's events say so), without it they stay."""
    from reconstruct.demo import write_demo_scene
    from scenes import load_scene

    scene = load_scene(write_demo_scene(tmp_path / "scene", n_train=3, n_test=1, size=32), views=3)
    rng = np.random.default_rng(0)
    seen = rng.uniform(-0.5, 0.5, (200, 3))

    def outside_every_image(x: np.ndarray) -> bool:
        for i in scene.train_ids:
            T_cam_world = np.linalg.inv(scene.T_world_cam[i])
            p = T_cam_world[:3, :3] @ x + T_cam_world[:3, 3]
            u, v = (scene.Ks[i] @ p)[:2] / p[2]
            if p[2] > 0 and -8 < u < 40 and -8 < v < 40:  # in front and within 8 px of the 32 px image
                return False
        return True

    # a spot 6 units from the origin (the cameras are at 4) that no training camera looks at
    directions = rng.normal(size=(500, 3))
    back = next(6.0 * d / np.linalg.norm(d) for d in directions if outside_every_image(6.0 * d / np.linalg.norm(d)))
    hidden = back + rng.normal(0, 0.02, (5, 3))
    assert all(outside_every_image(x) for x in hidden)
    counts = {}
    for prune_unseen in (False, True):
        left, history = _train(scene, np.concatenate([seen, hidden]), prune_unseen=prune_unseen, prune_near=False)
        counts[prune_unseen] = int((np.linalg.norm(left - back, axis=1) < 0.5).sum())
        assert len(left) == (200 if prune_unseen else 205)
        unseen = sum(row.get("densify_unseen", 0) for row in history)  # the loop logs every event
        assert unseen == (5 if prune_unseen else 0), history
    assert counts == {False: 5, True: 0}


def test_training_prunes_the_gaussians_in_front_of_the_near_bound(tmp_path):
    """Gaussians a training camera sees closer than the scene's near bound are removed at the first
    refinement with ``prune_near`` (and counted as densify_near); the rest of the scene stays."""
    from reconstruct.demo import write_demo_scene
    from scenes import load_scene

    scene = load_scene(write_demo_scene(tmp_path / "scene", n_train=3, n_test=1, size=32), views=3)
    rng = np.random.default_rng(0)
    T = scene.T_world_cam[scene.train_ids[0]]
    close = T[:3, 3] + 0.5 * scene.near * T[:3, 2] + rng.normal(0, 0.01, (5, 3))  # on its optical axis
    points = np.concatenate([rng.uniform(-0.5, 0.5, (200, 3)), close])
    for prune_near in (False, True):
        left, history = _train(scene, points, prune_unseen=False, prune_near=prune_near)
        assert len(left) == (200 if prune_near else 205)
        assert sum(row.get("densify_near", 0) for row in history) == (5 if prune_near else 0), history
