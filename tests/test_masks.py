"""Learnable masks: straight-through gradient, real removal with consistent optimizer state."""

import torch

from pruning.masks import MASK_KEY, MaskStrategy, add_mask_param, apply_masks, hard_mask
from reconstruct.splatting import GaussianModel


class _Recorder:
    """A strategy with per-Gaussian state (like gsplat's grad2d/count) and nothing else."""

    def initialize_state(self, scene_scale):
        return {}

    def step_pre_backward(self, model, state, step, info):
        pass

    def step_post_backward(self, model, state, step, info):
        pass


def _params(n: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    params = torch.nn.ParameterDict({
        "means": torch.randn(n, 3, generator=g), "quats": torch.randn(n, 4, generator=g),
        "scales": torch.randn(n, 3, generator=g) - 3, "opacities": torch.randn(n, generator=g),
        "sh0": torch.randn(n, 1, 3, generator=g), "shN": torch.randn(n, 3, 3, generator=g),
    })
    optimizers = {k: torch.optim.Adam([{"params": [p], "lr": 1e-2, "name": k}], eps=1e-15) for k, p in params.items()}
    return params, optimizers


def test_hard_mask_forward_is_binary_and_gradient_is_sigmoid_prime():
    m = torch.tensor([-8.0, -3.0, 0.0, 4.0], requires_grad=True)
    out = hard_mask(m, 0.01)
    s = torch.sigmoid(m.detach())
    assert torch.equal(out.detach(), (s > 0.01).float())
    out.sum().backward()
    assert torch.allclose(m.grad, s * (1 - s))


def test_ste_gradient_reaches_masks_through_opacity_and_scale():
    params, optimizers = _params(6)
    add_mask_param(params, optimizers, lr=0.01, init_logit=2.0)
    with torch.no_grad():
        params[MASK_KEY][0] = -10.0  # hard mask off for row 0
    opac, scales = apply_masks(params, threshold=0.01)
    assert opac[0] == 0 and torch.all(scales[0] == 0)
    assert torch.all(opac[1:] > 0)
    (opac.sum() + scales.sum()).backward()
    g = params[MASK_KEY].grad
    assert g is not None and torch.all(torch.isfinite(g))
    # Rows with the mask on get d/dm = sigmoid'(m) * (opacity + sum of scales) > 0.
    s = torch.sigmoid(params[MASK_KEY].detach())
    expect = s * (1 - s) * (torch.sigmoid(params["opacities"].detach()) + torch.exp(params["scales"].detach()).sum(1))
    assert torch.allclose(g, expect, rtol=1e-5, atol=1e-12)
    assert params["opacities"].grad[0] == 0  # masked rows pass no gradient to opacity


def test_removal_keeps_optimizer_state_consistent():
    params, optimizers = _params(12)
    strategy = MaskStrategy(prune_every=1, lambda_mask=1.0)
    add_mask_param(params, optimizers, lr=0.5)
    strategy.check_sanity(params, optimizers)
    model = GaussianModel(params, optimizers, 1.0)
    model.add_strategy(strategy)
    state = model.states[0]
    state["per_gaussian"] = torch.arange(12.0)
    # A few steps so every Adam has exp_avg / exp_avg_sq.
    for _ in range(3):
        opac, scales = apply_masks(params, threshold=strategy.threshold)
        loss = (opac * scales.sum(1)).sum() + strategy.loss(params)
        loss.backward()
        for opt in optimizers.values():
            opt.step()
            opt.zero_grad()
    with torch.no_grad():
        params[MASK_KEY][[1, 4, 7]] = -20.0
    keep = torch.ones(12, dtype=torch.bool)
    keep[[1, 4, 7]] = False
    before = {k: p.detach().clone() for k, p in params.items()}
    moments = {k: {s: v.clone() for s, v in optimizers[k].state[p].items() if s != "step"} for k, p in params.items()}
    strategy.step_post_backward(model, state, step=3, info={})
    params = model.params
    assert state["n_removed"] == 3
    assert torch.equal(state["per_gaussian"], torch.arange(12.0)[keep])
    for k, p in params.items():
        assert p.shape[0] == 9
        assert torch.equal(p.detach(), before[k][keep])
        opt_state = optimizers[k].state[p]
        assert optimizers[k].param_groups[0]["params"][0] is p
        for s, v in moments[k].items():
            assert opt_state[s].shape == p.shape
            assert torch.equal(opt_state[s], v[keep])
    strategy.check_sanity(params, optimizers)
    # Training continues on the smaller set.
    opac, scales = apply_masks(params)
    (opac.sum() + strategy.loss(params)).backward()
    for opt in optimizers.values():
        opt.step()


def test_mask_loss_alone_drives_masks_off_and_prunes():
    params, optimizers = _params(20)
    strategy = MaskStrategy(prune_every=10, lambda_mask=1.0, lr=0.5)
    add_mask_param(params, optimizers, lr=strategy.lr)
    model = GaussianModel(params, optimizers, 1.0)
    model.add_strategy(strategy)
    for step in range(1, 41):
        strategy.loss(model.params).backward()
        model.optimizers[MASK_KEY].step()
        model.optimizers[MASK_KEY].zero_grad()
        strategy.step_post_backward(model, model.states[0], step, {})
    assert model.params["means"].shape[0] == strategy.keep_min


def test_removal_also_cuts_the_other_strategies_states():
    params, optimizers = _params(8)
    add_mask_param(params, optimizers)
    model = GaussianModel(params, optimizers, 1.0)
    model.add_strategy(_Recorder())
    model.states[0].update(grad2d=torch.arange(8.0), count=torch.ones(8), scene_scale=1.0, radii=None)
    strategy = MaskStrategy(prune_every=1)
    model.add_strategy(strategy)
    with torch.no_grad():
        model.params[MASK_KEY][[0, 5]] = -20.0
    strategy.step_post_backward(model, model.states[1], step=1, info={})
    other = model.states[0]
    assert model.params["means"].shape[0] == 6
    assert torch.equal(other["grad2d"], torch.tensor([1.0, 2, 3, 4, 6, 7]))
    assert other["count"].shape == (6,) and other["scene_scale"] == 1.0
