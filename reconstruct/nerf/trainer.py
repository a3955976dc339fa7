"""`recon train --method nerf`: the hash-grid NeRF training loop, checkpoints, resume, evaluation.

Follows the splat trainer's conventions: the run folder and atomic writes of ``reconstruct.runs``,
the metrics/renders/grid of ``reconstruct.evaluate``, a rich progress bar, ``history`` curves,
``checkpoint.pt`` every ``checkpoint_every`` steps (model, optimizer, occupancy grid, step, RNG
states, history) so ``recon train --resume RUN`` continues bit for bit where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from reconstruct.nerf.config import NerfConfig
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
        center = tuple(float(v) for v in np.asarray(scene.T_world_orig)[:3, 3])
        return SceneSpace("aabb", center, 1.5 * float(scene.scale))
    # Forward-facing: the uncontracted cube spans depths [0, far] in front of the mean camera.
    cams = np.asarray(scene.T_world_cam)[list(scene.train_ids)]
    fwd = cams[:, :3, 2].mean(0)
    fwd /= np.linalg.norm(fwd)
    radius = 0.5 * float(scene.far)
    center = cams[:, :3, 3].mean(0) + fwd * radius
    return SceneSpace("contract", tuple(float(v) for v in center), radius)


def camera_rays(K: torch.Tensor, T_world_cam: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor):
    """Rays through pixel centers (xs, ys) [N] of one camera: origins [N, 3], directions [N, 3] (cam z = 1)."""
    d_cam = torch.stack([(xs + 0.5 - K[0, 2]) / K[0, 0], (ys + 0.5 - K[1, 2]) / K[1, 1], torch.ones_like(xs)], -1)
    d = d_cam @ T_world_cam[:3, :3].T
    return T_world_cam[:3, 3].expand_as(d), d


def build_field(ncfg: NerfConfig, space: SceneSpace, device: torch.device) -> tuple[NerfField, FieldConfig]:
    log2 = ncfg.log2_hashmap_size or (17 if device.type == "cpu" else 19)
    scale = math.exp(math.log(ncfg.max_resolution / 16) / max(1, ncfg.n_levels - 1))
    fcfg = FieldConfig(grid=HashGridConfig(n_levels=ncfg.n_levels, log2_hashmap_size=log2, per_level_scale=scale))
    return NerfField(fcfg, space, implementation=ncfg.encoding).to(device), fcfg


def _occ_step_size(space: SceneSpace, n_samples: int) -> float:
    return 2.0 * space.radius * math.sqrt(3.0) / n_samples


class NerfTrainer:
    """Owns the field, occupancy grid, optimizer and the training pixels of one run."""

    def __init__(self, cfg, scene: SceneData, run_dir: Path, device: torch.device,
                 ncfg: NerfConfig | None = None) -> None:
        self.cfg, self.scene, self.run_dir, self.device = cfg, scene, Path(run_dir), device
        self.ncfg = ncfg or getattr(cfg, "nerf", None) or NerfConfig()
        self.iters = int(cfg.optim.iters)
        self.regularize = self.ncfg.regularize == "on" or (
            self.ncfg.regularize == "auto" and len(scene.train_ids) <= 9)
        self.space = scene_space(scene, self.ncfg.space)
        self.field, self.field_config = build_field(self.ncfg, self.space, device)
        res = self.ncfg.grid_resolution or (48 if device.type == "cpu" else 128)
        self.n_samples = self.ncfg.n_samples or (64 if device.type == "cpu" else 128)
        self.rays_per_batch = self.ncfg.rays_per_batch or (512 if device.type == "cpu" else 4096)
        self.grid = OccupancyGrid(res, step_size=_occ_step_size(self.space, self.n_samples),
                                  decay=self.ncfg.grid_decay, device=device)
        hash_params = [self.field.encoding.params]
        mlp_params = [p for n, p in self.field.named_parameters() if not n.startswith("encoding.")]
        self.optimizer = torch.optim.Adam(
            [{"params": hash_params, "weight_decay": 0.0},
             {"params": mlp_params, "weight_decay": self.ncfg.weight_decay_mlp}],
            lr=self.ncfg.lr, betas=(0.9, 0.99), eps=1e-15)
        self.background = torch.tensor(scene.background, dtype=torch.float32, device=device)
        ids = list(scene.train_ids)
        self.train_ids = ids
        self.images = torch.as_tensor(scene.images(ids), device=device)  # [V, H, W, 3]
        self.Ks = torch.as_tensor(np.asarray(scene.Ks)[ids], dtype=torch.float32, device=device)
        self.poses = torch.as_tensor(np.asarray(scene.T_world_cam)[ids], dtype=torch.float32, device=device)
        self.depth_prior = self._load_depth_prior()
        self.step, self.seconds, self.history = 0, 0.0, []
        self.schedule_start = 0
        """Step the learning-rate schedule (warm-up, decay to ``iters``) counts from; a later phase
        such as compression fine-tuning sets it to restart the schedule."""

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
        m = frequency_mask(step, self.ncfg.n_levels, end_step=int(self.ncfg.freq_reg_fraction * self.iters),
                           start_levels=self.ncfg.freq_reg_start_levels)
        return None if bool((m == 1).all()) else m.to(self.device)

    def render_options(self, training: bool) -> RenderOptions:
        return RenderOptions(n_samples=self.n_samples, stratified=training,
                             early_stop_in_training=self.ncfg.early_stop_in_training)

    def train_step(self) -> dict:
        """One optimization step; returns the logged numbers."""
        t0 = time.perf_counter()
        step = self.step
        mask = self.level_mask(step)
        self.grid.update(step, self.field, level_mask=mask)
        for group in self.optimizer.param_groups:
            group["lr"] = self.ncfg.lr * lr_lambda(step - self.schedule_start, total=self.iters - self.schedule_start)
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
            if use_rank:
                k2 = self.ncfg.depth_patch**2
                d_pred = out["depth"][n_rand:].view(-1, k2)
                d_prior = self.depth_prior[v[n_rand:], ys[n_rand:], xs[n_rand:]].view(-1, k2)
                rank = depth_ranking_loss(d_pred, d_prior)
                loss = loss + self.ncfg.depth_rank_weight * rank
                terms["rank"] = float(rank.detach())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        self.seconds += time.perf_counter() - t0
        psnr = -10.0 * math.log10(max(float(mse.detach()), 1e-10))
        return {"step": self.step, "loss": float(loss.detach()), "psnr": psnr,
                "samples_per_ray": out["n_evaluated"] / len(v), "occupancy": self.grid.occupancy_fraction(), **terms}

    def run(self, *, progress: bool = True) -> None:
        """Train to ``iters`` steps with a progress bar, curves and checkpoints."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        out = self.cfg.output
        bar = Progress(TextColumn("[bold]nerf"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                       TimeRemainingColumn(), disable=not progress)
        with bar:
            task = bar.add_task("train", total=self.iters, completed=self.step, stats="")
            t0, s0 = time.perf_counter(), self.step
            while self.step < self.iters:
                r = self.train_step()
                if r["step"] % out.log_every == 0 or self.step == self.iters:
                    self.history.append(r)
                if self.step % out.checkpoint_every == 0 and self.step < self.iters:
                    self.save_checkpoint()
                if r["step"] % 10 == 0 or self.step == self.iters:
                    rate = (self.step - s0) / max(time.perf_counter() - t0, 1e-9)
                    bar.update(task, completed=self.step, stats=(
                        f"loss {r['loss']:.4f}  psnr {r['psnr']:5.2f}  samples/ray {r['samples_per_ray']:.1f}"
                        f"  occupied {100 * r['occupancy']:.0f}%  {rate:.2f} steps/s"))
        self.save_checkpoint()

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        from reconstruct.runs import rng_state

        return {
            "method": "nerf", "step": self.step, "seconds": self.seconds, "history": self.history,
            "field": {k: v.detach().cpu() for k, v in self.field.state_dict().items()},
            "field_config": dataclasses.asdict(self.field_config), "space": self.space.to_dict(),
            "nerf_config": json.loads(json.dumps(dataclasses.asdict(self.ncfg), default=str)),
            "n_samples": self.n_samples, "grid": self.grid.state_dict(),
            "optimizer": self.optimizer.state_dict(), "rng": rng_state(),
        }

    def save_checkpoint(self) -> None:
        from reconstruct.runs import atomic_torch_save

        atomic_torch_save(self.run_dir / "checkpoint.pt", self.state_dict())

    def restore(self, ckpt: dict) -> None:
        from reconstruct.runs import set_rng_state

        if ckpt.get("method") != "nerf":
            raise ReconError(self.run_dir / "checkpoint.pt", "checkpoint is not a NeRF run")
        self.field.load_state_dict({k: v.to(self.device) for k, v in ckpt["field"].items()})
        self.grid.load_state_dict(ckpt["grid"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.step, self.seconds = int(ckpt["step"]), float(ckpt["seconds"])
        self.history = list(ckpt["history"])
        set_rng_state(ckpt["rng"])


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


def load_nerf(run_dir: Path, device: torch.device | None = None) -> tuple[NerfField, OccupancyGrid, dict]:
    """Field, occupancy grid and checkpoint dict of a NeRF run folder."""
    from reconstruct.runs import load_checkpoint

    device = device or torch.device("cpu")
    ckpt = load_checkpoint(run_dir)
    if ckpt.get("method") != "nerf":
        raise ReconError(run_dir, "not a NeRF run (train it with --method nerf)")
    fc = ckpt["field_config"]
    fcfg = FieldConfig(**{**fc, "grid": HashGridConfig(**fc["grid"])})
    space = SceneSpace.from_dict(ckpt["space"])
    impl = ckpt["nerf_config"].get("encoding", "auto")
    field = NerfField(fcfg, space, implementation=impl).to(device)
    field.load_state_dict({k: v.to(device) for k, v in ckpt["field"].items()})
    grid_state = ckpt["grid"]
    grid = OccupancyGrid(int(grid_state["resolution"]), step_size=1.0, device=device)
    grid.load_state_dict(grid_state)
    return field.eval(), grid, ckpt


def evaluate_nerf_run(run_dir: Path, *, cfg=None, scene: SceneData | None = None,
                      device: torch.device | None = None, write: bool = True) -> dict:
    """`recon eval RUN` for a NeRF run: scores on the run's test views (renders, grid.png, metrics.json)."""
    from reconstruct.runs import atomic_write_text, load_config, load_run_scene

    run_dir = Path(run_dir)
    cfg = cfg or load_config(run_dir)
    scene = scene or load_run_scene(run_dir, cfg=cfg)
    field, grid, ckpt = load_nerf(run_dir, device)
    n_samples = int(ckpt.get("n_samples") or 128)
    result = evaluate_nerf(field, grid, scene, n_samples=n_samples, out_dir=run_dir if write else None)
    result.update(n_params=sum(p.numel() for p in field.parameters()), train_seconds=float(ckpt["seconds"]),
                  iters=int(ckpt["step"]))
    if write:
        atomic_write_text(run_dir / "metrics.json", json.dumps(result, indent=2))
    return result


def train_nerf(cfg, scene: SceneData, run_dir: Path, *, device: torch.device, resume: bool,
               ncfg: NerfConfig | None = None, progress: bool = True) -> int:
    """Entry point of ``recon train --method nerf`` (called by reconstruct.run_train)."""
    from reconstruct.runs import atomic_write_text, load_checkpoint

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    trainer = NerfTrainer(cfg, scene, run_dir, device, ncfg)
    if resume:
        trainer.restore(load_checkpoint(run_dir))
    else:
        trainer.save_checkpoint()
    trainer.run(progress=progress)
    try:
        from reconstruct.evaluate import plot_curves

        plot_curves([h for h in trainer.history if "loss" in h], run_dir / "curves.png")
    except ModuleNotFoundError:
        pass
    atomic_write_text(run_dir / "history.json", json.dumps(trainer.history, indent=1))
    if not cfg.output.eval_at_end:
        return 0
    trainer.field.eval()
    result = evaluate_nerf(trainer.field, trainer.grid, scene, n_samples=trainer.n_samples, out_dir=run_dir,
                           chunk=trainer.ncfg.eval_chunk)
    result.update(n_params=sum(p.numel() for p in trainer.field.parameters()), train_seconds=trainer.seconds,
                  iters=trainer.step, regularized=trainer.regularize)
    atomic_write_text(run_dir / "metrics.json", json.dumps(result, indent=2))
    try:
        from reconstruct.hooks import print_metrics

        print_metrics(result, title=f"{run_dir}: test views (nerf)", file=sys.stdout)
    except ModuleNotFoundError:
        print(json.dumps({k: result[k] for k in ("psnr", "ssim", "n_test")}))
    return 0
