"""Metrics: PSNR, SSIM against an independent direct implementation, D-SSIM, LPIPS loading."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reconstruct.metrics import LpipsAlex, dssim_loss, load_lpips, psnr, ssim


def _ssim_direct(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM by explicit 11x11 Gaussian-weighted windows at every valid position (slow, obvious)."""
    x = np.arange(11) - 5
    g = np.exp(-(x**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    vals = []
    H, W, _ = a.shape
    for c in range(3):
        for i in range(H - 10):
            for j in range(W - 10):
                pa, pb = a[i:i + 11, j:j + 11, c], b[i:i + 11, j:j + 11, c]
                ma, mb = (w * pa).sum(), (w * pb).sum()
                va, vb = (w * pa * pa).sum() - ma**2, (w * pb * pb).sum() - mb**2
                cov = (w * pa * pb).sum() - ma * mb
                vals.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_psnr_known_value():
    a = torch.zeros(8, 8, 3)
    b = torch.full((8, 8, 3), 0.1)
    assert psnr(a, b) == pytest.approx(20.0, abs=1e-4)


def test_ssim_matches_direct_windows():
    rng = np.random.default_rng(0)
    a = rng.uniform(size=(24, 20, 3))
    b = np.clip(a + rng.normal(scale=0.1, size=a.shape), 0, 1)
    assert ssim(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)) == pytest.approx(
        _ssim_direct(a, b), abs=1e-5)
    assert ssim(torch.tensor(a), torch.tensor(a)) == pytest.approx(1.0)


def test_dssim_loss_is_zero_for_equal_images_and_has_gradients():
    img = torch.rand(16, 16, 3, requires_grad=True)
    ref = torch.rand(16, 16, 3)
    assert float(dssim_loss(ref, ref)) == pytest.approx(0.0, abs=1e-6)
    loss = dssim_loss(img, ref)
    loss.backward()
    assert loss > 0.1 and torch.isfinite(img.grad).all() and img.grad.abs().sum() > 0


def test_lpips_unavailable_without_weights(tmp_path, monkeypatch):
    monkeypatch.delenv("RECON_LPIPS_DIR", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    status = load_lpips(tmp_path)
    assert status.model is None and "alexnet-owt-7be5be79.pth" in status.reason


def test_lpips_loads_torchvision_and_lpips_key_layout(tmp_path, monkeypatch):
    torch.manual_seed(0)
    ref = LpipsAlex()
    trunk = {}
    for conv, idx in zip(ref.convs, [0, 3, 6, 8, 10]):
        trunk[f"features.{idx}.weight"] = conv.weight.detach().clone()
        trunk[f"features.{idx}.bias"] = conv.bias.detach().clone()
    lins = {f"lin{i}.model.1.weight": torch.rand_like(lin.weight) for i, lin in enumerate(ref.lins)}
    torch.save(trunk, tmp_path / "alexnet-owt-7be5be79.pth")
    torch.save(lins, tmp_path / "alex.pth")
    monkeypatch.setenv("RECON_LPIPS_DIR", str(tmp_path))
    status = load_lpips()
    assert status.model is not None and status.reason is None
    img = torch.rand(64, 64, 3)
    other = torch.rand(64, 64, 3)
    assert float(status.model(img, img)) == pytest.approx(0.0, abs=1e-7)
    d = float(status.model(img, other))
    assert d > 0 and math.isfinite(d)
    assert torch.equal(status.model.lins[2].weight, lins["lin2.model.1.weight"])
