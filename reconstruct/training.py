"""Building a run's method from its config, and the outputs a finished run writes.

    method = build_method(cfg, scene, device, cache_dir=run.priors_dir)     # init resolved here
    state = train_loop(method, LoopState(), until=cfg.iters, save=run.save_checkpoint)
    result = finish(run, method, state)

The CLI composes these with what lives above this package (learnable masks, the live viewer).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from reconstruct.config import NerfTrainConfig, SplatTrainConfig, TrainConfig
from reconstruct.loop import LoopState
from reconstruct.method import Method
from reconstruct.run import Run
from scenes.types import SceneData

log = logging.getLogger(__name__)


def build_method(cfg: TrainConfig, scene: SceneData, device: torch.device, *, cache_dir: Path | None,
                 resume_state: dict | None = None) -> Method:
    """The method of ``cfg`` (resolved) on ``scene``: the model initialized (SfM, dense, random or a
    .ply), or, with ``resume_state`` (a checkpoint's method state, loaded next by the caller), a
    placeholder whose priors take the checkpoint's SfM points instead of triangulating again."""
    fresh = resume_state is None
    if isinstance(cfg, NerfTrainConfig):
        from reconstruct.nerf.method import NerfMethod

        return NerfMethod(cfg, scene, device)
    assert isinstance(cfg, SplatTrainConfig)
    from reconstruct.init import initialize
    from reconstruct.priors import attach_priors
    from reconstruct.densify import Densify
    from reconstruct.splatting import GaussianModel, SplatMethod, model_from_points

    from reconstruct.poses import estimated

    init = initialize(cfg.init, scene, seed=cfg.seed, cache_dir=cache_dir, scene_points=estimated(cfg)) if fresh else None
    if init is not None and init.splats is not None:
        from reconstruct import gaussians as G

        params = torch.nn.ParameterDict({k: torch.nn.Parameter(v.clone()) for k, v in
                                         init.splats.with_sh_degree(cfg.optim.sh_degree).to_params(str(device)).items()})
        model = GaussianModel(params, G.create_optimizers(params, G.learning_rates(cfg.optim, G.camera_extent(scene))),
                              G.scene_scale(scene))
    else:
        points = init.points if init is not None else np.zeros((2, 3)) + np.arange(2)[:, None]
        colors = init.colors if init is not None else np.full_like(points, 0.5)
        model = model_from_points(points, colors, init=cfg.init, optim=cfg.optim, scene=scene, device=device)
    method = SplatMethod(scene, model, optim=cfg.optim, loss=cfg.loss, total_steps=cfg.iters, seed=cfg.seed)
    if init is not None:
        method.sfm_points = init.sfm_points
        method.init_record = init.record()
    elif resume_state is not None and resume_state.get("sfm_points") is not None:
        method.sfm_points = resume_state["sfm_points"].numpy()
    if cfg.cameras.enabled:
        from reconstruct.cameras import CameraRefinement

        method.cameras = CameraRefinement(len(method.views), cfg=cfg.cameras, scene_scale=model.scene_scale,
                                          total_steps=cfg.iters, device=device)
    if cfg.densify.enabled:
        model.add_strategy(Densify(cfg.densify, near=float(scene.near)))
    attach_priors(method, cfg.priors, cache_dir or Path(cfg.priors.cache_dir or "."), seed=cfg.seed, init=cfg.init)
    return method


def frozen_gaussians(method):
    """The method's activated Gaussians, detached (scoring and test-time pose alignment)."""
    from reconstruct import gaussians as G

    params = torch.nn.ParameterDict({k: torch.nn.Parameter(v.detach(), requires_grad=False)
                                     for k, v in method.model.params.items()})
    return G.activate(params)


class TestCurveHook:
    """Scores the test views every ``every`` steps and adds {step, test_psnr, test_ssim} to the
    history (the test-PSNR curve of curves.png). It only renders: the method and its random streams
    are untouched, so a run with the hook trains exactly as one without."""

    def __init__(self, *, every: int) -> None:
        assert every > 0, every
        self.every = every

    def on_step(self, method: Method, state: LoopState, out) -> None:
        if state.step % self.every:
            return
        from reconstruct.evaluate import evaluate_views

        with torch.no_grad():
            r = evaluate_views(method.render_view, method.scene, with_lpips=False)
        state.history.append({"step": state.step - 1, "test_psnr": r["psnr"], "test_ssim": r["ssim"]})

    def on_end(self, method: Method, state: LoopState) -> None:
        pass


def summary(method: Method) -> dict:
    """What a run's metrics report about the model."""
    from reconstruct.splatting import SplatMethod

    if isinstance(method, SplatMethod):
        return {"n_gaussians": len(method.model)}
    return {"n_params": method.n_params()}  # type: ignore[attr-defined]


def finish(run: Run, method: Method, state: LoopState, *, evaluate: bool = True) -> dict | None:
    """A finished run's outputs: splats.ply (splat runs), history.json, curves.png and, with
    ``evaluate``, the test-view renders, grid.png and metrics.json. Returns the metrics."""
    from reconstruct.evaluate import evaluate_views, plot_curves
    from reconstruct.splatting import SplatMethod

    extra: dict = {}
    if isinstance(method, SplatMethod):
        run.write_splats(method.model.splats())
        extra["ply_bytes"] = run.splats_path.stat().st_size
    run.write_json(run.history_path, state.history)
    trained = any("loss" in h for h in state.history)
    if not evaluate:
        if trained:
            plot_curves(state.history, run.curves_path)
        return None
    from reconstruct.poses import estimated

    if isinstance(method, SplatMethod) and estimated(run.config):
        from reconstruct.posefree import evaluate_estimated

        result = evaluate_estimated(run, frozen_gaussians(method), method.scene, method.training_cameras(),
                                    sh_degree=method.model.sh_degree)
    else:
        with torch.no_grad():
            result = evaluate_views(method.render_view, method.scene, out_dir=run.root)  # type: ignore[attr-defined]
    if trained:
        final = [{"step": state.step - 1, "test_psnr": result["psnr"]}] if result.get("psnr") is not None else []
        plot_curves([*state.history, *final], run.curves_path)
    result.update(method=method.name, train_seconds=state.seconds, iters=state.step, **summary(method), **extra)
    result["warnings"] = health_warnings(state, result)
    for warning in result["warnings"]:
        log.warning("%s: %s", run.root, warning)
    run.write_metrics(result)
    return result


COLLAPSE_FLOOR = 1_000
"""A splat run that ends below this many Gaussians, and below a tenth of what it started with, collapsed."""


def health_warnings(state: LoopState, result: dict) -> list[str]:
    """What says a run did not really reconstruct, whatever its PSNR: the Gaussian count collapsed
    (and which mechanism removed them), or the test renders are flat (no structure where the photos
    have it)."""
    warnings = []
    start = next((h.get("n_points") for h in state.history if "n_points" in h), None)
    final = result.get("n_gaussians")
    if start and final is not None and final < COLLAPSE_FLOOR and final < 0.1 * start:
        removed: dict[str, int] = {}
        for h in state.history:
            for key in ("densify_pruned", "mask_removed"):
                removed[key] = removed.get(key, 0) + int(h.get(key, 0))
        worst = max(removed, key=lambda k: removed[k]) if any(removed.values()) else "unknown"
        warnings.append(f"Gaussian count collapsed: {start:,} at the start, {final:,} at the end "
                        f"(removed by {worst}: {removed.get(worst, 0):,})")
    views = result.get("per_view") or []
    if views:
        render = float(np.mean([v["render_std"] for v in views]))
        photo = float(np.mean([v["gt_std"] for v in views]))
        if photo > 0.02 and render < 0.25 * photo:
            warnings.append(f"test renders are flat (pixel std {render:.3f} against {photo:.3f} in the photos)")
    return warnings
