"""The hash-grid NeRF as a ``Method`` (one step = one batch of rays), and its rendering.

The one training loop (reconstruct.loop) drives it like the splats: checkpoints, resume, history,
the NaN guard and progress are the loop's. ``field_from_state`` rebuilds a field for evaluation
from a checkpoint state without a scene.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch

from reconstruct.config import NerfTrainConfig
from reconstruct.method import NonFiniteError, StepOutput
from reconstruct.nerf.config import EncodingImpl, NerfConfig
from reconstruct.nerf.field import FieldConfig, NerfField, SceneSpace
from reconstruct.nerf.hash_encoding import HashGridConfig
from reconstruct.nerf.losses import depth_ranking_loss, frequency_mask, lr_lambda, occlusion_loss, s3im_loss
from reconstruct.nerf.sampler import OccupancyGrid, RenderOptions, render_rays
from scenes.errors import ReconError
from scenes.types import SceneData


def scene_space(scene: SceneData, kind: str = "auto") -> SceneSpace:
    """Where the field lives: the Blender box [-1.5, 1.5]^3 (dataset units, mapped through the scene's
    normalization) for object scenes; a contraction around the viewed volume otherwise."""
    if kind == "auto":
        kind = "aabb" if scene.format in ("blender", "synthetic") else "contract"
    if kind == "aabb":
        c = np.asarray(scene.T_world_orig)[:3, 3]
        return SceneSpace("aabb", (float(c[0]), float(c[1]), float(c[2])), 1.5 * float(scene.scale))
    # Forward-facing: the uncontracted cube spans depths [0, far] in front of the mean camera.
    cams = np.asarray(scene.T_world_cam)[list(scene.train_ids)]
    fwd = cams[:, :3, 2].mean(0)
    fwd /= np.linalg.norm(fwd)
    radius = 0.5 * float(scene.far)
    center = cams[:, :3, 3].mean(0) + fwd * radius
    return SceneSpace("contract", (float(center[0]), float(center[1]), float(center[2])), radius)


def camera_rays(K: torch.Tensor, T_world_cam: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor):
    """Rays through pixel centers (xs, ys) [N] of one camera: origins [N, 3], directions [N, 3] (cam z = 1)."""
    d_cam = torch.stack([(xs + 0.5 - K[0, 2]) / K[0, 0], (ys + 0.5 - K[1, 2]) / K[1, 1], torch.ones_like(xs)], -1)
    d = d_cam @ T_world_cam[:3, :3].T
    return T_world_cam[:3, 3].expand_as(d), d


def build_field(ncfg: NerfConfig, space: SceneSpace, device: torch.device) -> tuple[NerfField, FieldConfig]:
    log2 = int(ncfg.log2_hashmap_size or 17)
    scale = math.exp(math.log(ncfg.max_resolution / 16) / max(1, ncfg.n_levels - 1))
    fcfg = FieldConfig(grid=HashGridConfig(n_levels=ncfg.n_levels, log2_hashmap_size=log2, per_level_scale=scale))
    return NerfField(fcfg, space, implementation=ncfg.encoding).to(device), fcfg


def _occ_step_size(space: SceneSpace, n_samples: int) -> float:
    return 2.0 * space.radius * math.sqrt(3.0) / n_samples


class NerfMethod:
    """The field, occupancy grid, optimizer and training pixels of one run, as a ``Method``."""

    name = "nerf"

    def __init__(self, cfg: NerfTrainConfig, scene: SceneData, device: torch.device,
                 ncfg: NerfConfig | None = None) -> None:
        """``cfg`` must be resolved (``reconstruct.config.resolve``: no device-dependent None left);
        ``ncfg`` overrides its model options (a compressed field's smaller table)."""
        self.scene, self.device, self.seed = scene, device, cfg.seed
        self.ncfg = ncfg or cfg.nerf
        n = self.ncfg
        assert n.log2_hashmap_size and n.n_samples and n.rays_per_batch and n.grid_resolution, "resolve the config"
        self.regularize = n.regularize == "on"
        self.lr_schedule = (0, int(cfg.iters))
        """(first step, last step) of the learning-rate schedule (warm-up, decay); a later phase such as
        compression fine-tuning restarts it."""
        self.space = scene_space(scene, n.space)
        self.field, self.field_config = build_field(n, self.space, device)
        self.n_samples = int(n.n_samples)
        self.rays_per_batch = int(n.rays_per_batch)
        self.grid = OccupancyGrid(int(n.grid_resolution), step_size=_occ_step_size(self.space, self.n_samples),
                                  decay=n.grid_decay, device=device)
        self.optimizer = self._make_optimizer()
        self.background = torch.tensor(scene.background, dtype=torch.float32, device=device)
        ids = list(scene.train_ids)
        self.train_ids = ids
        self.images = torch.as_tensor(scene.images(ids), device=device)  # [V, H, W, 3]
        self.Ks = torch.as_tensor(np.asarray(scene.Ks)[ids], dtype=torch.float32, device=device)
        self.poses = torch.as_tensor(np.asarray(scene.T_world_cam)[ids], dtype=torch.float32, device=device)
        self.depth_prior = self._load_depth_prior()
        self.after_step: list = []
        """Callbacks ``fn(step)`` after the optimizer stepped (e.g. the ADMM pruner)."""

    def _make_optimizer(self) -> torch.optim.Optimizer:
        hash_params = [self.field.encoding.params]
        mlp_params = [p for n, p in self.field.named_parameters() if not n.startswith("encoding.")]
        return torch.optim.Adam([{"params": hash_params, "weight_decay": 0.0},
                                 {"params": mlp_params, "weight_decay": self.ncfg.weight_decay_mlp}],
                                lr=self.ncfg.lr, betas=(0.9, 0.99), eps=1e-15)

    def rebuild_optimizer(self) -> None:
        """A fresh Adam over the field's current parameters (after wrapping or replacing a part)."""
        self.optimizer = self._make_optimizer()

    # ----------------------------------------------------------------------------- data
    def _load_depth_prior(self) -> torch.Tensor | None:
        folder = self.ncfg.depth_prior
        if folder is None or not self.regularize:
            return None
        maps = []
        for frame in self.train_ids:
            path = Path(folder) / f"{frame}.npy"
            if not path.is_file():
                raise ReconError(path, "depth prior missing for a training frame")
            d = np.load(path)
            if d.shape != (self.scene.height, self.scene.width):
                raise ReconError(path, f"depth prior is {d.shape}, expected {(self.scene.height, self.scene.width)}")
            maps.append(d.astype(np.float32))
        return torch.as_tensor(np.stack(maps), device=self.device)

    def _sample_pixels(self, n: int):
        v = torch.randint(0, len(self.train_ids), (n,), device=self.device)
        ys = torch.randint(0, self.scene.height, (n,), device=self.device)
        xs = torch.randint(0, self.scene.width, (n,), device=self.device)
        return v, ys, xs

    def _sample_patches(self, n_patches: int):
        k = self.ncfg.depth_patch
        v = torch.randint(0, len(self.train_ids), (n_patches,), device=self.device)
        y0 = torch.randint(0, self.scene.height - k + 1, (n_patches,), device=self.device)
        x0 = torch.randint(0, self.scene.width - k + 1, (n_patches,), device=self.device)
        dy, dx = torch.meshgrid(torch.arange(k, device=self.device), torch.arange(k, device=self.device), indexing="ij")
        ys = (y0[:, None] + dy.reshape(1, -1)).reshape(-1)
        xs = (x0[:, None] + dx.reshape(1, -1)).reshape(-1)
        return v.repeat_interleave(k * k), ys, xs

    def _rays(self, v, ys, xs):
        K, T = self.Ks[v], self.poses[v]
        d_cam = torch.stack([(xs + 0.5 - K[:, 0, 2]) / K[:, 0, 0], (ys + 0.5 - K[:, 1, 2]) / K[:, 1, 1],
                             torch.ones_like(xs, dtype=torch.float32)], -1)
        d = torch.einsum("nij,nj->ni", T[:, :3, :3], d_cam)
        return T[:, :3, 3], d

    # ----------------------------------------------------------------------------- training
    def level_mask(self, step: int) -> torch.Tensor | None:
        if not self.regularize or self.ncfg.freq_reg_fraction <= 0:
            return None
        total = self.lr_schedule[1]
        m = frequency_mask(step, self.ncfg.n_levels, end_step=int(self.ncfg.freq_reg_fraction * total),
                           start_levels=self.ncfg.freq_reg_start_levels)
        return None if bool((m == 1).all()) else m.to(self.device)

    def render_options(self, training: bool) -> RenderOptions:
        return RenderOptions(n_samples=self.n_samples, stratified=training,
                             early_stop_in_training=self.ncfg.early_stop_in_training)

    def train_step(self, step: int) -> StepOutput:
        mask = self.level_mask(step)
        self.grid.update(step, self.field, level_mask=mask)
        start, total = self.lr_schedule
        for group in self.optimizer.param_groups:
            group["lr"] = self.ncfg.lr * lr_lambda(step - start, total=total - start)
        n_rand = self.rays_per_batch
        use_rank = self.depth_prior is not None and self.ncfg.depth_rank_weight > 0
        v, ys, xs = self._sample_pixels(n_rand)
        if use_rank:
            n_patch = max(1, n_rand // (4 * self.ncfg.depth_patch**2))
            pv, py, px = self._sample_patches(n_patch)
            v, ys, xs = torch.cat([v, pv]), torch.cat([ys, py]), torch.cat([xs, px])
        rays_o, rays_d = self._rays(v, ys, xs)
        gt = self.images[v, ys, xs]
        out = render_rays(self.field, self.grid, rays_o, rays_d, near=self.scene.near, far=self.scene.far,
                          background=self.background, options=self.render_options(True), level_mask=mask)
        mse = torch.mean((out["rgb"] - gt) ** 2)
        loss, terms = mse, {}
        if self.regularize:
            if self.ncfg.occ_reg_weight > 0:
                occ = occlusion_loss(out["sigma"][:n_rand], self.ncfg.occ_reg_samples)
                loss = loss + self.ncfg.occ_reg_weight * occ
                terms["occ"] = float(occ.detach())
            if self.ncfg.s3im_weight > 0 and n_rand >= 64:
                s3 = s3im_loss(out["rgb"][:n_rand], gt[:n_rand])
                loss = loss + self.ncfg.s3im_weight * s3
                terms["s3im"] = float(s3.detach())
            if use_rank and self.depth_prior is not None:
                k2 = self.ncfg.depth_patch**2
                d_pred = out["depth"][n_rand:].view(-1, k2)
                d_prior = self.depth_prior[v[n_rand:], ys[n_rand:], xs[n_rand:]].view(-1, k2)
                rank = depth_ranking_loss(d_pred, d_prior)
                loss = loss + self.ncfg.depth_rank_weight * rank
                terms["rank"] = float(rank.detach())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if not bool(torch.isfinite(loss)):
            raise NonFiniteError(f"non-finite loss at step {step}")
        self.optimizer.step()
        for fn in self.after_step:
            fn(step)
        psnr = -10.0 * math.log10(max(float(mse.detach()), 1e-10))
        terms.update(samples_per_ray=out["n_evaluated"] / len(v), occupancy=self.grid.occupancy_fraction())
        return StepOutput(float(loss.detach()), psnr, self.n_params(), terms)

    def discard_step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.field.parameters())

    def stats_text(self, out: StepOutput) -> str:
        t = out.terms
        return (f"loss {out.loss:.4f}  psnr {out.psnr:5.2f}  samples/ray {t.get('samples_per_ray', 0):.1f}"
                f"  occupied {100 * t.get('occupancy', 0):.0f}%")

    def render_view(self, frame: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.scene
        rgb, depth, _ = render_image(self.field, self.grid, s.Ks[frame], s.T_world_cam[frame], s.width, s.height,
                                     near=s.near, far=s.far, background=s.background, n_samples=self.n_samples,
                                     chunk=self.ncfg.eval_chunk)
        return rgb, depth

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {
            "field": {k: v.detach().cpu().clone() for k, v in self.field.state_dict().items()},
            "field_config": json.loads(json.dumps(dataclasses.asdict(self.field_config))), "space": self.space.to_dict(),
            "n_samples": self.n_samples, "grid": {k: (v.detach().cpu().clone() if torch.is_tensor(v) else v)
                                                  for k, v in self.grid.state_dict().items()},
            "optimizer": self.optimizer.state_dict(), "lr_schedule": list(self.lr_schedule),
        }

    def load_state_dict(self, state: dict, *, strict: bool = True) -> None:
        """Restore a state; ``strict=False`` loads everything but a hash table of another size (and
        keeps the fresh optimizer)."""
        field_state = {k: v.to(self.device) for k, v in state["field"].items()}
        if strict:
            self.field.load_state_dict(field_state)
        else:
            field_state.pop("encoding.params", None)
            missing, unexpected = self.field.load_state_dict(field_state, strict=False)
            assert missing == ["encoding.params"] and not unexpected, (missing, unexpected)
        self.grid.load_state_dict(state["grid"])
        if strict:
            self.optimizer.load_state_dict(state["optimizer"])
            self.lr_schedule = tuple(int(v) for v in state["lr_schedule"])  # type: ignore[assignment]


# --------------------------------------------------------------------------------- rendering / eval
@torch.no_grad()
def render_image(field: NerfField, grid: OccupancyGrid | None, K: np.ndarray, T_world_cam: np.ndarray,
                 width: int, height: int, *, near: float, far: float, background, n_samples: int = 128,
                 chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render one camera: rgb [H, W, 3], expected depth [H, W], accumulated alpha [H, W] (CPU tensors)."""
    dev = field.encoding.params.device
    Kt = torch.as_tensor(K, dtype=torch.float32, device=dev)
    Tt = torch.as_tensor(T_world_cam, dtype=torch.float32, device=dev)
    ys, xs = torch.meshgrid(torch.arange(height, device=dev, dtype=torch.float32),
                            torch.arange(width, device=dev, dtype=torch.float32), indexing="ij")
    o, d = camera_rays(Kt, Tt, xs.reshape(-1), ys.reshape(-1))
    bg = torch.as_tensor(background, dtype=torch.float32, device=dev)
    opts = RenderOptions(n_samples=n_samples, stratified=False)
    rgb, depth, acc = [], [], []
    for a in range(0, o.shape[0], chunk):
        r = render_rays(field, grid, o[a:a + chunk], d[a:a + chunk], near=near, far=far, background=bg, options=opts)
        rgb.append(r["rgb"])
        depth.append(r["depth"] * (r["acc"] > 0.5))
        acc.append(r["acc"])
    cat = lambda xs_: torch.cat(xs_).cpu()  # noqa: E731
    return cat(rgb).view(height, width, 3).clamp(0, 1), cat(depth).view(height, width), cat(acc).view(height, width)


def evaluate_nerf(field: NerfField, grid: OccupancyGrid | None, scene: SceneData, *, n_samples: int,
                  out_dir: Path | None = None, ids: list[int] | None = None, chunk: int = 8192) -> dict:
    """PSNR / SSIM / LPIPS on the test views (renders, grid.png as the splat evaluation)."""
    from reconstruct.evaluate import evaluate_views

    def render_view(frame: int) -> tuple[torch.Tensor, torch.Tensor]:
        rgb, depth, _ = render_image(field, grid, scene.Ks[frame], scene.T_world_cam[frame], scene.width,
                                     scene.height, near=scene.near, far=scene.far, background=scene.background,
                                     n_samples=n_samples, chunk=chunk)
        return rgb, depth

    return {"method": "nerf", **evaluate_views(render_view, scene, ids=ids, out_dir=out_dir)}


def field_from_state(state: dict, device: torch.device, *, implementation: EncodingImpl = "auto") -> tuple[NerfField, OccupancyGrid]:
    """The field and occupancy grid a NerfMethod state holds (evaluation only: no optimizer, no scene)."""
    fc = state["field_config"]
    fcfg = FieldConfig(**{**fc, "grid": HashGridConfig(**fc["grid"])})
    field = NerfField(fcfg, SceneSpace.from_dict(state["space"]), implementation=implementation).to(device)
    field.load_state_dict({k: v.to(device) for k, v in state["field"].items()})
    grid_state = state["grid"]
    grid = OccupancyGrid(int(grid_state["resolution"]), step_size=1.0, device=device)
    grid.load_state_dict(grid_state)
    return field.eval(), grid
