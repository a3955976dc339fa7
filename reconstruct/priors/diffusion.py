"""Diffusion prior: refine novel-view renders with image-to-image diffusion, fit them as soft targets.

Every ``interval`` steps (from ``start``) a few cameras between the training cameras (the pseudo-view
poses) are rendered from the current Gaussians without dropout, each render is re-noised to a low
``strength`` and denoised by a diffusers image-to-image pipeline (Stable Diffusion img2img or any
AutoPipelineForImage2Image-compatible model), and the refined images become L1 targets for renders
at those poses (GaussianObject / LM-Gaussian style repair). Low strength keeps the layout of the
render and removes what the model considers implausible (needles, haze, holes).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from reconstruct.priors.config import DiffusionConfig
from reconstruct.priors.pseudo import pseudo_camera

log = logging.getLogger(__name__)


def load_pipeline(name: str):
    """An image-to-image diffusers pipeline from a local folder or a hub id (local cache first)."""
    from diffusers import AutoPipelineForImage2Image

    local = Path(name).expanduser()
    if local.exists():
        pipe = AutoPipelineForImage2Image.from_pretrained(local)
    else:
        from reconstruct.priors.depth import quiet_hub

        with quiet_hub():
            try:
                pipe = AutoPipelineForImage2Image.from_pretrained(name, local_files_only=True)
            except OSError:
                pipe = AutoPipelineForImage2Image.from_pretrained(name)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def refine_size(width: int, height: int, max_size: int) -> tuple[int, int]:
    """(w, h) at most ``max_size`` on the long side, both multiples of 8 (the VAE's downsampling)."""
    s = min(1.0, max_size / max(width, height))
    return max(8, int(round(width * s / 8)) * 8), max(8, int(round(height * s / 8)) * 8)


def refine(pipe, images: torch.Tensor, cfg: DiffusionConfig, *, seed: int) -> torch.Tensor:
    """Refine renders [V,H,W,3] in [0,1] with img2img; returns [V,H,W,3] at the input size."""
    from PIL import Image

    assert images.ndim == 4 and images.shape[-1] == 3, images.shape
    v, h, w, _ = images.shape
    rw, rh = refine_size(w, h, cfg.max_size)
    out = []
    for k in range(v):
        pil = Image.fromarray((images[k].clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)).resize((rw, rh), Image.Resampling.BICUBIC)
        gen = torch.Generator(device="cpu").manual_seed(int(seed) + k)
        res = pipe(prompt=cfg.prompt, image=pil, strength=cfg.strength, num_inference_steps=cfg.steps,
                   guidance_scale=cfg.guidance_scale, generator=gen, output_type="np").images[0]  # [rh,rw,3]
        t = torch.as_tensor(np.asarray(res), dtype=torch.float32).permute(2, 0, 1)[None]
        out.append(torch.nn.functional.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0].permute(1, 2, 0))
    return torch.stack(out).clamp(0, 1).to(images.device)


class DiffusionPrior:
    """Regularizer: keeps refined novel views (pose, intrinsics, image) and fits one per application."""

    name = "diffusion"
    needs_depth = False

    def __init__(self, cfg: DiffusionConfig, pipe, seed: int) -> None:
        self.cfg, self.pipe, self.seed = cfg, pipe, seed
        self.targets: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (T [1,4,4], K [1,3,3], img [H,W,3])
        self.refreshed_at: list[int] = []

    def due(self, step: int) -> bool:
        c, s = self.cfg, self.cfg.schedule
        return bool(c.enabled) and step >= s.start and (s.stop is None or step <= s.stop) and (step - s.start) % max(c.interval, 1) == 0

    def refresh(self, ctx) -> None:
        """Render ``n_views`` novel cameras (no dropout), refine them, replace the targets."""
        scene, dev, step = ctx.scene, ctx.device, ctx.step
        rng = ctx.rng("diffusion")
        poses = [pseudo_camera(scene.T_world_cam, ctx.train_ids, rng, jitter=0.0, scene_scale=ctx.scene_scale)
                 for _ in range(self.cfg.n_views)]
        Ts = torch.as_tensor(np.stack([p for p, _ in poses]), dtype=torch.float32, device=dev)
        Ks = torch.as_tensor(np.stack([scene.Ks[f] for _, f in poses]), dtype=torch.float32, device=dev)
        with torch.no_grad():
            renders, _, _ = ctx.render(Ts, Ks, mode="RGB", modified=False)
        refined = refine(self.pipe, renders[..., :3], self.cfg, seed=self.seed * 7919 + step)
        self.targets = [(Ts[k:k + 1], Ks[k:k + 1], refined[k]) for k in range(len(poses))]
        self.refreshed_at.append(step)

    def loss(self, ctx, render: torch.Tensor) -> torch.Tensor | None:
        step = ctx.step
        if self.due(step):
            self.refresh(ctx)
        weight = self.cfg.schedule.weight(step, self.cfg.weight, enabled=self.cfg.enabled)
        if weight == 0.0 or not self.targets:
            return None
        T, K, target = self.targets[(step // max(self.cfg.schedule.every, 1)) % len(self.targets)]
        out, _, _ = ctx.render(T, K, mode="RGB")
        return weight * (out[0, ..., :3] - target).abs().mean()


def attach_diffusion(method, cfg: DiffusionConfig, seed: int) -> DiffusionPrior | None:
    """Load the pipeline and add the prior to a SplatMethod; without weights say so once and leave
    the run unchanged."""
    try:
        pipe = load_pipeline(cfg.model)
    except ImportError as err:
        log.warning(f"diffusion prior off: diffusers missing ({err}); pip install 'recon[diffusion]'")
        return None
    except Exception as err:  # hub unreachable, no weights, not an img2img pipeline
        msg = str(err).splitlines()[0][:160] if str(err) else ""
        log.warning(f"diffusion prior off: cannot load {cfg.model!r} ({type(err).__name__}: {msg})")
        return None
    pipe = pipe.to(method.device)
    prior = DiffusionPrior(cfg, pipe, seed)
    method.regularizers.append(prior)
    return prior
