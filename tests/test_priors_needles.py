"""Needle penalty: the hinge on the largest-to-middle scale ratio, its gradient, and its wiring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reconstruct.priors.config import NeedleConfig, PriorsConfig, Schedule
from reconstruct.priors.needles import needle_excess


def test_excess_is_zero_for_blobs_and_discs_and_the_log_overshoot_for_needles():
    log_s = torch.log(torch.tensor([
        [1.0, 1.0, 1.0],  # blob
        [1e-4, 1.0, 1.0],  # disc: one tiny axis, free
        [1.0, 0.1, 0.1],  # needle, ratio 10: on the boundary
        [0.01, 0.01, 4.0],  # needle, ratio 400 (axes in any order)
        [0.2, 2e-6, 0.2],  # a disc again, with the small axis in the middle of the array
    ]))
    got = needle_excess(log_s, 10.0)
    want = torch.tensor([0.0, 0.0, 0.0, math.log(40.0), 0.0])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert needle_excess(log_s[:0], 10.0).shape == (0,)


def test_gradient_shrinks_the_long_axis_and_grows_the_middle_one_only():
    log_s = torch.log(torch.tensor([[0.01, 0.02, 5.0], [1.0, 1.0, 1.0]])).requires_grad_()
    needle_excess(log_s, 10.0).sum().backward()
    g = log_s.grad
    torch.testing.assert_close(g, torch.tensor([[0.0, -1.0, 1.0], [0.0, 0.0, 0.0]]))  # descent: long down, mid up
    with pytest.raises(AssertionError):
        needle_excess(log_s.detach(), 0.5)


def test_needle_prior_in_training_reduces_the_needles(tmp_path):
    """Trained with the penalty on a tiny scene, a model that starts as needles (ratio 60) ends with
    a smaller largest-to-middle ratio than the same run without it, at a finite loss. (Adam moves a
    log scale by about lr = 0.005 a step, so 40 steps can take ln 60 = 4.1 down by at most 0.4.)"""
    from reconstruct.demo import write_demo_scene
    from scenes import load_scene
    from tests.test_priors import _trainer

    scene = load_scene(write_demo_scene(tmp_path / "scene", n_train=4, n_test=1, size=32), views=4)
    ratios = {}  # mean ln(s_max / s_mid) after training
    for on in (False, True):
        priors = PriorsConfig(needles=NeedleConfig(enabled=on, weight=1.0, schedule=Schedule(start=0)))
        tr = _trainer(scene, tmp_path / str(on), priors, n=300, seed=3)
        with torch.no_grad():  # every Gaussian a needle of ratio ~60 along a random axis
            rng = np.random.default_rng(0)
            log_s = torch.full((300, 3), math.log(0.01))
            log_s[torch.arange(300), torch.as_tensor(rng.integers(0, 3, 300))] = math.log(0.6)
            tr.model.params["scales"].copy_(log_s)
        assert [r.name for r in tr.regularizers] == (["needles"] if on else [])
        for step in range(40):
            out = tr.train_step(step)
            assert np.isfinite(out.loss)
        if on:
            assert out.terms["needles"] > 0
        ratios[on] = float(needle_excess(tr.model.params["scales"].detach(), 1.0).mean())  # mean ln(max/mid)
    assert ratios[False] > math.log(60) - 0.15, ratios
    assert ratios[True] < ratios[False] - 0.25, ratios


def test_needle_flags_are_range_checked():
    from reconstruct.config import SplatTrainConfig, validate
    from pathlib import Path

    cfg = SplatTrainConfig(scene=Path("s"), priors=PriorsConfig(needles=NeedleConfig(max_ratio=0.5)))
    with pytest.raises(ValueError, match="--priors.needles.max-ratio"):
        validate(cfg)
