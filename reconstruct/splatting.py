"""Gaussian splats as a ``Method``: the model, its strategies, and one training step.

A step: pick a training view (seeded permutation per epoch), render it with the training-time
modifiers (dropout, masks, codebooks), (1 - lambda) L1 + lambda D-SSIM plus the regularizers' terms,
strategies around backward (densification, mask pruning), Adam, after-step callbacks (codebook
updates). Everything a loss term, modifier or strategy needs comes through a ``StepContext``
(step, scene, scene scale, named RNG streams, a render function bound to the step's Gaussians) or
the ``GaussianModel`` (parameters, optimizers, strategy states): none of them sees the method.

The same class runs training (``build_splat_method``) and the compression fine-tuning phases
(``finetune_method``: positions at the run's final rate, every rate scaled, some attributes frozen).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Literal, Protocol

import numpy as np
import torch

from reconstruct import gaussians as G
from reconstruct.config import LossConfig, OptimConfig
from reconstruct.method import NonFiniteError, StepOutput, state_to_cpu
from reconstruct.raster import dssim_loss
from reconstruct.splats import Splats
from scenes.types import SceneData

if TYPE_CHECKING:
    from reconstruct.cameras import CameraRefinement

PARAM_NAMES = ("means", "quats", "scales", "opacities", "sh0", "shN")
"""The per-Gaussian attributes of a splat (gsplat naming); extensions may add more (mask logits)."""


@dataclass
class ViewBatch:
    """One training view as the loss sees it."""

    frame: int
    image: torch.Tensor  # [H, W, 3] ground truth
    T_world_cam: torch.Tensor  # [1, 4, 4]
    K: torch.Tensor  # [1, 3, 3]


@dataclass
class StepContext:
    """What loss terms, modifiers and callbacks of one step may use."""

    step: int
    seed: int
    view: ViewBatch
    scene: SceneData
    scene_scale: float
    train_ids: list[int]
    sh_degree: int
    """Active SH degree of this step."""
    background: torch.Tensor  # [3]
    params: torch.nn.ParameterDict
    """The model's parameters (read them; change them only through strategies)."""
    gaussians: Callable[[bool], G.Activated]
    """``gaussians(modified)``: the step's activated Gaussians, with the modifiers applied when True."""

    @property
    def device(self) -> torch.device:
        return self.background.device

    def rng(self, name: str) -> np.random.Generator:
        """A random stream for ``name`` at this step, the same for the same (seed, step, name)."""
        return np.random.default_rng([self.seed, self.step, zlib.crc32(name.encode())])

    def render(self, T_world_cam: torch.Tensor, K: torch.Tensor, *, mode: str = "RGB", modified: bool = True,
               scale: float = 1.0):
        """Render cameras T_world_cam [C,4,4], K [C,3,3] at the scene's size times ``scale`` (the
        intrinsics scaled with it): (images [C,h,w,3(+1)], alphas [C,h,w,1], info)."""
        width, height = self.scene.width, self.scene.height
        if scale != 1.0:
            width, height = max(1, round(width * scale)), max(1, round(height * scale))
            K = K.clone()
            K[:, 0] *= width / self.scene.width
            K[:, 1] *= height / self.scene.height
        return G.render(self.gaussians(modified), T_world_cam, K, width, height,
                        sh_degree=self.sh_degree, background=self.background, render_mode=mode)


class Modifier(Protocol):
    """Changes the activated Gaussians before a training render (dropout, masks, codebooks)."""

    def __call__(self, gs: G.Activated, ctx: StepContext) -> G.Activated: ...


class Regularizer(Protocol):
    """A loss term beyond the photometric one (depth priors, pseudo views, mask sparsity...)."""

    name: str
    needs_depth: bool

    def loss(self, ctx: StepContext, render: torch.Tensor) -> torch.Tensor | None:
        """render: [1, H, W, 3 (+1 depth when needs_depth)] of the step's view; None when inactive."""
        ...


class Strategy(Protocol):
    """Changes the set of Gaussians around backward (densification, mask pruning); its state is an
    explicit dict the model keeps (and checkpoints). A strategy that adds or removes Gaussians in a
    step says how many under ``state["events"]`` ({"densify_grown": n, ...}); the step reports them
    and the loop records every step that has any."""

    def initialize_state(self, scene_scale: float) -> dict[str, Any]: ...

    def step_pre_backward(self, model: "GaussianModel", state: dict, step: int, info: dict) -> None: ...

    def step_post_backward(self, model: "GaussianModel", state: dict, step: int, info: dict) -> None: ...


class GaussianModel:
    """Parameters (ParameterDict, gsplat naming), one Adam per parameter, and the strategies with
    their states."""

    def __init__(self, params: torch.nn.ParameterDict, optimizers: dict, scene_scale: float) -> None:
        self.params, self.optimizers, self.scene_scale = params, optimizers, scene_scale
        self.strategies: list[Strategy] = []
        self.states: list[dict] = []

    def __len__(self) -> int:
        return int(self.params["means"].shape[0])

    @property
    def sh_degree(self) -> int:
        return int(round(math.sqrt(self.params["shN"].shape[1] + 1))) - 1

    def add_strategy(self, strategy: Strategy) -> None:
        self.strategies.append(strategy)
        self.states.append(strategy.initialize_state(self.scene_scale))

    def add_parameter(self, name: str, value: torch.Tensor, lr: float) -> None:
        """Register an extra per-Gaussian parameter (e.g. mask logits) with its own Adam."""
        assert value.shape[0] == len(self), (value.shape, len(self))
        self.params[name] = torch.nn.Parameter(value.to(self.params["means"].device))
        self.optimizers[name] = torch.optim.Adam([{"params": [self.params[name]], "lr": lr, "name": name}],
                                                 eps=1e-15, fused=True)

    def freeze(self, names: tuple[str, ...]) -> None:
        """Stop stepping the named parameters (no gradient, no optimizer)."""
        for name in names:
            self.params[name].requires_grad_(False)
            self.optimizers.pop(name, None)

    @torch.no_grad()
    def remove(self, mask: torch.Tensor) -> int:
        """Remove the Gaussians where ``mask`` [N] bool is True from the parameters, their Adam
        moments and every strategy's per-Gaussian state; returns how many were removed."""
        from gsplat.strategy.ops import remove as gsplat_remove

        assert mask.dtype == torch.bool and mask.shape == (len(self),), (mask.dtype, mask.shape)
        n, n_removed = len(self), int(mask.sum())
        if n_removed == 0:
            return 0
        gsplat_remove(params=self.params, optimizers=self.optimizers, state={}, mask=mask)
        keep = ~mask
        for state in self.states:
            for k, v in list(state.items()):
                if torch.is_tensor(v) and v.ndim >= 1 and v.shape[0] == n:
                    state[k] = v[keep.to(v.device)]
        return n_removed

    def splats(self) -> Splats:
        return Splats.from_params({k: self.params[k] for k in PARAM_NAMES})


class SplatMethod:
    """Training (or fine-tuning) state of one set of Gaussians on one scene; see the module docstring."""

    name = "splat"

    def __init__(self, scene: SceneData, model: GaussianModel, *, optim: OptimConfig, loss: LossConfig,
                 total_steps: int, seed: int, lr_scale: float = 1.0, position_lr: Literal["decay", "final"] = "decay",
                 sh_schedule: bool = True) -> None:
        self.scene, self.model, self.optim, self.loss_cfg = scene, model, optim, loss
        self.total_steps, self.seed, self.lr_scale, self.position_lr = total_steps, seed, lr_scale, position_lr
        self.sh_schedule = sh_schedule
        self.device = model.params["means"].device
        self.modifiers: list[Modifier] = []
        self.regularizers: list[Regularizer] = []
        self.after_step: list[Callable[[StepContext], None]] = []
        self.train_ids = list(scene.train_ids)
        self.background = torch.tensor(scene.background, dtype=torch.float32, device=self.device)
        self.scene_scale = model.scene_scale
        """Size of the scene (densification thresholds, the priors' baselines)."""
        self.camera_extent = G.camera_extent(scene)
        """Spread of the training cameras: the unit of the position learning rate (3DGS's rule)."""
        self.views = [self._view(i) for i in self.train_ids]
        self.sfm_points: np.ndarray | None = None
        """[P, 3] points triangulated from the training views (the SfM depth prior's targets)."""
        self.init_record: dict = {}
        """How the Gaussians were initialized (kind, points), as history shows it."""
        self.timer: Callable[[str], ContextManager] = _untimed
        """``timer(phase)`` wraps each phase of a step (render, loss, priors, backward, optimizer,
        strategies); the train benchmark sets it to measure where a step's time goes."""
        self.cameras: CameraRefinement | None = None
        """Per-training-view SE(3) corrections (reconstruct.cameras); None = the cameras are fixed."""
        self._view_index = {frame: k for k, frame in enumerate(self.train_ids)}

    def _view(self, frame: int) -> ViewBatch:
        s, d = self.scene, self.device
        return ViewBatch(frame=frame, image=torch.as_tensor(s.image(frame), device=d),
                         T_world_cam=torch.as_tensor(s.T_world_cam[frame], dtype=torch.float32, device=d)[None],
                         K=torch.as_tensor(s.Ks[frame], dtype=torch.float32, device=d)[None])

    # ------------------------------------------------------------------ one step
    def active_sh_degree(self, step: int) -> int:
        top = self.model.sh_degree
        if not self.sh_schedule:
            return top
        return min(step // max(self.optim.sh_degree_interval, 1), top)

    def view_for_step(self, step: int) -> ViewBatch:
        """The step's training view, its camera corrected when cameras are refined (differentiable)."""
        n = len(self.views)
        epoch, k = divmod(step, n)
        order = np.random.default_rng([self.seed, epoch]).permutation(n)
        view = self.views[int(order[k])]
        if self.cameras is not None and self.cameras.active(step):  # before its start the fused CPU projection runs
            view = dataclasses.replace(view, T_world_cam=self.cameras.corrected(int(order[k]), view.T_world_cam))
        return view

    def camera(self, frame: int) -> torch.Tensor:
        """[4, 4] camera-to-world of ``frame`` as the model sees it (training views after refinement)."""
        T = torch.as_tensor(self.scene.T_world_cam[frame], dtype=torch.float32, device=self.device)[None]
        if self.cameras is not None and frame in self._view_index:
            with torch.no_grad():
                T = self.cameras.corrected(self._view_index[frame], T)
        return T[0].detach()

    def training_cameras(self) -> np.ndarray:
        """[V, 4, 4] float64 camera-to-world of the training views after refinement (train_ids order)."""
        return np.stack([self.camera(f).cpu().numpy().astype(np.float64) for f in self.train_ids])

    def context(self, step: int, view: ViewBatch) -> StepContext:
        params = self.model.params

        def gaussians(modified: bool) -> G.Activated:
            gs = G.activate(params)
            if modified:
                for modify in self.modifiers:
                    gs = modify(gs, ctx)
            return gs

        ctx = StepContext(step=step, seed=self.seed, view=view, scene=self.scene, scene_scale=self.scene_scale,
                          train_ids=self.train_ids, sh_degree=self.active_sh_degree(step), background=self.background,
                          params=params, gaussians=gaussians)
        return ctx

    def _set_position_lr(self, step: int) -> None:
        if "means" not in self.model.optimizers:
            return
        if self.position_lr == "decay":
            lr = G.position_lr(step, self.total_steps, self.optim, self.camera_extent)
        else:
            lr = self.optim.lr_means_final * self.camera_extent
        for group in self.model.optimizers["means"].param_groups:
            group["lr"] = lr * self.lr_scale

    def train_step(self, step: int) -> StepOutput:
        model, cfg = self.model, self.loss_cfg
        view = self.view_for_step(step)
        self._set_position_lr(step)
        ctx = self.context(step, view)
        timer = self.timer
        needs_depth = any(r.needs_depth for r in self.regularizers)
        with timer("render"):
            renders, _, info = ctx.render(view.T_world_cam, view.K, mode="RGB+ED" if needs_depth else "RGB")
            rgb = renders[0, ..., :3]
        with timer("loss"):
            l1 = (rgb - view.image).abs().mean()
            loss = (1 - cfg.ssim_lambda) * l1 + cfg.ssim_lambda * dssim_loss(rgb, view.image, fused=cfg.fused_ssim)
        terms = {}
        with timer("priors"):
            for reg in self.regularizers:
                term = reg.loss(ctx, renders)
                if term is not None:
                    terms[reg.name] = float(term.detach())
                    loss = loss + term
        with timer("strategies"):
            for strategy, state in zip(model.strategies, model.states):
                strategy.step_pre_backward(model, state, step, info)
        with timer("backward"):
            loss.backward()
            grads = [p.grad for p in model.params.values() if p.grad is not None]
            if self.cameras is not None:
                grads += self.cameras.grads()
            if not (bool(torch.isfinite(loss)) and _all_finite(grads)):
                raise NonFiniteError(f"non-finite loss or gradient at step {step}")
        with timer("optimizer"):
            for opt in model.optimizers.values():
                opt.step()
                opt.zero_grad(set_to_none=True)
            if self.cameras is not None:
                self.cameras.step(step)
            if not _all_finite(list(model.params.values())):
                raise NonFiniteError(f"non-finite parameters after step {step}", params_corrupted=True)
            for fn in self.after_step:
                fn(ctx)
        with timer("strategies"):
            for strategy, state in zip(model.strategies, model.states):
                strategy.step_post_backward(model, state, step, info)
        events = {k: v for state in model.states for k, v in state.pop("events", {}).items()}
        mse = float(((rgb.detach().clamp(0, 1) - view.image) ** 2).mean())
        return StepOutput(float(loss.detach()), -10 * math.log10(max(mse, 1e-10)), len(model), terms, events)

    def discard_step(self) -> None:
        for opt in self.model.optimizers.values():
            opt.zero_grad(set_to_none=True)
        if self.cameras is not None:
            self.cameras.zero_grad()

    def stats_text(self, out: StepOutput) -> str:
        return f"loss {out.loss:.4f}  psnr {out.psnr:5.2f}  gaussians {out.count:,}"

    # ------------------------------------------------------------------ rendering
    def render_view(self, frame: int) -> tuple[torch.Tensor, torch.Tensor]:
        from reconstruct.evaluate import render_splats

        with torch.no_grad():
            return render_splats(G.activate(self.model.params), self.scene, frame, sh_degree=self.model.sh_degree,
                                 T_world_cam=self.camera(frame) if self.cameras is not None else None)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        m = self.model
        return {
            "params": {k: v.detach().cpu().clone() for k, v in m.params.items()},
            "frozen": [k for k, v in m.params.items() if not v.requires_grad],
            "optimizers": {k: state_to_cpu(o.state_dict()) for k, o in m.optimizers.items()},
            "strategy_states": [state_to_cpu(s) for s in m.states],
            "sfm_points": None if self.sfm_points is None else torch.as_tensor(self.sfm_points, dtype=torch.float64),
            "init": dict(self.init_record),
            "cameras": None if self.cameras is None else self.cameras.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        m = self.model
        frozen = set(state.get("frozen", []))
        m.params = torch.nn.ParameterDict({k: torch.nn.Parameter(v.to(self.device).clone(), requires_grad=k not in frozen)
                                           for k, v in state["params"].items()})
        lrs = {k: o.param_groups[0]["lr"] for k, o in m.optimizers.items()}
        m.optimizers = G.create_optimizers(m.params, lrs, frozen=tuple(frozen))
        for name, opt in m.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        if len(state["strategy_states"]) != len(m.strategies):
            raise ValueError(f"checkpoint has {len(state['strategy_states'])} strategy states, the run "
                             f"has {len(m.strategies)} strategies")
        m.states = [{k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in s.items()}
                    for s in state["strategy_states"]]
        pts = state.get("sfm_points")
        self.sfm_points = None if pts is None else pts.numpy()
        self.init_record = dict(state.get("init", {}))
        cams = state.get("cameras")
        if (cams is None) != (self.cameras is None):
            raise ValueError("checkpoint and run disagree on camera refinement (--cameras.enabled)")
        if self.cameras is not None and cams is not None:
            self.cameras.load_state_dict(cams)


def _untimed(phase: str) -> ContextManager:
    return contextlib.nullcontext()


def _all_finite(tensors: list[torch.Tensor]) -> bool:
    """One reduction per tensor and one check: NaN and Inf survive a sum."""
    if not tensors:
        return True
    return bool(torch.isfinite(torch.stack([t.sum() for t in tensors]).sum()))


# ---------------------------------------------------------------------------------- builders
def model_from_points(points: np.ndarray, colors: np.ndarray, *, init, optim: OptimConfig, scene: SceneData,
                      device: torch.device) -> GaussianModel:
    """A model of Gaussians at ``points`` [P,3] with ``colors`` [P,3] (training learning rates)."""
    params = G.create_params(points, colors, init=init, sh_degree=optim.sh_degree, device=device)
    lrs = G.learning_rates(optim, G.camera_extent(scene))
    return GaussianModel(params, G.create_optimizers(params, lrs), G.scene_scale(scene))


def finetune_method(splats: Splats, scene: SceneData, *, optim: OptimConfig, loss: LossConfig, steps: int, seed: int,
                    device: torch.device, lr_scale: float, frozen: tuple[str, ...] = ()) -> SplatMethod:
    """A SplatMethod that fine-tunes finished ``splats``: positions at the run's final rate, every
    attribute's rate times ``lr_scale``, the attributes in ``frozen`` fixed, full SH degree."""
    extent = G.camera_extent(scene)
    params = torch.nn.ParameterDict({k: torch.nn.Parameter(v.clone()) for k, v in splats.to_params(str(device)).items()})
    lrs = {k: v * lr_scale for k, v in G.learning_rates(optim, extent).items()}
    lrs["means"] = optim.lr_means_final * extent * lr_scale
    model = GaussianModel(params, G.create_optimizers(params, lrs, frozen=frozen), G.scene_scale(scene))
    return SplatMethod(scene, model, optim=optim, loss=loss, total_steps=steps, seed=seed, lr_scale=lr_scale,
                       position_lr="final", sh_schedule=False)
