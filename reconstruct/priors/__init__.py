"""Sparse-view priors for the Gaussian-splat trainer.

``attach_priors(trainer)`` (called by ``reconstruct.run_train.attach_extensions``) reads
``trainer.cfg.priors`` and adds, for each enabled prior, a modifier (dropout), regularizers
(binocular, pseudo views, SfM depth, monocular depth, diffusion) or a new initial point cloud
(dense init). Nothing heavy is imported here until a prior is switched on.
"""

from __future__ import annotations

from pathlib import Path


def _fresh(trainer) -> bool:
    """True for a new run (not a resume): the trainer's history starts with the init record."""
    return trainer.step == 0 and bool(trainer.history) and "init" in trainer.history[0]


def _reinitialize(trainer, points, colors, how: str) -> None:
    """Replace the initial Gaussians (and their optimizers/strategy state) by new points [P,3]."""
    from reconstruct import gaussians as G

    cfg = trainer.cfg
    trainer.params = G.create_params(points, colors, init=cfg.init, sh_degree=cfg.optim.sh_degree, device=trainer.device)
    trainer.optimizers = G.create_optimizers(trainer.params, cfg.optim, trainer.scene_scale)
    trainer.strategy_states = [s.initialize_state(scene_scale=trainer.scene_scale) for s in trainer.strategies]
    trainer.history[0].update(init=how, n_points=len(points))


def _cached_dense_points(trainer, cache: Path):
    """Dense plane-sweep points for the trainer's scene, cached in ``cache`` keyed by views, size and config."""
    import dataclasses
    import hashlib
    import io
    import json

    import numpy as np

    from reconstruct.priors.binocular import dense_points
    from reconstruct.runs import atomic_write_bytes

    scene = trainer.scene
    key = json.dumps([str(getattr(scene, "root", "")), list(map(int, trainer.train_ids)), scene.width, scene.height,
                      dataclasses.asdict(trainer.cfg.priors.dense_init),
                      np.asarray(scene.T_world_cam)[list(trainer.train_ids)].round(6).tolist()], default=str)
    path = cache / f"dense_init_{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"
    if path.is_file():
        with np.load(path) as f:
            return f["points"], f["colors"]
    P, C = dense_points(scene, list(trainer.train_ids), trainer.cfg.priors.dense_init, seed=0)  # same for every seed
    buf = io.BytesIO()
    np.savez(buf, points=P, colors=C)
    atomic_write_bytes(path, buf.getvalue())
    return P, C


def attach_priors(trainer) -> None:
    """Wire every enabled prior of ``trainer.cfg.priors`` into ``trainer``."""
    pc = trainer.cfg.priors
    seed = trainer.cfg.seed
    cache = Path(pc.cache_dir) if pc.cache_dir is not None else trainer.run_dir / "priors"
    sfm_points = None
    if _fresh(trainer) and str(trainer.history[0].get("init", "")).startswith("sfm"):
        sfm_points = trainer.params["means"].detach().cpu().numpy().astype("float64")

    def sfm():
        nonlocal sfm_points
        if sfm_points is None:
            from reconstruct.init import triangulate_views

            sfm_points = triangulate_views(trainer.scene, list(trainer.train_ids))[0]
        return sfm_points

    if pc.sfm_depth.enabled:
        from reconstruct.priors.depth import SfmDepthLoss, sfm_depth_targets

        targets = sfm_depth_targets(sfm(), trainer.scene, trainer.train_ids, pc.sfm_depth, trainer.device)
        trainer.regularizers.append(SfmDepthLoss(pc.sfm_depth, targets))
    if pc.dense_init.enabled and _fresh(trainer):
        import numpy as np

        from reconstruct.priors.binocular import dense_points

        P, C = _cached_dense_points(trainer, cache)
        if len(P):
            before = str(trainer.history[0]["init"])
            if before.startswith("random"):
                # random points fill every frustum with colored haze; matched points replace them
                points, colors, how = P, np.clip(C, 0, 1), f"dense plane-sweep ({len(P)} points; was {before})"
            else:
                base = trainer.params["means"].detach().cpu().numpy()
                base_c = trainer.params["sh0"].detach().cpu().numpy()[:, 0] * 0.28209479177387814 + 0.5
                points, colors = np.concatenate([base, P]), np.clip(np.concatenate([base_c, C]), 0, 1)
                how = f"{before} + dense plane-sweep ({len(P)} points)"
            _reinitialize(trainer, points, colors, how)
    if pc.dropout.enabled:
        from reconstruct.priors.dropout import GaussianDropout

        trainer.modifiers.append(GaussianDropout(pc.dropout, seed))
    if pc.binocular.enabled:
        from reconstruct.priors.binocular import BinocularLoss

        trainer.regularizers.append(BinocularLoss(pc.binocular, seed))
    if pc.pseudo_views.enabled:
        from reconstruct.priors.pseudo import PseudoViewLoss

        trainer.regularizers.append(PseudoViewLoss(pc.pseudo_views, seed))
    if pc.mono_depth.enabled:
        from reconstruct.priors.depth import MonoDepthLoss, predict_mono_depth

        preds = predict_mono_depth(trainer.scene, list(trainer.train_ids), pc.mono_depth, cache)
        if preds is not None:
            trainer.regularizers.append(MonoDepthLoss(pc.mono_depth, preds, trainer.device, seed))
    if pc.diffusion.enabled:
        from reconstruct.priors.diffusion import attach_diffusion

        attach_diffusion(trainer, pc.diffusion, cache)
