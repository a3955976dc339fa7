"""Render held-out views and score them: PSNR, SSIM, LPIPS (when weights exist); pictures of it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from reconstruct import gaussians as G
from reconstruct.metrics import load_lpips, psnr, ssim
from reconstruct.run import Run
from reconstruct.splats import Splats
from scenes.fileio import atomic_write_bytes
from scenes.types import SceneData


def render_splats(
    splats: Splats | G.Activated, scene: SceneData, frame: int, *, device: torch.device | None = None,
    sh_degree: int | None = None, T_world_cam: torch.Tensor | np.ndarray | None = None,
    K: torch.Tensor | np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render frame ``frame`` of ``scene``: rgb [H,W,3] and expected depth [H,W] (CPU tensors).
    ``T_world_cam`` [4, 4] / ``K`` [3, 3]: another camera than the frame's (refined poses)."""
    if isinstance(splats, Splats):
        device = device or torch.device("cpu")
        gs = G.activate(torch.nn.ParameterDict({k: torch.nn.Parameter(v, requires_grad=False)
                                                for k, v in splats.to_params(str(device)).items()}))
        degree = splats.sh_degree if sh_degree is None else sh_degree
    else:
        gs, degree = splats, (sh_degree if sh_degree is not None else int(np.sqrt(splats.colors.shape[1])) - 1)
        device = gs.means.device
    T = scene.T_world_cam[frame] if T_world_cam is None else T_world_cam
    K = scene.Ks[frame] if K is None else K
    with torch.no_grad():
        out, _, _ = G.render(
            gs,
            torch.as_tensor(T, dtype=torch.float32, device=device)[None],
            torch.as_tensor(K, dtype=torch.float32, device=device)[None],
            scene.width, scene.height, sh_degree=degree,
            background=torch.tensor(scene.background, dtype=torch.float32, device=device),
            render_mode="RGB+ED",
        )
    return out[0, ..., :3].clamp(0, 1).cpu(), out[0, ..., 3].cpu()


def evaluate(
    splats: Splats | G.Activated, scene: SceneData, *, ids: list[int] | None = None,
    out_dir: Path | None = None, device: torch.device | None = None, with_lpips: bool = True,
) -> dict:
    """Scores of splats on ``ids`` (default: the scene's test views); see ``evaluate_views``."""
    return evaluate_views(lambda frame: render_splats(splats, scene, frame, device=device), scene,
                          ids=ids, out_dir=out_dir, with_lpips=with_lpips)


RenderFn = Callable[[int], tuple[torch.Tensor, torch.Tensor]]
"""frame -> (rgb [H,W,3] in [0,1], depth [H,W]) as CPU tensors: any method's renderer."""


def evaluate_views(
    render_fn: RenderFn, scene: SceneData, *, ids: list[int] | None = None, out_dir: Path | None = None,
    with_lpips: bool = True, prefix: str = "test", grid: bool = True,
) -> dict:
    """The one scoring loop (splats and NeRF alike); writes renders and a grid when out_dir is given
    (renders/<prefix>_<frame>.png; the grid only with ``grid``).

    Returns psnr, ssim, lpips (None with lpips_reason when weights are missing), n_test, render_fps,
    per_view.
    """
    ids = list(scene.test_ids if ids is None else ids)
    lp = load_lpips() if with_lpips else None
    scores, rows, seconds = [], [], 0.0
    for k, frame in enumerate(ids):
        t0 = time.perf_counter()
        rgb, depth = render_fn(frame)
        seconds += time.perf_counter() - t0
        gt = torch.as_tensor(scene.image(frame))
        entry = {"frame": frame, "psnr": psnr(rgb, gt), "ssim": ssim(rgb, gt), "render_std": float(rgb.std()),
                 "gt_std": float(gt.std())}
        if lp is not None and lp.model is not None:
            entry["lpips"] = float(lp.model(rgb, gt))
        scores.append(entry)
        if out_dir is not None:
            _save_png(Run.renders_dir(out_dir) / f"{prefix}_{frame:04d}.png", rgb.numpy())
            if k < 6:
                rows.append((gt.numpy(), rgb.numpy(), _colorize_depth(depth.numpy())))
    result = {
        "psnr": float(np.mean([s["psnr"] for s in scores])) if scores else None,
        "ssim": float(np.mean([s["ssim"] for s in scores])) if scores else None,
        "lpips": float(np.mean([s["lpips"] for s in scores])) if scores and "lpips" in scores[0] else None,
        "lpips_reason": None if (lp and lp.model is not None) else (lp.reason if lp else "not computed"),
        "n_test": len(ids),
        "render_fps": len(ids) / seconds if seconds > 0 else None,
        "per_view": scores,
    }
    if out_dir is not None and rows and grid:
        _save_png(Run.grid_path(out_dir), labelled_grid(rows, ("ground truth", "render", "depth")))
    return result


def _colorize_depth(depth: np.ndarray) -> np.ndarray:
    """[H,W] depth -> [H,W,3] turbo colors, near = warm, robust 2-98% range."""
    import matplotlib

    valid = depth[depth > 0]
    lo, hi = (np.percentile(valid, [2, 98]) if valid.size else (0.0, 1.0))
    t = np.clip((depth - lo) / max(hi - lo, 1e-8), 0, 1)
    rgb = matplotlib.colormaps["turbo"](1 - t)[..., :3]
    rgb[depth <= 0] = 0
    return rgb.astype(np.float32)


def labelled_grid(rows: Sequence[tuple[np.ndarray, ...]], labels: tuple[str, ...]) -> np.ndarray:
    """[H', W', 3] image: the rows of equally sized [H, W, 3] tiles under a header naming each column."""
    from PIL import Image, ImageDraw

    body = np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)
    w_tile = rows[0][0].shape[1]
    band = 22
    head = Image.new("RGB", (body.shape[1], band), (255, 255, 255))
    draw = ImageDraw.Draw(head)
    for k, text in enumerate(labels):
        draw.text((k * w_tile + 6, 5), text, fill=(0, 0, 0))
    return np.concatenate([np.asarray(head, np.float32) / 255.0, body], axis=0)


def _save_png(path: Path, rgb: np.ndarray) -> None:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def plot_curves(history: list[dict], path: Path) -> None:
    """Loss and training-view PSNR against step, as a PNG."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = [h for h in history if h.get("test_psnr") is not None]
    history = [h for h in history if "loss" in h]
    steps = [h["step"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.plot(steps, [h["loss"] for h in history])
    a.set(xlabel="step", ylabel="loss", yscale="log", title="training loss")
    b.plot(steps, [h["psnr"] for h in history], label="train view")
    if evals:
        b.plot([h["step"] for h in evals], [h["test_psnr"] for h in evals], "o-", label="test views")
    b.set(xlabel="step", ylabel="PSNR (dB)", title="PSNR")
    b.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
