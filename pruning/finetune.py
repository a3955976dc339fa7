"""A short fine-tuning loop for compression phases (masks, codebooks) on a finished splat run.

The same photometric loss as training ((1 - lambda) L1 + lambda D-SSIM on one training view per
step, seeded view order), the lead's render call (reconstruct.gaussians.render, so the CPU kernel
or gsplat runs it), plus the phase's modifiers, loss terms, strategies and after-step callbacks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch


@dataclass
class Phase:
    """What a compression phase adds to the plain fine-tuning loop."""

    name: str
    """Shown on the progress bar."""
    steps: int
    """Fine-tuning steps."""
    modifiers: list[Callable] = field(default_factory=list)
    """(Activated, params, step) -> Activated, applied in order before the render."""
    losses: list[Callable[[Any], torch.Tensor]] = field(default_factory=list)
    """params -> scalar loss terms."""
    strategies: list[tuple[Any, dict]] = field(default_factory=list)
    """(strategy, state) pairs with gsplat's step_pre_backward / step_post_backward."""
    after_step: list[Callable[[Any], None]] = field(default_factory=list)
    """params -> None, after the optimizers stepped (codebook updates)."""
    frozen: tuple[str, ...] = ()
    """Per-Gaussian parameters not stepped in this phase."""


def scene_scale(scene) -> float:
    """Extent of the training cameras (as the trainer computes it)."""
    centers = scene.T_world_cam[list(scene.train_ids), :3, 3]
    return float(np.linalg.norm(centers - centers.mean(0), axis=1).max() * 1.1) or 1.0


def make_optimizers(params, optim_cfg, scale: float, *, frozen: tuple[str, ...] = (), lr_scale: float = 1.0) -> dict:
    """One Adam per trainable parameter; positions at the run's final (smallest) learning rate, every
    splat attribute's rate times ``lr_scale`` (other entries, such as mask logits, at 1e-2)."""
    lrs = {
        "means": optim_cfg.lr_means_final * scale, "scales": optim_cfg.lr_scales, "quats": optim_cfg.lr_quats,
        "opacities": optim_cfg.lr_opacities, "sh0": optim_cfg.lr_sh0, "shN": optim_cfg.lr_shN,
    }
    lrs = {k: v * lr_scale for k, v in lrs.items()}
    out = {}
    for name, p in params.items():
        if name in frozen:
            p.requires_grad_(False)
            continue
        p.requires_grad_(True)
        out[name] = torch.optim.Adam([{"params": [p], "lr": lrs.get(name, 1e-2), "name": name}], eps=1e-15)
    return out


def run_phase(params, optimizers: dict, scene, phase: Phase, *, sh_degree: int, ssim_lambda: float = 0.2,
              seed: int = 0, progress: bool = True) -> list[dict]:
    """Fine-tune ``params`` (a ParameterDict, modified in place) for ``phase.steps`` steps.

    Returns a short history (step, loss, training-view PSNR, Gaussians) every 10% of the steps.
    """
    from reconstruct import gaussians as G
    from reconstruct.metrics import dssim_loss

    device = params["means"].device
    train_ids = list(scene.train_ids)
    images = {i: torch.as_tensor(scene.image(i), device=device) for i in train_ids}
    bg = torch.tensor(scene.background, dtype=torch.float32, device=device)
    history: list[dict] = []
    bar = _progress(phase.name, phase.steps, enabled=progress)
    with bar:
        task = bar.add_task(phase.name, total=phase.steps, stats="")
        for step in range(phase.steps):
            epoch, k = divmod(step, len(train_ids))
            frame = train_ids[int(np.random.default_rng([seed, 7, epoch]).permutation(len(train_ids))[k])]
            gs = G.activate(params)
            for modify in phase.modifiers:
                gs = modify(gs, params, step)
            T = torch.as_tensor(scene.T_world_cam[frame], dtype=torch.float32, device=device)[None]
            K = torch.as_tensor(scene.Ks[frame], dtype=torch.float32, device=device)[None]
            renders, _, info = G.render(gs, T, K, scene.width, scene.height, sh_degree=sh_degree,
                                        background=bg, render_mode="RGB")
            rgb, gt = renders[0, ..., :3], images[frame]
            loss = (1 - ssim_lambda) * (rgb - gt).abs().mean() + ssim_lambda * dssim_loss(rgb, gt)
            for term in phase.losses:
                loss = loss + term(params)
            for strategy, state in phase.strategies:
                strategy.step_pre_backward(params, optimizers, state, step, info)
            loss.backward()
            for opt in optimizers.values():
                opt.step()
                opt.zero_grad(set_to_none=True)
            for fn in phase.after_step:
                fn(params)
            for strategy, state in phase.strategies:
                strategy.step_post_backward(params, optimizers, state, step, info)
            mse = float(((rgb.detach().clamp(0, 1) - gt) ** 2).mean())
            loss = loss.detach()
            n = int(params["means"].shape[0])
            if step % max(1, phase.steps // 10) == 0 or step == phase.steps - 1:
                history.append({"step": step, "loss": float(loss), "psnr": -10 * np.log10(max(mse, 1e-10)), "n": n})
            bar.update(task, advance=1, stats=f"loss {float(loss):.4f}  gaussians {n:,}")
    return history


def _progress(name: str, total: int, *, enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    import sys

    return Progress(TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                    TimeRemainingColumn(), console=Console(file=sys.stderr), disable=not enabled, transient=False)
