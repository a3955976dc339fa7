"""Sparse-view priors: each prior's math on hand-made inputs, its wiring into the trainer, presets/CLI.

Scenes are built here (tiny procedural demo scenes, analytic textured planes); nothing needs
../shared or a model download.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from reconstruct.config import DenseInitConfig
from reconstruct.priors.config import (
    BinocularConfig, DropoutConfig, PriorsConfig, PseudoViewsConfig, Schedule, SfmDepthConfig,
)
from scenes.geometry import look_at
from scenes.types import SceneData

UP = (0.0, -1.0, 0.0)
"""World -y appears up in these tests' images."""


# ---------------------------------------------------------------------- helpers
def _texture(p: np.ndarray) -> np.ndarray:
    """Smooth, non-repeating color texture of plane coordinates p [...,2] -> [...,3]."""
    a, b = p[..., 0], p[..., 1]
    return np.stack([0.5 + 0.4 * np.sin(7 * a + 3 * np.sin(5 * b)), 0.5 + 0.4 * np.sin(9 * b - 2 * np.cos(6 * a)),
                     0.5 + 0.4 * np.cos(5 * a + 8 * b)], -1).astype(np.float32)


def plane_scene(n_views: int = 3, size: int = 48, depth: float = 3.0, texture=_texture) -> SceneData:
    """Cameras on a short horizontal baseline looking at a textured plane z = depth (analytic images)."""
    K = np.array([[size * 1.0, 0, size / 2], [0, size * 1.0, size / 2], [0, 0, 1]])
    Ts = np.stack([look_at([x, 0.0, 0.0], [x * 0.5, 0.0, depth], up=UP) for x in np.linspace(-0.4, 0.4, n_views)])

    def load(i: int) -> np.ndarray:
        ys, xs = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
        rays = np.stack([xs, ys, np.ones_like(xs)], -1) @ np.linalg.inv(K).T @ Ts[i][:3, :3].T
        o = Ts[i][:3, 3]
        t = (depth - o[2]) / rays[..., 2]
        hit = o + rays * t[..., None]
        return texture(hit[..., :2])

    return SceneData(format="synthetic", root=Path("."), image_paths=(), Ks=np.stack([K] * n_views), T_world_cam=Ts,
                     width=size, height=size, train_ids=tuple(range(n_views)), test_ids=(), near=1.0, far=8.0,
                     loader=load)


@pytest.fixture(scope="module")
def demo_scene(tmp_path_factory):
    import scenes
    from reconstruct.demo import write_demo_scene

    root = write_demo_scene(tmp_path_factory.mktemp("scene"), n_train=6, n_test=2, size=32)
    return scenes.load_scene(root, views=4)


def _trainer(scene, tmp_path, priors: PriorsConfig | None = None, *, n=400, seed=0, sfm_points=None):
    """A SplatMethod of n random Gaussians (SH 0, no densification) with ``priors`` attached."""
    from reconstruct.config import InitConfig, LossConfig, OptimConfig
    from reconstruct.priors import attach_priors
    from reconstruct.splatting import SplatMethod, model_from_points

    optim = OptimConfig(sh_degree=0)
    rng = np.random.default_rng(seed)
    model = model_from_points(rng.uniform(-0.6, 0.6, (n, 3)), rng.uniform(0, 1, (n, 3)), init=InitConfig(),
                              optim=optim, scene=scene, device=torch.device("cpu"))
    method = SplatMethod(scene, model, optim=optim, loss=LossConfig(), total_steps=20, seed=seed)
    method.sfm_points = sfm_points
    if priors is not None:
        attach_priors(method, priors, Path(tmp_path) / "priors", seed=seed)
    return method


# ---------------------------------------------------------------------- config, presets, CLI
def test_schedule_ramp_every_start_stop():
    sched = Schedule(start=10, stop=50, warmup=10, every=2)
    assert sched.weight(9, 2.0) == 0 and sched.weight(51, 2.0) == 0 and sched.weight(11, 2.0) == 0
    assert sched.weight(10, 2.0) == pytest.approx(0.2) and sched.weight(30, 2.0) == 2.0
    assert sched.weight(30, 2.0, enabled=False) == 0


def test_presets_vanilla_all_off_sparse_on_and_flags_override():
    from recon.train import parse_train
    from reconstruct.config import SPARSE_PRIORS, SplatTrainConfig, resolve

    van = resolve(SplatTrainConfig(scene=Path("s"), views=3, preset="vanilla"), device_type="cpu").priors
    assert not any(getattr(van, name).enabled for name in van.names())
    sp = resolve(SplatTrainConfig(scene=Path("s"), views=3, preset="sparse"), device_type="cpu")
    for name in sp.priors.names():
        assert getattr(sp.priors, name).enabled == (name in SPARSE_PRIORS), name
    assert sp.init.kind == "sfm" and sp.init.fallback == "dense" and sp.init.min_sfm_points == 200
    assert sp.priors.sfm_depth.min_points == 200  # the depth loss trusts what the init trusts
    assert resolve(SplatTrainConfig(scene=Path("s"), views=3, preset="vanilla"), device_type="cpu").init.fallback == "random"
    demo = str(Path(__file__).resolve().parents[1] / "data" / "demo")
    cfg = parse_train([demo, "--views", "3", "--priors.dropout.enabled", "False", "--priors.binocular.weight", "0.7",
                       "--priors.mono-depth.enabled", "True", "--priors.mono-depth.model", "/x/y"]).cfg
    assert cfg.preset == "sparse" and not cfg.priors.dropout.enabled and cfg.priors.binocular.weight == 0.7
    assert cfg.priors.mono_depth.enabled and cfg.priors.mono_depth.model == "/x/y"
    cfg = parse_train([demo, "--views", "30"]).cfg
    assert cfg.preset == "vanilla" and not cfg.priors.binocular.enabled and cfg.init.kind == "sfm"


# ---------------------------------------------------------------------- dropout
def test_dropout_mask_rate_compensation_and_reproducibility():
    from reconstruct.priors.dropout import dropout_mask, dropout_rate

    m = dropout_mask(200_000, 0.1, seed=3, step=5, device=torch.device("cpu"))
    kept = m > 0
    assert abs(kept.float().mean().item() - 0.9) < 0.005
    assert torch.allclose(m[kept], torch.tensor(1 / 0.9))
    assert abs(m.mean().item() - 1.0) < 0.01  # expected opacity preserved
    assert torch.equal(m, dropout_mask(200_000, 0.1, seed=3, step=5, device=torch.device("cpu")))
    assert not torch.equal(m, dropout_mask(200_000, 0.1, seed=3, step=6, device=torch.device("cpu")))
    c = DropoutConfig(enabled=True, rate=0.2, progressive=False, schedule=Schedule(start=10, stop=20, warmup=5))
    assert dropout_rate(c, 9, 100) == 0 and dropout_rate(c, 21, 100) == 0
    assert dropout_rate(c, 10, 100) == pytest.approx(0.04) and dropout_rate(c, 16, 100) == pytest.approx(0.2)
    # DropGaussian's progressive schedule: 0 at the first step, the full rate at the last
    p = DropoutConfig(enabled=True, rate=0.2)
    assert p.progressive and dropout_rate(p, 0, 10_000) == 0
    assert dropout_rate(p, 5_000, 10_001) == pytest.approx(0.1) and dropout_rate(p, 9_999, 10_000) == pytest.approx(0.2)
    assert dropout_rate(DropoutConfig(enabled=False), 9_999, 10_000) == 0


def test_dropout_applies_to_training_renders_only(demo_scene, tmp_path):
    from reconstruct import gaussians as G

    tr = _trainer(demo_scene, tmp_path, PriorsConfig(dropout=DropoutConfig(enabled=True, rate=0.5, progressive=False)))
    assert len(tr.modifiers) == 1
    train_op = tr.context(3, tr.views[0]).gaussians(True).opacities
    eval_op = G.activate(tr.model.params).opacities
    dropped = train_op == 0
    assert 0.35 < dropped.float().mean() < 0.65
    assert torch.allclose(train_op[~dropped], 2 * eval_op[~dropped])


# ---------------------------------------------------------------------- binocular
def test_warp_from_shifted_matches_disparity():
    from reconstruct.priors.binocular import warp_from_shifted

    h, w, fx, b, depth = 8, 64, 50.0, 0.2, 2.0  # disparity fx*b/depth = 5 px
    x = torch.arange(w, dtype=torch.float32) + 0.5
    shifted = (x / w)[None, :, None].expand(h, w, 3).contiguous()  # ramp: bilinear sampling is exact
    warped, valid = warp_from_shifted(shifted, torch.full((h, w), depth), fx, b)
    expect = ((x - 5.0) / w)[None, :, None].expand(h, w, 3)
    assert valid[:, :5].sum() == 0 and valid[:, 6:].all()
    assert torch.allclose(warped[valid], expect[valid], atol=1e-5)


def test_binocular_loss_prefers_true_depth_and_pulls_toward_it():
    from reconstruct.priors.binocular import warp_from_shifted

    h, w, fx, b, true_depth = 16, 96, 60.0, 0.25, 2.5
    x = torch.arange(w, dtype=torch.float32) + 0.5
    tex = lambda u: torch.stack([0.5 + 0.4 * torch.sin(u / 6), 0.5 + 0.4 * torch.cos(u / 9), 0.5 + 0.3 * torch.sin(u / 4)], -1)  # noqa: E731
    ref = tex(x)[None].expand(h, w, 3)
    partner = tex(x + fx * b / true_depth)[None].expand(h, w, 3)  # partner sees the same plane shifted

    def loss_at(d):
        depth = torch.full((h, w), d, requires_grad=True)
        warped, valid = warp_from_shifted(partner, depth, fx, b)
        loss = (warped - ref).abs()[valid].mean()
        loss.backward()
        return loss.item(), depth.grad.sum().item()

    l_true, _ = loss_at(true_depth)
    l_near, g_near = loss_at(true_depth * 0.85)
    l_far, g_far = loss_at(true_depth * 1.2)
    assert l_true < 0.1 * min(l_near, l_far)
    assert g_near < 0 < g_far  # gradient descent moves the depth toward the truth from both sides


def test_binocular_regularizer_on_trainer_gives_finite_gradients(demo_scene, tmp_path):
    tr = _trainer(demo_scene, tmp_path, PriorsConfig(binocular=BinocularConfig(enabled=True, schedule=Schedule(start=0))))
    assert [r.name for r in tr.regularizers] == ["binocular"]
    r = tr.train_step(0)
    assert "binocular" in r.terms and np.isfinite(r.terms["binocular"]) and r.terms["binocular"] > 0


def test_dense_init_recovers_a_textured_plane():
    from reconstruct.stereo import dense_points

    scene = plane_scene(3, size=32, depth=3.0)
    P, C = dense_points(scene, [0, 1, 2], DenseInitConfig(depths=40, window=7, stride=1, min_ncc=0.8))
    assert len(P) > 150, len(P)
    err = np.abs(P[:, 2] - 3.0)
    assert np.median(err) < 0.08 and np.mean(err < 0.2) > 0.9, (np.median(err), np.mean(err < 0.2))
    assert C.shape == P.shape and C.min() >= 0 and C.max() <= 1


def test_dense_init_skips_pixels_the_background_draws():
    """Pure-background pixels next to texture still match (their NCC window holds the texture); the
    plane sweep drops them unless told not to."""
    import dataclasses

    from reconstruct.stereo import dense_points

    def striped(p: np.ndarray) -> np.ndarray:  # white stripes (the background's colour) on the plane
        return np.where((np.sin(6 * p[..., :1]) > 0.7), np.float32(1.0), _texture(p))

    scene = dataclasses.replace(plane_scene(3, size=32, depth=3.0, texture=striped), background=(1.0, 1.0, 1.0))
    cfg = DenseInitConfig(depths=40, window=7, stride=1, min_ncc=0.8)
    white = lambda C: int((C > 1.0 - 1.0 / 255).all(-1).sum())  # noqa: E731
    P_all, C_all = dense_points(scene, [0, 1, 2], dataclasses.replace(cfg, skip_background=False))
    P, C = dense_points(scene, [0, 1, 2], cfg)
    assert white(C_all) >= 20 and white(C) == 0, (white(C_all), white(C))
    assert len(P) == len(P_all) - white(C_all) and np.median(np.abs(P[:, 2] - 3.0)) < 0.08


def test_dense_init_replaces_random_points_adds_to_sfm_and_is_cached(tmp_path):
    from reconstruct.config import InitConfig
    from reconstruct.init import initialize

    scene = plane_scene(3, size=32, depth=3.0)
    dense = DenseInitConfig(depths=24, stride=2)
    fallback = initialize(InitConfig(kind="dense", n_random=50, min_sfm_points=10**6, dense=dense), scene, seed=0,
                          cache_dir=tmp_path / "cache")
    assert fallback.kind == "dense" and len(fallback.points) > 30 and "was random" in fallback.how
    assert len(list((tmp_path / "cache").glob("dense_init_*.npz"))) == 1
    added = initialize(InitConfig(kind="dense", min_sfm_points=0, dense=dense), scene, seed=0, cache_dir=tmp_path / "cache")
    assert added.how.startswith("sfm (") and "+ dense plane-sweep" in added.how
    n_sfm = len(added.sfm_points)
    assert np.array_equal(added.points[n_sfm:], fallback.points)  # the cached plane-sweep points, after the SfM ones
    # sfm with the dense fallback: the plane-sweep points only where sfm found too few
    few = initialize(InitConfig(kind="sfm", fallback="dense", n_random=50, min_sfm_points=10**6, dense=dense), scene,
                     seed=0, cache_dir=tmp_path / "cache")
    assert few.kind == "dense" and np.array_equal(few.points, fallback.points)
    enough = initialize(InitConfig(kind="sfm", fallback="dense", min_sfm_points=0, dense=dense), scene, seed=0,
                        cache_dir=tmp_path / "cache")
    assert enough.kind == "sfm" and "plane-sweep" not in enough.how  # (SIFT's threads may vary the count)
    assert len(enough.points) == len(enough.sfm_points)
    assert len(list((tmp_path / "cache").glob("dense_init_*.npz"))) == 1


# ---------------------------------------------------------------------- pseudo views
def test_pseudo_pose_interpolation_and_terms():
    from reconstruct.priors.pseudo import edge_aware_smoothness, interpolate_pose, opacity_entropy, pseudo_camera

    Ta, Tb = look_at([-1.0, 0, 0], [0, 0, 3], up=UP), look_at([1.0, 0, 0], [0, 0, 3], up=UP)
    assert np.allclose(interpolate_pose(Ta, Tb, 0.0), Ta) and np.allclose(interpolate_pose(Ta, Tb, 1.0), Tb)
    mid = interpolate_pose(Ta, Tb, 0.5)
    assert np.allclose(mid[:3, 3], 0) and np.allclose(mid[:3, :3] @ mid[:3, :3].T, np.eye(3), atol=1e-9)
    assert np.allclose(mid[:3, 2], [0, 0, 1], atol=1e-9)  # symmetric look directions average to forward
    T, frame = pseudo_camera(np.stack([Ta, Tb]), [0, 1], np.random.default_rng(0), jitter=0.0, scene_scale=1.0)
    assert frame in (0, 1) and abs(T[0, 3]) < 0.61
    rgb = torch.rand(16, 16, 3)
    assert edge_aware_smoothness(torch.full((16, 16), 2.0), rgb) == 0
    assert edge_aware_smoothness(torch.rand(16, 16) + 1, rgb) > 0
    assert opacity_entropy(torch.full((4,), 0.5)) > opacity_entropy(torch.tensor([0.0, 1.0, 0.02, 0.98]))


def test_pseudo_views_regularizer_runs_in_training(demo_scene, tmp_path):
    tr = _trainer(demo_scene, tmp_path, PriorsConfig(pseudo_views=PseudoViewsConfig(enabled=True,
                                                                                 schedule=Schedule(start=0, every=1))))
    r = tr.train_step(0)
    assert r.terms["pseudo_views"] > 0 and np.isfinite(r.terms["pseudo_views"])
    assert all(p.grad is None for p in tr.model.params.values())  # step applied and cleared


# ---------------------------------------------------------------------- SfM depth
def test_project_sparse_depth_keeps_nearest_per_cell_and_drops_behind():
    from reconstruct.priors.depth import project_sparse_depth

    K = np.array([[10.0, 0, 8], [0, 10.0, 8], [0, 0, 1]])
    pts = np.array([[0, 0, 2.0], [0.001, 0.001, 4.0], [0, 0, -2.0], [5.0, 0, 1.0], [1.5, 1.5, 3.0]])
    px, z = project_sparse_depth(pts, K, np.eye(4), 16, 16, cell=4)
    assert sorted(z.tolist()) == [2.0, 3.0]
    assert {tuple(p) for p in px.tolist()} == {(8, 8), (13, 13)}


def test_sfm_depth_loss_zero_at_targets(demo_scene, tmp_path):
    from types import SimpleNamespace

    from reconstruct.priors.depth import SfmDepthLoss
    from reconstruct.splatting import ViewBatch

    targets = {7: (torch.tensor([[1, 2], [3, 4]]), torch.tensor([2.0, 4.0]))}
    loss = SfmDepthLoss(SfmDepthConfig(enabled=True, weight=1.0), targets)
    render = torch.zeros(1, 8, 8, 4)
    render[0, 2, 1, 3], render[0, 4, 3, 3] = 2.0, 4.0
    view = ViewBatch(frame=7, image=torch.zeros(8, 8, 3), T_world_cam=torch.eye(4)[None], K=torch.eye(3)[None])
    ctx = SimpleNamespace(step=0, view=view)
    assert float(loss.loss(ctx, render)) == 0
    render[0, 4, 3, 3] = 6.0
    assert float(loss.loss(ctx, render)) == pytest.approx(0.25)
    view.frame = 8
    assert loss.loss(ctx, render) is None


def test_sfm_depth_attached_from_initial_sfm_points(demo_scene, tmp_path):
    points = np.random.default_rng(0).uniform(-0.6, 0.6, (400, 3))  # stand-ins for the triangulated points
    tr = _trainer(demo_scene, tmp_path, PriorsConfig(sfm_depth=SfmDepthConfig(enabled=True, min_points=200)),
                  sfm_points=points)
    (reg,) = tr.regularizers
    assert set(reg.targets) == set(demo_scene.train_ids) and sum(len(t[1]) for t in reg.targets.values()) > 50
    r = tr.train_step(0)
    assert r.terms["sfm_depth"] > 0


def test_sfm_depth_stays_off_on_too_few_points_and_says_so(demo_scene, tmp_path):
    points = np.random.default_rng(0).uniform(-0.6, 0.6, (82, 3))  # what SIFT gave lego's 8 views
    tr = _trainer(demo_scene, tmp_path, PriorsConfig(sfm_depth=SfmDepthConfig(enabled=True, min_points=200)),
                  sfm_points=points)
    assert tr.regularizers == [] and tr.init_record["sfm_depth"] == "off (82 < 200 triangulated points)"
    tr = _trainer(demo_scene, tmp_path, PriorsConfig(sfm_depth=SfmDepthConfig(enabled=True, min_points=80)),
                  sfm_points=points)
    assert len(tr.regularizers) == 1


def test_sfm_depth_after_a_random_start_triangulates_as_the_run_says(demo_scene, tmp_path, monkeypatch):
    """A random (or .ply) start makes no SfM points; the depth prior triangulates them with the run's
    matcher and SIFT scale, and with the vanilla preset's when the options are unresolved."""
    import reconstruct.init as init_mod
    from recon.train import parse_train
    from reconstruct.config import InitConfig
    from reconstruct.priors.depth import SfmDepthLoss
    from reconstruct.training import build_method

    calls: list[dict] = []

    def triangulate(scene, ids, **options):
        calls.append(options)
        return np.random.default_rng(0).uniform(-0.6, 0.6, (300, 3)), np.full((300, 3), 0.5)

    monkeypatch.setattr(init_mod, "triangulate_views", triangulate)
    _trainer(demo_scene, tmp_path, PriorsConfig(sfm_depth=SfmDepthConfig(enabled=True, min_points=200)))
    assert calls.pop() == {"matching": "exhaustive", "sift_upscale": 1}
    cfg = parse_train([str(Path(__file__).resolve().parents[1] / "data" / "demo"), "--views", "3", "--preset",
                       "sparse", "--init.kind", "random", "--init.n-random", "300", "--iters", "4"]).cfg
    assert isinstance(cfg.init, InitConfig) and cfg.priors.sfm_depth.enabled
    method = build_method(cfg, demo_scene, torch.device("cpu"), cache_dir=tmp_path)
    assert calls == [{"matching": "epipolar", "sift_upscale": 2}]
    assert method.sfm_points is not None and len(method.sfm_points) == 300
    assert any(isinstance(r, SfmDepthLoss) for r in method.regularizers)


# ---------------------------------------------------------------------- depth losses
def test_pearson_and_ranking_losses():
    from reconstruct.priors.depth import pearson_loss, ranking_loss

    a = torch.rand(1000)
    assert float(pearson_loss(a, 3 * a + 1)) == pytest.approx(0, abs=1e-5)
    assert float(pearson_loss(a, -a)) == pytest.approx(2, abs=1e-5)
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    depth = 1 + xs / 32  # farther to the right
    g = torch.Generator().manual_seed(0)
    agree = ranking_loss(depth, 1 / depth, pairs=2000, radius=4, margin=0.0, generator=g)
    disagree = ranking_loss(depth, depth, pairs=2000, radius=4, margin=0.0, generator=g)
    assert float(agree) == 0 and float(disagree) > 0


# ---------------------------------------------------------------------- bench plumbing
def test_bench_budget_summary_table_and_chart(tmp_path):
    from recon.bench import PriorsBench
    from recon.bench.priors import _summary, budget_config, run, variant_config, write_outputs

    bench = PriorsBench(iters=120)
    cfg = variant_config("binocular", Path("s"), 3, 2, bench, tmp_path)
    assert cfg.seed == 2 and cfg.iters == 120 and cfg.priors.binocular.enabled and not cfg.priors.dropout.enabled
    assert cfg.densify.refine_stop_iter < 120 < cfg.densify.reset_every and cfg.priors.binocular.schedule.start == 24
    assert budget_config(cfg, 120).output.eval_at_end is False
    runs = [{"psnr": p, "ssim": 0.5, "train_seconds": 3.0, "n_gaussians": 10} for p in (20.0, 22.0)]
    s = _summary(runs)
    assert s["psnr"] == 21.0 and s["psnr_std"] == 1.0
    results = {"config": {"iters": 120, "seeds": [0, 1], "fern_resolution": 126, "lego_resolution": 100},
               "total_seconds": 60.0, "scenes": {"fern3": {"views": 3, "width": 126, "height": 95, "n_test": 3,
                                                           "variants": {"vanilla": _summary(runs[:1]), "sparse": s,
                                                                        "mono_depth": {"skipped": "no weights"}}}}}
    text = write_outputs(results, tmp_path / "out")
    assert "| sparse | 21.00 ± 1.00 | +1.00 |" in text and "skipped: no weights" in text
    assert (tmp_path / "out" / "bars.png").stat().st_size > 1000 and (tmp_path / "out" / "results.json").is_file()
    missing = run(PriorsBench(data=tmp_path / "nowhere", out=tmp_path / "o2", scenes=("fern3",)))
    assert "not found" in missing["scenes"]["fern3"]["skipped"]


def test_step_render_at_a_fraction_of_the_size_scales_the_intrinsics(demo_scene, tmp_path):
    from reconstruct import gaussians as G

    tr = _trainer(demo_scene, tmp_path, PriorsConfig())
    captured = {}

    class Grab:
        name, needs_depth = "grab", False

        def loss(self, ctx, render):
            captured["ctx"] = ctx
            return None

    tr.regularizers.append(Grab())
    tr.train_step(0)
    ctx = captured["ctx"]
    half, _, _ = ctx.render(ctx.view.T_world_cam, ctx.view.K, scale=0.5, modified=False)
    w, h = round(ctx.scene.width * 0.5), round(ctx.scene.height * 0.5)
    K = ctx.view.K.clone()
    K[:, 0] *= w / ctx.scene.width
    K[:, 1] *= h / ctx.scene.height
    ref, _, _ = G.render(ctx.gaussians(False), ctx.view.T_world_cam, K, w, h, sh_degree=ctx.sh_degree,
                         background=ctx.background, render_mode="RGB")
    assert half.shape == (1, h, w, 3) and torch.allclose(half, ref)
