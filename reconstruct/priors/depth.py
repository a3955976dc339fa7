"""Depth priors: sparse SfM depth (DS-NeRF style) and monocular depth (Pearson + local ranking).

SfM depth: points triangulated from the training views are projected into every training view; a
z-buffer over small cells keeps only the nearest point per cell (a point seen by two views may be
hidden in a third). The loss is the relative error of the rendered expected depth at those pixels.

Monocular depth: a transformers depth-estimation model (Depth Anything V2 by default) predicts a
relative disparity map per training view, once, cached as .npy in the run folder. Scale and shift
are unknown, so the losses are invariant to them: 1 - Pearson correlation between rendered and
predicted disparity (FSGS, DNGaussian) and a hinge on the order of nearby pixel pairs (SparseNeRF).
"""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path

import numpy as np
import torch

from reconstruct.priors.config import MonoDepthConfig, SfmDepthConfig


# ---------------------------------------------------------------------- SfM depth
def project_sparse_depth(points: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray, width: int, height: int,
                         *, cell: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Pixel indices [M,2] (x, y ints) and depths [M] of the points [P,3] visible in one camera.

    Visible: in front, inside the image, and the nearest point within its ``cell`` x ``cell`` block.
    """
    assert points.ndim == 2 and points.shape[1] == 3, points.shape
    T_cam_world = np.linalg.inv(T_world_cam)
    cam = points @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]
    z = cam[:, 2]
    front = z > 1e-6
    uv = cam[front] @ K.T
    uv = uv[:, :2] / uv[:, 2:3]
    z = z[front]
    xi, yi = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
    inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
    xi, yi, z = xi[inside], yi[inside], z[inside]
    if len(z) == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0)
    cells = (yi // cell) * (width // cell + 1) + xi // cell
    order = np.lexsort((z, cells))  # by cell, nearest first
    first = np.ones(len(order), bool)
    first[1:] = cells[order][1:] != cells[order][:-1]
    keep = order[first]
    return np.stack([xi[keep], yi[keep]], 1), z[keep]


class SfmDepthLoss:
    """Regularizer: |D_render - z| / z at the projected SfM points of the current training view."""

    name = "sfm_depth"
    needs_depth = True

    def __init__(self, cfg: SfmDepthConfig, targets: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.cfg, self.targets = cfg, targets  # frame -> (pixels [M,2] long, depth [M])

    def loss(self, ctx, render: torch.Tensor) -> torch.Tensor | None:
        weight = self.cfg.schedule.weight(ctx.step, self.cfg.weight, enabled=self.cfg.enabled)
        target = self.targets.get(ctx.view.frame)
        if weight == 0.0 or target is None or len(target[1]) == 0:
            return None
        px, z = target
        d = render[0, px[:, 1], px[:, 0], 3]
        return weight * ((d - z).abs() / z).mean()

log = logging.getLogger(__name__)


def sfm_depth_targets(points: np.ndarray, scene, ids: list[int], cfg: SfmDepthConfig, device: torch.device):
    """frame -> (pixels [M,2] long, depths [M]) for every training frame."""
    out = {}
    for i in ids:
        px, z = project_sparse_depth(points, scene.Ks[i], scene.T_world_cam[i], scene.width, scene.height, cell=cfg.cell)
        out[i] = (torch.as_tensor(px, device=device), torch.as_tensor(z, dtype=torch.float32, device=device))
    return out


# ---------------------------------------------------------------------- monocular depth
@contextlib.contextmanager
def quiet_hub():
    """Silence huggingface_hub's per-retry warnings while a model loads (the caller reports failure once)."""
    log = logging.getLogger("huggingface_hub")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _load_model(name: str):
    """(processor, model) or raise; local folders are read in place, hub ids from the local cache first."""
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    local = Path(name).expanduser()
    if local.exists():
        return AutoImageProcessor.from_pretrained(local), AutoModelForDepthEstimation.from_pretrained(local)
    with quiet_hub():
        try:
            return (AutoImageProcessor.from_pretrained(name, local_files_only=True),
                    AutoModelForDepthEstimation.from_pretrained(name, local_files_only=True))
        except OSError:
            return AutoImageProcessor.from_pretrained(name), AutoModelForDepthEstimation.from_pretrained(name)


def predict_mono_depth(scene, ids: list[int], cfg: MonoDepthConfig, cache_dir: Path) -> dict[int, np.ndarray] | None:
    """frame -> [H,W] float32 prediction (as the model outputs it), cached; None when the model cannot load."""
    folder = Path(cache_dir) / "mono_depth" / re.sub(r"[^A-Za-z0-9_.-]+", "_", str(cfg.model)).strip("_")
    out, missing = {}, []
    for i in ids:
        path = folder / f"{i:05d}_{scene.width}x{scene.height}.npy"
        if path.is_file():
            out[i] = np.load(path)
        else:
            missing.append(i)
    if not missing:
        return out
    try:
        processor, model = _load_model(cfg.model)
    except ImportError as err:
        log.warning(f"monocular depth prior off: transformers missing ({err}); pip install 'recon[depth]'")
        return None
    except Exception as err:  # hub unreachable, no weights, wrong architecture
        log.warning(f"monocular depth prior off: cannot load {cfg.model!r} ({type(err).__name__}: "
              f"{str(err).splitlines()[0][:160] if str(err) else ''})")
        return None
    from PIL import Image

    from scenes.fileio import atomic_write_bytes

    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    for i in missing:
        img = Image.fromarray((scene.image(i) * 255).round().astype(np.uint8))
        inputs = processor(images=img, return_tensors="pt")
        with torch.no_grad():
            pred = model(**inputs).predicted_depth  # [1, h, w]
        pred = torch.nn.functional.interpolate(pred[:, None].float(), size=(scene.height, scene.width),
                                               mode="bicubic", align_corners=False)[0, 0]
        arr = pred.numpy().astype(np.float32)
        import io

        buf = io.BytesIO()
        np.save(buf, arr)
        atomic_write_bytes(folder / f"{i:05d}_{scene.width}x{scene.height}.npy", buf.getvalue())
        out[i] = arr
    return out


def pearson_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - Pearson correlation of two flat tensors [M]."""
    a = a - a.mean()
    b = b - b.mean()
    return 1 - (a * b).sum() / (a.norm() * b.norm() + 1e-8)


def ranking_loss(depth: torch.Tensor, mono_disp: torch.Tensor, *, pairs: int, radius: int, margin: float,
                 generator: torch.Generator) -> torch.Tensor:
    """SparseNeRF local ranking: where the prior says pixel a is nearer than b, penalize D_a > D_b.

    depth [H,W] rendered (normalized inside), mono_disp [H,W] predicted disparity (larger = nearer).
    """
    h, w = depth.shape
    dev = depth.device
    ya = torch.randint(0, h, (pairs,), generator=generator)
    xa = torch.randint(0, w, (pairs,), generator=generator)
    yb = (ya + torch.randint(-radius, radius + 1, (pairs,), generator=generator)).clamp(0, h - 1)
    xb = (xa + torch.randint(-radius, radius + 1, (pairs,), generator=generator)).clamp(0, w - 1)
    ya, xa, yb, xb = (t.to(dev) for t in (ya, xa, yb, xb))
    d = depth / depth.detach().mean().clamp_min(1e-6)
    nearer = torch.sign(mono_disp[ya, xa] - mono_disp[yb, xb])  # +1: a nearer than b
    return torch.relu(nearer * (d[ya, xa] - d[yb, xb]) + margin * nearer.abs()).mean()


class MonoDepthLoss:
    """Regularizer: Pearson correlation + local ranking against cached monocular disparity."""

    name = "mono_depth"
    needs_depth = True

    def __init__(self, cfg: MonoDepthConfig, predictions: dict[int, np.ndarray], device: torch.device, seed: int) -> None:
        self.cfg = cfg
        self.disp = {}
        for i, p in predictions.items():
            t = torch.as_tensor(p, dtype=torch.float32, device=device)
            self.disp[i] = t if cfg.output_is_disparity else 1.0 / t.clamp_min(1e-6)
        self.generator = torch.Generator(device="cpu").manual_seed(seed)

    def loss(self, ctx, render: torch.Tensor) -> torch.Tensor | None:
        w_p = self.cfg.schedule.weight(ctx.step, self.cfg.weight, enabled=self.cfg.enabled)
        disp = self.disp.get(ctx.view.frame)
        if w_p == 0.0 or disp is None:
            return None
        depth = render[0, ..., 3]
        valid = depth > 1e-6
        if int(valid.sum()) < 16:
            return None
        rendered_disp = 1.0 / depth[valid].clamp_min(1e-6)
        term = w_p * pearson_loss(rendered_disp, disp[valid])
        w_r = self.cfg.schedule.weight(ctx.step, self.cfg.ranking_weight, enabled=self.cfg.enabled)
        if w_r > 0:
            term = term + w_r * ranking_loss(depth, disp, pairs=self.cfg.ranking_pairs, radius=self.cfg.ranking_radius,
                                             margin=self.cfg.ranking_margin, generator=self.generator)
        return term
