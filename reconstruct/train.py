"""The Gaussian-splat trainer: a short loop, everything else in hooks, regularizers and strategies.

A step: pick a training view (seeded permutation per epoch), render it with the training-time
modifiers (dropout, masks), L1 + D-SSIM plus regularizer terms, densification strategies around
backward, Adam step, NaN guard. Hooks see every step (progress bar, curves, checkpoints, viewer).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from reconstruct import gaussians as G
from reconstruct.config import TrainConfig
from reconstruct.metrics import dssim_loss
from reconstruct.runs import atomic_torch_save, rng_state, set_rng_state
from scenes.errors import ReconError
from scenes.types import SceneData


@dataclass
class StepResult:
    step: int
    loss: float
    psnr: float
    n_gaussians: int
    terms: dict[str, float] = field(default_factory=dict)


@dataclass
class ViewBatch:
    """One training view as the loss sees it."""

    frame: int
    image: torch.Tensor  # [H, W, 3] ground truth
    T_world_cam: torch.Tensor  # [1, 4, 4]
    K: torch.Tensor  # [1, 3, 3]


class Regularizer(Protocol):
    """A loss term beyond the photometric one (depth priors, pseudo views, ...)."""

    name: str
    needs_depth: bool

    def loss(self, trainer: "Trainer", view: ViewBatch, render: torch.Tensor, step: int) -> torch.Tensor | None:
        """render: [1, H, W, 3 (+1 depth when needs_depth)]. None when inactive at this step."""


class Hook(Protocol):
    def on_step(self, trainer: "Trainer", result: StepResult) -> None: ...

    def on_end(self, trainer: "Trainer") -> None: ...


class NonFiniteError(RuntimeError):
    def __init__(self, message: str, *, params_corrupted: bool = False) -> None:
        super().__init__(message)
        self.params_corrupted = params_corrupted


class Trainer:
    """State of one training run; ``run()`` is the loop."""

    def __init__(self, cfg: TrainConfig, scene: SceneData, run_dir: Path, device: torch.device) -> None:
        self.cfg, self.scene, self.run_dir, self.device = cfg, scene, Path(run_dir), device
        self.step = 0
        self.history: list[dict] = []
        self.modifiers: list[G.Modifier] = []
        self.regularizers: list[Regularizer] = []
        self.strategies: list = []
        self.strategy_states: list[dict] = []
        self.bad_steps = 0  # failures in a row
        self.failed_steps: list[int] = []
        self.train_ids = list(scene.train_ids)
        self.background = torch.tensor(scene.background, dtype=torch.float32, device=device)
        centers = scene.T_world_cam[self.train_ids, :3, 3]
        self.scene_scale = float(np.linalg.norm(centers - centers.mean(0), axis=1).max() * 1.1) or 1.0
        self.views = [self._view(i) for i in self.train_ids]
        self.params: torch.nn.ParameterDict | None = None
        self.optimizers: dict = {}
        self.seconds = 0.0

    def _view(self, frame: int) -> ViewBatch:
        s, d = self.scene, self.device
        return ViewBatch(
            frame=frame,
            image=torch.as_tensor(s.image(frame), device=d),
            T_world_cam=torch.as_tensor(s.T_world_cam[frame], dtype=torch.float32, device=d)[None],
            K=torch.as_tensor(s.Ks[frame], dtype=torch.float32, device=d)[None],
        )

    # ------------------------------------------------------------------ setup
    def initialize(self, points: np.ndarray, colors: np.ndarray) -> None:
        from gsplat.strategy import DefaultStrategy

        cfg = self.cfg
        self.params = G.create_params(points, colors, init=cfg.init, sh_degree=cfg.optim.sh_degree, device=self.device)
        if cfg.densify.enabled:
            d = cfg.densify
            self.strategies.append(DefaultStrategy(
                prune_opa=d.prune_opa, grow_grad2d=d.grow_grad2d, refine_start_iter=d.refine_start_iter,
                refine_stop_iter=d.refine_stop_iter, refine_every=d.refine_every, reset_every=d.reset_every,
            ))
        self.optimizers = G.create_optimizers(self.params, cfg.optim, self.scene_scale)
        self.strategy_states = [s.initialize_state(scene_scale=self.scene_scale) for s in self.strategies]

    def add_parameter(self, name: str, value: torch.Tensor, lr: float) -> None:
        """Register an extra per-Gaussian parameter (e.g. mask logits) with its own Adam."""
        self.params[name] = torch.nn.Parameter(value.to(self.device))
        self.optimizers[name] = torch.optim.Adam([{"params": self.params[name], "lr": lr, "name": name}], eps=1e-15, fused=True)

    # ------------------------------------------------------------------ one step
    def active_sh_degree(self, step: int) -> int:
        return min(step // self.cfg.optim.sh_degree_interval, self.cfg.optim.sh_degree)

    def training_gaussians(self, step: int) -> G.Activated:
        gs = G.activate(self.params)
        for modify in self.modifiers:
            gs = modify(gs, self.params, step)
        return gs

    def view_for_step(self, step: int) -> ViewBatch:
        n = len(self.views)
        epoch, k = divmod(step, n)
        order = np.random.default_rng([self.cfg.seed, epoch]).permutation(n)
        return self.views[int(order[k])]

    def step_once(self, step: int) -> StepResult:
        cfg = self.cfg
        view = self.view_for_step(step)
        for group in self.optimizers["means"].param_groups:
            group["lr"] = G.position_lr(step, cfg.optim, self.scene_scale)
        needs_depth = any(r.needs_depth for r in self.regularizers)
        renders, _, info = G.render(
            self.training_gaussians(step), view.T_world_cam, view.K, self.scene.width, self.scene.height,
            sh_degree=self.active_sh_degree(step), background=self.background,
            render_mode="RGB+ED" if needs_depth else "RGB",
        )
        rgb = renders[0, ..., :3]
        l1 = (rgb - view.image).abs().mean()
        loss = (1 - cfg.loss.ssim_lambda) * l1 + cfg.loss.ssim_lambda * dssim_loss(rgb, view.image)
        terms = {}
        for reg in self.regularizers:
            term = reg.loss(self, view, renders, step)
            if term is not None:
                terms[reg.name] = term.item()
                loss = loss + term
        for strategy, state in zip(self.strategies, self.strategy_states):
            strategy.step_pre_backward(self.params, self.optimizers, state, step, info)
        loss.backward()
        if not self._finite(loss):
            raise NonFiniteError(f"non-finite loss or gradient at step {step}")
        for opt in self.optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
        if not _all_finite(list(self.params.values())):
            raise NonFiniteError(f"non-finite parameters after step {step}", params_corrupted=True)
        for strategy, state in zip(self.strategies, self.strategy_states):
            strategy.step_post_backward(self.params, self.optimizers, state, step, info)
        self._cap_growth(step)
        mse = float(((rgb.detach().clamp(0, 1) - view.image) ** 2).mean())
        return StepResult(step, loss.item(), -10 * math.log10(max(mse, 1e-10)), len(self.params["means"]), terms)

    def _finite(self, loss: torch.Tensor) -> bool:
        return bool(torch.isfinite(loss)) and _all_finite([p.grad for p in self.params.values() if p.grad is not None])

    def _cap_growth(self, step: int) -> None:
        if len(self.params["means"]) >= self.cfg.densify.max_gaussians:
            for s in self.strategies:
                if hasattr(s, "refine_stop_iter") and s.refine_stop_iter > step:
                    s.refine_stop_iter = step  # stop growing; pruning by opacity also stops (3DGS does the same)

    # ------------------------------------------------------------------ the loop
    def run(self, hooks: list[Hook]) -> None:
        """Train from ``self.step`` to cfg.optim.iters.

        A step whose loss or gradients are not finite is undone (no update); one that left
        non-finite parameters restores them from the last checkpoint. Five failures in a row
        stop the run with a message naming the step; the last good checkpoint stays on disk.
        """
        max_bad = 5
        while self.step < self.cfg.optim.iters:
            t0 = time.perf_counter()
            try:
                result = self.step_once(self.step)
            except NonFiniteError as err:
                self.failed_steps.append(self.step)
                self.bad_steps += 1
                if self.bad_steps >= max_bad:
                    raise ReconError(self.run_dir, f"training diverged: {err} ({max_bad} failed steps in a row); "
                                     "the last good checkpoint is kept") from None
                self._undo(restore_params=err.params_corrupted)
                self.step += 1
                continue
            self.bad_steps = 0
            self.seconds += time.perf_counter() - t0
            self.step += 1
            for hook in hooks:
                hook.on_step(self, result)
        for hook in hooks:
            hook.on_end(self)

    def _undo(self, *, restore_params: bool) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        path = self.run_dir / "checkpoint.pt"
        if restore_params and path.is_file():
            step, history, seconds = self.step, self.history, self.seconds
            self.restore(torch.load(path, map_location="cpu", weights_only=False))
            self.step, self.history, self.seconds = step, history, seconds

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "params": {k: v.detach().cpu() for k, v in self.params.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "strategy_states": [_to_cpu(s) for s in self.strategy_states],
            "strategy_stop": [getattr(s, "refine_stop_iter", None) for s in self.strategies],
            "history": self.history,
            "seconds": self.seconds,
            "rng": rng_state(),
        }

    def save_checkpoint(self) -> None:
        atomic_torch_save(self.run_dir / "checkpoint.pt", self.state_dict())

    def restore(self, ckpt: dict) -> None:
        self.step = ckpt["step"]
        for name, value in ckpt["params"].items():
            self.params[name] = torch.nn.Parameter(value.to(self.device))
        for name, opt in self.optimizers.items():
            opt.param_groups[0]["params"] = [self.params[name]]
            opt.state.clear()
            opt.load_state_dict(ckpt["optimizers"][name])
        self.strategy_states = [_to_device(s, self.device) for s in ckpt["strategy_states"]]
        for s, stop in zip(self.strategies, ckpt.get("strategy_stop", [])):
            if stop is not None:
                s.refine_stop_iter = stop
        self.history = list(ckpt["history"])
        self.seconds = float(ckpt.get("seconds", 0.0))
        set_rng_state(ckpt["rng"])


def _all_finite(tensors: list[torch.Tensor]) -> bool:
    """One reduction per tensor and one check: NaN and Inf survive a sum."""
    if not tensors:
        return True
    return bool(torch.isfinite(torch.stack([t.sum() for t in tensors]).sum()))


def _to_cpu(state: dict) -> dict:
    return {k: (v.detach().cpu() if torch.is_tensor(v) else v) for k, v in state.items()}


def _to_device(state: dict, device: torch.device) -> dict:
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in state.items()}
