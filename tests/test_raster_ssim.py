"""The numba D-SSIM loss against reconstruct.metrics.dssim_loss: values, gradients to both
images, gradcheck, float32 inputs, images smaller than the window."""

from __future__ import annotations

import pytest
import torch

from reconstruct.metrics import _gaussian_window, dssim_loss
from reconstruct.raster.ssim_numba import dssim_loss_numba, gaussian_window


def images(seed: int, h: int, w: int, c: int = 3, dtype=torch.float64):
    """A smooth image plus noise and a perturbed copy as the reference: [h, w, c] each."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h, dtype=torch.float64),
                            torch.linspace(0, 1, w, dtype=torch.float64), indexing="ij")
    base = torch.stack([torch.sin(3 * xx + k) * torch.cos(2 * yy - k) for k in range(c)], -1) * 0.4 + 0.5
    img = (base + 0.1 * torch.randn(h, w, c, generator=g, dtype=torch.float64)).clamp(0, 1)
    ref = (base + 0.15 * torch.randn(h, w, c, generator=g, dtype=torch.float64)).clamp(0, 1)
    return img.to(dtype), ref.to(dtype)


def test_window_matches_metrics():
    torch.testing.assert_close(torch.from_numpy(gaussian_window()), _gaussian_window(11, 1.5, torch.float64),
                               rtol=0, atol=1e-16)


@pytest.mark.parametrize("shape", [(32, 40), (23, 17), (7, 9), (1, 30)])
def test_value_and_gradients_match_torch(shape):
    img, ref = images(sum(shape), *shape)
    g = torch.Generator().manual_seed(1)
    upstream = float(torch.rand((), generator=g, dtype=torch.float64)) + 0.5
    results = []
    for fn in (dssim_loss, dssim_loss_numba):
        x, y = img.clone().requires_grad_(True), ref.clone().requires_grad_(True)
        loss = fn(x, y)
        (loss * upstream).backward()
        results.append((loss.detach(), x.grad, y.grad))
    (want, want_gx, want_gy), (got, gx, gy) = results
    assert got.dtype == torch.float64 and got.shape == ()
    assert 0.05 < float(want) < 1.0
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    for name, a, b in (("img", gx, want_gx), ("ref", gy, want_gy)):
        assert float(b.abs().max()) > 0, name
        err = float((a - b).abs().max() / b.abs().max())
        assert err < 1e-10, (name, err)


def test_gradcheck():
    img, ref = images(3, 9, 12, c=2)
    x, y = img.clone().requires_grad_(True), ref.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(dssim_loss_numba, (x, y), eps=1e-6, atol=1e-8, rtol=1e-5)


def test_ref_without_grad_and_equal_images():
    img, ref = images(4, 20, 21)
    x = img.clone().requires_grad_(True)
    loss = dssim_loss_numba(x, ref)
    loss.backward()
    x2 = img.clone().requires_grad_(True)
    dssim_loss(x2, ref).backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-10, atol=1e-14)
    assert float(dssim_loss_numba(ref, ref)) == pytest.approx(0.0, abs=1e-12)


def test_float32_inputs():
    img, ref = images(5, 30, 26)
    x32 = img.float().requires_grad_(True)
    loss = dssim_loss_numba(x32, ref.float())
    loss.backward()
    assert loss.dtype == torch.float32 and x32.grad.dtype == torch.float32
    x64 = img.float().double().requires_grad_(True)
    want = dssim_loss(x64, ref.float().double())
    want.backward()
    torch.testing.assert_close(loss.double(), want.detach(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(x32.grad.double(), x64.grad, rtol=1e-5, atol=1e-9)


def test_a_wrong_partial_would_be_caught():
    """The gradient check is sharp: the value is unchanged but a 1% error in one partial map
    (here dS/dE[xy]) moves the image gradient well past the tolerance above."""
    from reconstruct.raster import ssim_numba

    img, ref = images(6, 24, 24)
    x = img.clone().requires_grad_(True)
    dssim_loss(x, ref).backward()
    original = ssim_numba._combine

    def skewed(blurred, a, b, scale, out, first):
        blurred = blurred.copy()
        blurred[2] *= 1.01
        original(blurred, a, b, scale, out, first)

    ssim_numba._combine = skewed
    try:
        x2 = img.clone().requires_grad_(True)
        dssim_loss_numba(x2, ref).backward()
    finally:
        ssim_numba._combine = original
    err = float((x2.grad - x.grad).abs().max() / x.grad.abs().max())
    assert err > 1e-4, err
