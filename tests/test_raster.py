"""Rasterizer backends: the numba CPU kernel against the torch reference (values and every
gradient), a brute-force per-pixel check of the reference with gsplat's constants, gradcheck,
render modes, a no-NaN property test, gsplat's DefaultStrategy fed by our info, and gsplat on
CUDA. Scenes draw opacities up to exactly 1 (1.0 and 0.9999 among them) so gsplat's 0.999
alpha clamp and its transmittance stop are exercised."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconstruct.raster import rasterize, resolve_backend
from reconstruct.raster.projection import project_gaussians

REPO = Path(__file__).resolve().parents[1]
# gsplat 1.5.3's shading constants as literals (gsplat/cuda/csrc/RasterizeToPixels3DGSFwd.cu:148-154,
# include/Common.h:54), so a backend constant that drifts from gsplat fails the brute-force check.
GSPLAT_ALPHA_CLAMP = 0.999
GSPLAT_ALPHA_THRESHOLD = 1.0 / 255.0
GSPLAT_T_STOP = 1e-4
PARAM_NAMES = ("means", "quats", "scales", "opacities", "colors", "backgrounds")


def look_at(eye: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[4, 4] world-to-camera (OpenCV axes) for a camera at `eye` looking at `target`."""
    z = torch.nn.functional.normalize(target - eye, dim=0)
    up = torch.tensor([0.0, -1.0, 0.0], dtype=eye.dtype)
    if abs(float(z @ up)) > 0.99:
        up = torch.tensor([1.0, 0.0, 0.0], dtype=eye.dtype)
    x = torch.nn.functional.normalize(torch.linalg.cross(up, z), dim=0)
    y = torch.linalg.cross(z, x)
    R = torch.stack([x, y, z])  # rows: camera axes in world
    T = torch.eye(4, dtype=eye.dtype)
    T[:3, :3] = R
    T[:3, 3] = -R @ eye
    return T


def make_scene(
    seed: int,
    *,
    n: int = 120,
    width: int = 40,
    height: int = 36,
    cameras: int = 1,
    inside: bool = False,
    degenerate: bool = False,
    sh_degree: int | None = 2,
    dtype: torch.dtype = torch.float64,
) -> dict:
    """Random Gaussians in a unit ball; cameras outside it (or inside the cloud), some
    Gaussians behind every camera; optional degenerate (flat / tiny / huge) scales."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.6
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    log_scales = torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.4 + math.log(0.06)
    if degenerate:
        k = n // 4
        log_scales[:k, 0] = math.log(1e-7)  # flat discs
        log_scales[k : 2 * k] = math.log(1e-5)  # sub-pixel specks
        log_scales[2 * k : 2 * k + 3] = math.log(3.0)  # screen-filling blobs
    opacities = torch.rand(n, generator=g, dtype=torch.float64) * 0.98 + 0.02  # up to 1
    opacities[0::10] = 1.0  # exactly opaque: alpha clamped at 0.999 around the center
    opacities[5::10] = 0.9999
    colors = (
        torch.rand(n, 3, generator=g, dtype=torch.float64)
        if sh_degree is None
        else torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g, dtype=torch.float64) * 0.4
    )
    viewmats, Ks = [], []
    for c in range(cameras):
        angle = 2 * math.pi * c / max(cameras, 1) + 0.3 * seed
        dist = 0.15 if inside else 2.5
        eye = torch.tensor([dist * math.sin(angle), 0.2, -dist * math.cos(angle)], dtype=torch.float64)
        target = torch.zeros(3, dtype=torch.float64) if not inside else eye * 3.0
        viewmats.append(look_at(eye, target))
        f = 0.9 * width + 5 * c
        Ks.append(torch.tensor([[f, 0, width / 2 + 1.3], [0, f * 1.05, height / 2 - 0.7], [0, 0, 1]], dtype=torch.float64))
    params = {
        "means": means,
        "quats": quats,
        "scales": log_scales.exp(),
        "opacities": opacities,
        "colors": colors,
        "backgrounds": torch.rand(cameras, 3, generator=g, dtype=torch.float64),
    }
    return {
        "params": {k: v.to(dtype) for k, v in params.items()},
        "viewmats": torch.stack(viewmats).to(dtype),
        "Ks": torch.stack(Ks).to(dtype),
        "width": width,
        "height": height,
        "sh_degree": sh_degree,
    }


def render_with_grads(scene: dict, backend: str, render_mode: str = "RGB+ED", seed: int = 7):
    """Render, backprop a random linear loss of images and alphas; return outputs and grads."""
    params = {k: v.detach().clone().requires_grad_(True) for k, v in scene["params"].items()}
    images, alphas, info = rasterize(
        params["means"], params["quats"], params["scales"], params["opacities"], params["colors"],
        scene["viewmats"], scene["Ks"], scene["width"], scene["height"],
        sh_degree=scene["sh_degree"], backgrounds=params["backgrounds"] if "RGB" in render_mode else None,
        render_mode=render_mode, backend=backend,
    )
    info["means2d"].retain_grad()
    g = torch.Generator().manual_seed(seed)
    w_img = torch.randn(images.shape, generator=g, dtype=torch.float64).to(images)
    w_alpha = torch.randn(alphas.shape, generator=g, dtype=torch.float64).to(alphas)
    ((images * w_img).sum() + (alphas * w_alpha).sum()).backward()
    grads = {k: v.grad for k, v in params.items() if v.grad is not None}
    grads["means2d"] = info["means2d"].grad
    return images.detach(), alphas.detach(), grads, info


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rel: float, what: str) -> None:
    scale = expected.abs().max().clamp_min(1e-12)
    err = float((actual.double() - expected.double()).abs().max() / scale)
    assert err <= rel, f"{what}: max error {err:.2e} of max |value| {float(scale):.3g} > {rel:.0e}"
    assert torch.isfinite(actual).all(), what


SCENES = [
    pytest.param(dict(seed=0), id="outside"),
    pytest.param(dict(seed=1, cameras=2), id="two-cameras"),
    pytest.param(dict(seed=2, inside=True), id="inside-cloud"),
    pytest.param(dict(seed=3, degenerate=True), id="degenerate-scales"),
    pytest.param(dict(seed=4, sh_degree=None, width=37, height=50), id="rgb-odd-size"),
    pytest.param(dict(seed=5, sh_degree=3, n=300), id="sh3-dense"),
]


@pytest.mark.parametrize("kwargs", SCENES)
def test_kernel_matches_reference_float64(kwargs):
    scene = make_scene(**kwargs)
    ref_img, ref_alpha, ref_grads, ref_info = render_with_grads(scene, "reference")
    img, alpha, grads, info = render_with_grads(scene, "cpu")
    assert (info["radii"] == ref_info["radii"]).all()
    assert float(alpha.max()) > 0.3, "scene renders nothing: test would be vacuous"
    assert_close(img, ref_img, 1e-10, "images")
    assert_close(alpha, ref_alpha, 1e-10, "alphas")
    assert set(grads) == set(ref_grads) == set(PARAM_NAMES) | {"means2d"}
    for name in ref_grads:
        assert float(ref_grads[name].abs().max()) > 0, name
        assert_close(grads[name], ref_grads[name], 1e-9, f"d/d{name}")


@pytest.mark.parametrize("kwargs", SCENES[:4])
def test_kernel_float32_matches_float64_reference(kwargs):
    scene64 = make_scene(**kwargs)
    scene32 = make_scene(**kwargs, dtype=torch.float32)
    ref_img, ref_alpha, ref_grads, _ = render_with_grads(scene64, "reference")
    img, alpha, grads, _ = render_with_grads(scene32, "cpu")
    assert img.dtype == torch.float32 and grads["means"].dtype == torch.float32
    assert_close(img, ref_img, 1e-4, "images")
    assert_close(alpha, ref_alpha, 1e-4, "alphas")
    for name in ref_grads:
        assert_close(grads[name], ref_grads[name], 1e-4, f"d/d{name}")


@pytest.mark.parametrize("mode", ["D", "ED", "RGB+D"])
def test_render_modes_match_reference(mode):
    scene = make_scene(6)
    ref = render_with_grads(scene, "reference", render_mode=mode)
    out = render_with_grads(scene, "cpu", render_mode=mode)
    assert out[0].shape[-1] == (1 if mode in ("D", "ED") else 4)
    assert_close(out[0], ref[0], 1e-10, f"{mode} image")
    for name in ref[2]:
        assert_close(out[2][name], ref[2][name], 1e-9, f"{mode} d/d{name}")


def test_many_feature_channels_match_reference():
    """Seven channels (six plain features + expected depth) take two calls of the kernel's
    fixed channel block; values and gradients still match the reference."""
    scene = make_scene(8, sh_degree=None)
    g = torch.Generator().manual_seed(8)
    n = scene["params"]["means"].shape[0]
    scene["params"]["colors"] = torch.rand(n, 6, generator=g, dtype=torch.float64)
    scene["params"]["backgrounds"] = torch.rand(1, 6, generator=g, dtype=torch.float64)
    ref_img, ref_alpha, ref_grads, _ = render_with_grads(scene, "reference")
    img, alpha, grads, _ = render_with_grads(scene, "cpu")
    assert img.shape[-1] == 7
    assert_close(img, ref_img, 1e-10, "images")
    assert_close(alpha, ref_alpha, 1e-10, "alphas")
    for name in ref_grads:
        assert float(ref_grads[name].abs().max()) > 0, name
        assert_close(grads[name], ref_grads[name], 1e-9, f"d/d{name}")


def test_polynomial_exp_matches_libm_where_compositing_uses_it():
    """The kernels' branch-free exp(-p) against numpy's exp on [0, 6] (alpha >= 1/255 needs p <= 5.55)."""
    from reconstruct.raster._numba import _exp_neg

    p = np.linspace(0.0, 6.0, 20001)
    ours = np.array([_exp_neg(x) for x in p])
    assert float(np.abs(ours / np.exp(-p) - 1.0).max()) < 4e-12


def test_depth_modes_are_consistent():
    scene = make_scene(8)
    p = scene["params"]
    args = (p["means"], p["quats"], p["scales"], p["opacities"], p["colors"], scene["viewmats"], scene["Ks"], 40, 36)
    d, alpha, _ = rasterize(*args, render_mode="D")
    ed, _, _ = rasterize(*args, render_mode="ED")
    rgbd, _, _ = rasterize(*args, render_mode="RGB+D")
    rgb, _, _ = rasterize(*args, render_mode="RGB")
    torch.testing.assert_close(ed, d / alpha.clamp_min(1e-10))
    torch.testing.assert_close(rgbd, torch.cat([rgb, d], -1))
    hit = alpha[..., 0] > 0.5
    depth = ed[..., 0][hit]
    assert hit.any() and (depth > 1.0).all() and (depth < 4.0).all(), "expected depth outside the cloud"


def test_sh_degree_zero_equals_plain_colors():
    scene = make_scene(9, sh_degree=0)
    p = scene["params"]
    args = (p["means"], p["quats"], p["scales"], p["opacities"])
    cams = (scene["viewmats"], scene["Ks"], 40, 36)
    sh_img, _, _ = rasterize(*args, p["colors"], *cams)
    rgb = (p["colors"][:, 0, :] * 0.28209479177387814 + 0.5).clamp_min(0)
    plain_img, _, _ = rasterize(*args, rgb, *cams)
    torch.testing.assert_close(sh_img, plain_img)


def brute_force_pixel(proj, opac, feats, bg, cam: int, px: float, py: float):
    """Composite one pixel the slow, obvious way: every visible Gaussian by depth."""
    visible = (proj.radii[cam] > 0).all(-1).nonzero()[:, 0].tolist()
    depths = proj.depths[cam]
    visible.sort(key=lambda i: (float(depths[i]), i))
    T, color = 1.0, torch.zeros(feats.shape[-1], dtype=torch.float64)
    for i in visible:
        dx = float(proj.means2d[cam, i, 0]) - px
        dy = float(proj.means2d[cam, i, 1]) - py
        a, b, c = proj.conics[cam, i].tolist()
        power = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
        alpha = min(GSPLAT_ALPHA_CLAMP, float(opac[i]) * math.exp(-power))
        if power < 0 or alpha < GSPLAT_ALPHA_THRESHOLD:
            continue
        if T * (1 - alpha) <= GSPLAT_T_STOP:
            break
        color += alpha * T * feats[cam, i]
        T *= 1 - alpha
    return color + T * bg[cam], 1 - T


def test_reference_matches_brute_force_per_pixel():
    scene = make_scene(10, n=60, width=35, height=33, cameras=2, sh_degree=None)
    p = scene["params"]
    images, alphas, _ = rasterize(
        p["means"], p["quats"], p["scales"], p["opacities"], p["colors"], scene["viewmats"], scene["Ks"],
        35, 33, backgrounds=p["backgrounds"], backend="reference",
    )
    proj = project_gaussians(
        p["means"], p["quats"], p["scales"], p["opacities"], scene["viewmats"], scene["Ks"], 35, 33,
        near_plane=0.01, far_plane=1e10,
    )
    feats = p["colors"][None].expand(2, -1, -1)
    for cam, y, x in [(0, 0, 0), (0, 16, 17), (0, 32, 34), (1, 10, 30), (1, 20, 5), (1, 17, 16), (0, 5, 22)]:
        color, alpha = brute_force_pixel(proj, p["opacities"], feats, p["backgrounds"], cam, x + 0.5, y + 0.5)
        torch.testing.assert_close(images[cam, y, x], color, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(alphas[cam, y, x, 0], torch.tensor(alpha, dtype=torch.float64))
    assert float(alphas.max()) > 0.5


def test_gradcheck_cpu_kernel():
    scene = make_scene(11, n=12, width=20, height=18, sh_degree=1)
    p = scene["params"]
    inputs = tuple(p[k].detach().clone().requires_grad_(True) for k in PARAM_NAMES)

    def fn(means, quats, scales, opacities, colors, backgrounds):
        img, alpha, _ = rasterize(
            means, quats, scales, opacities, colors, scene["viewmats"], scene["Ks"], 20, 18,
            backgrounds=backgrounds, render_mode="RGB+ED", backend="cpu",
        )
        return img, alpha

    assert float(fn(*inputs)[1].detach().max()) > 0.3
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)
    for seed in range(3):
        assert directional_derivative_error(fn, inputs, seed) < 1e-6


def directional_derivative_error(fn, inputs: tuple[torch.Tensor, ...], seed: int = 0) -> float:
    """Relative mismatch between the analytic and central-difference derivative of a random
    linear functional of fn's outputs along a random direction in all inputs."""
    g = torch.Generator().manual_seed(seed)
    outs = fn(*inputs)
    vs = [torch.randn(o.shape, generator=g, dtype=torch.float64) for o in outs]
    us = [torch.randn(x.shape, generator=g, dtype=torch.float64) for x in inputs]

    def functional(xs):
        return sum((o * v).sum() for o, v in zip(fn(*xs), vs))

    grads = torch.autograd.grad(functional(inputs), inputs)
    analytic = sum(float((gr * u).sum()) for gr, u in zip(grads, us))
    eps = 1e-6
    with torch.no_grad():
        plus = functional([x + eps * u for x, u in zip(inputs, us)])
        minus = functional([x - eps * u for x, u in zip(inputs, us)])
    numeric = float(plus - minus) / (2 * eps)
    return abs(analytic - numeric) / max(abs(numeric), 1e-12)


def test_directional_check_catches_a_wrong_gradient():
    """The finite-difference checks can fail: a 1% error in one gradient is caught."""
    from reconstruct.raster import kernel_cpu

    scene = make_scene(11, n=12, width=20, height=18, sh_degree=None)
    p = scene["params"]
    inputs = tuple(p[k].detach().clone().requires_grad_(True) for k in ("means", "opacities"))

    def fn(means, opacities):
        img, alpha, _ = rasterize(
            means, p["quats"], p["scales"], opacities, p["colors"], scene["viewmats"], scene["Ks"], 20, 18,
            backend="cpu",
        )
        return img, alpha

    assert directional_derivative_error(fn, inputs) < 1e-6
    original = kernel_cpu._CompositeCPU.backward

    def wrong(ctx, v_images, v_alphas):
        grads = list(original(ctx, v_images, v_alphas))
        grads[2] = grads[2] * 1.01  # opacities
        return tuple(grads)

    kernel_cpu._CompositeCPU.backward = staticmethod(wrong)
    try:
        err = directional_derivative_error(fn, inputs)
    finally:
        kernel_cpu._CompositeCPU.backward = staticmethod(original)
    assert err > 1e-4, err


def test_camera_gradients_take_the_torch_projection_path():
    scene = make_scene(16, n=40, width=24, height=20)
    p = scene["params"]
    inputs = (p["means"].clone().requires_grad_(True), scene["viewmats"].clone().requires_grad_(True))

    def fn(means, viewmats):
        img, alpha, _ = rasterize(
            means, p["quats"], p["scales"], p["opacities"], p["colors"], viewmats, scene["Ks"], 24, 20,
            backgrounds=p["backgrounds"], backend="cpu",
        )
        return img, alpha

    fused_img, fused_alpha, _ = rasterize(
        p["means"], p["quats"], p["scales"], p["opacities"], p["colors"], scene["viewmats"], scene["Ks"], 24, 20,
        backgrounds=p["backgrounds"], backend="cpu",
    )
    img, alpha = fn(*inputs)
    torch.testing.assert_close(img, fused_img, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(alpha, fused_alpha, rtol=1e-12, atol=1e-12)
    (img.sum() + alpha.sum()).backward()
    assert inputs[1].grad is not None and float(inputs[1].grad.abs().max()) > 0
    for seed in range(2):
        assert directional_derivative_error(fn, inputs, seed) < 1e-6


def test_absgrad_bounds_grad():
    scene = make_scene(12)
    p = {k: v.detach().clone().requires_grad_(True) for k, v in scene["params"].items()}
    img, alpha, info = rasterize(
        p["means"], p["quats"], p["scales"], p["opacities"], p["colors"], scene["viewmats"], scene["Ks"],
        40, 36, absgrad=True,
    )
    info["means2d"].retain_grad()
    (img.square().sum() - alpha.sum()).backward()
    grad, absgrad = info["means2d"].grad, info["means2d"].absgrad
    assert absgrad.shape == grad.shape == (1, 120, 2)
    assert (absgrad >= grad.abs() - 1e-12).all() and float(absgrad.max()) > float(grad.abs().max())


def test_culling_and_info_shapes():
    scene = make_scene(13, cameras=2)
    p = scene["params"]
    means = p["means"].clone()
    R, t = scene["viewmats"][0, :3, :3], scene["viewmats"][0, :3, 3]
    means[0] = -R.T @ t - 0.5 * R[2]  # half a unit behind camera 0's center
    means[1] = -R.T @ t + 0.005 * R[2]  # in front of it but closer than the near plane
    _, _, info = rasterize(means, p["quats"], p["scales"], p["opacities"], p["colors"], scene["viewmats"],
                           scene["Ks"], 40, 36)
    assert info["radii"].shape == (2, 120, 2) and info["radii"].dtype == torch.int32
    assert info["means2d"].shape == (2, 120, 2)
    assert (info["radii"][0, :2] == 0).all()
    assert (info["radii"][0] > 0).all(-1).sum() > 60
    assert info["n_cameras"] == 2 and info["width"] == 40 and info["height"] == 36
    assert info["gaussian_ids"] is None
    assert resolve_backend(torch.device("cpu")) == "cpu"
    with pytest.raises(ValueError):
        resolve_backend(torch.device("cpu"), "gsplat")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    log_scale=st.floats(-12.0, 2.0),
    spread=st.floats(0.0, 8.0),
    opacity_scale=st.floats(0.0, 1.0),
    cam_z=st.floats(-6.0, 6.0),
    focal=st.floats(2.0, 400.0),
)
def test_kernel_never_returns_nan(seed, log_scale, spread, opacity_scale, cam_z, focal):
    g = torch.Generator().manual_seed(seed)
    n = 40
    params = {
        "means": (torch.randn(n, 3, generator=g) * spread).requires_grad_(True),
        "quats": torch.randn(n, 4, generator=g).requires_grad_(True),
        "scales": torch.exp(torch.randn(n, 3, generator=g) * 2 + log_scale).requires_grad_(True),
        "opacities": torch.cat([torch.ones(2), torch.rand(n - 2, generator=g) * opacity_scale]).requires_grad_(True),
        "colors": torch.randn(n, 4, 3, generator=g).requires_grad_(True),
        "backgrounds": torch.rand(1, 3, generator=g).requires_grad_(True),
    }
    viewmat = torch.eye(4)
    viewmat[2, 3] = cam_z
    K = torch.tensor([[[focal, 0, 12.0], [0, focal, 10.0], [0, 0, 1]]])
    img, alpha, info = rasterize(
        params["means"], params["quats"], params["scales"], params["opacities"], params["colors"],
        viewmat[None], K, 24, 20, backgrounds=params["backgrounds"], render_mode="RGB+ED",
    )
    info["means2d"].retain_grad()
    (img.sum() + alpha.sum()).backward()
    assert torch.isfinite(img).all() and torch.isfinite(alpha).all()
    assert ((alpha >= 0) & (alpha <= 1)).all()
    for name, t in params.items():
        assert torch.isfinite(t.grad).all(), name
    assert torch.isfinite(info["means2d"].grad).all()


def test_default_strategy_densifies_and_prunes_on_cpu():
    from gsplat.strategy import DefaultStrategy

    scene = make_scene(14, n=200, width=48, height=48, sh_degree=1)
    p = scene["params"]
    g = torch.Generator().manual_seed(0)
    opac = p["opacities"].float().clone()
    opac[:40] = 0.002  # below prune_opa after the first refinement
    params = torch.nn.ParameterDict({
        "means": p["means"].float(),
        "scales": p["scales"].float().log(),
        "quats": p["quats"].float(),
        "opacities": torch.logit(opac),
        "sh0": p["colors"][:, :1].float(),
        "shN": p["colors"][:, 1:].float(),
    })
    optimizers = {k: torch.optim.Adam([v], lr=1e-3) for k, v in params.items()}
    strategy = DefaultStrategy(
        refine_start_iter=2, refine_every=3, reset_every=1000, grow_grad2d=1e-6, prune_opa=0.005, verbose=False,
    )
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state(scene_scale=1.0)
    target = torch.rand(1, 48, 48, 3, generator=g)
    counts = [len(params["means"])]
    for step in range(6):
        img, alpha, info = rasterize(
            params["means"], params["quats"], params["scales"].exp(), torch.sigmoid(params["opacities"]),
            torch.cat([params["sh0"], params["shN"]], 1), scene["viewmats"].float(), scene["Ks"].float(), 48, 48,
        )
        assert info["backend"] == "cpu"
        strategy.step_pre_backward(params, optimizers, state, step, info)
        (img - target).abs().mean().backward()
        assert params["means"].grad is not None and info["means2d"].grad is not None
        for opt in optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
        strategy.step_post_backward(params, optimizers, state, step, info, packed=False)
        counts.append(len(params["means"]))
    # Step 3 is the first refinement (step > refine_start_iter and step % refine_every == 0):
    # every visible Gaussian has a 2D gradient above the tiny threshold, so it is duplicated
    # or split, and the 40 transparent ones (and their copies) are pruned.
    assert counts[1:4] == [counts[0]] * 3, counts
    assert counts[4] > counts[0] + 40, counts
    assert counts[4:] == [counts[4]] * 3, counts
    assert float(torch.sigmoid(params["opacities"].detach()).min()) >= 0.005
    assert all(len(v) == counts[-1] for v in params.values())
    assert all(len(opt.state[opt.param_groups[0]["params"][0]]["exp_avg"]) == counts[-1] for opt in optimizers.values())


def test_numba_compile_is_cached_for_a_second_process():
    render_with_grads(make_scene(0, n=10), "cpu")  # this process compiled or loaded every kernel
    code = (
        "import torch\n"
        "from reconstruct.raster import rasterize, _numba, _numba_project\n"
        "m = torch.zeros(1, 3, requires_grad=True)\n"
        "v = torch.eye(4)[None].clone(); v[0, 2, 3] = 2.0\n"
        "K = torch.tensor([[[10.0, 0, 4], [0, 10.0, 4], [0, 0, 1]]])\n"
        "img, a, _ = rasterize(m, torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.1), torch.tensor([0.9]),\n"
        "                      torch.ones(1, 4, 3, requires_grad=True), v, K, 8, 8)\n"
        "img.sum().backward()\n"
        "fns = [_numba.composite_forward, _numba.composite_backward, _numba_project.project_forward,\n"
        "       _numba_project.project_backward, _numba_project.sh_forward, _numba_project.sh_backward,\n"
        "       _numba.bin_tiles]\n"
        "print(sum(len(f.stats.cache_hits) for f in fns), sum(len(f.stats.cache_misses) for f in fns))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    hits, misses = map(int, out.stdout.split()[-2:])
    assert hits == 7 and misses == 0, out.stdout


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gsplat_on_cuda_matches_cpu_kernel():
    scene = make_scene(15, n=400, width=64, height=48, cameras=2, sh_degree=3, dtype=torch.float32)
    # make_scene's opacities reach 1 (1.0 and 0.9999 included): gsplat's 0.999 clamp is hit.
    assert float(scene["params"]["opacities"].max()) == 1.0
    cpu = render_with_grads(scene, "cpu")
    device = torch.device(torch.cuda.current_device())  # an index names the CUDA device
    gpu_scene = dict(scene)
    gpu_scene["params"] = {k: v.to(device) for k, v in scene["params"].items()}
    gpu_scene["viewmats"], gpu_scene["Ks"] = scene["viewmats"].to(device), scene["Ks"].to(device)
    gpu = render_with_grads(gpu_scene, "auto")
    assert gpu[3]["backend"] == "gsplat"
    assert_close(gpu[0].cpu(), cpu[0], 1e-3, "images")
    assert_close(gpu[1].cpu(), cpu[1], 1e-3, "alphas")
    for name in cpu[2]:
        assert_close(gpu[2][name].cpu(), cpu[2][name], 1e-2, f"d/d{name}")
