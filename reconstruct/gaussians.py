"""The Gaussian-splat model: parameters, optimizers and the render call the trainer uses.

Parameters live in a ``torch.nn.ParameterDict`` with gsplat's names so its densification
strategies work unchanged: means [N,3], quats [N,4] (wxyz, unnormalized), scales [N,3] (log),
opacities [N] (logit), sh0 [N,1,3], shN [N,K-1,3].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, cast

import numpy as np
import torch

from reconstruct.config import InitConfig, OptimConfig
from reconstruct.splats import SH_C0

if TYPE_CHECKING:
    from reconstruct.raster import RenderMode


def _knn_mean_distance(points: np.ndarray, k: int) -> np.ndarray:
    """[P] mean distance of each point to its k nearest neighbours."""
    from scipy.spatial import cKDTree

    k = min(k, max(1, len(points) - 1))
    dist, _ = cKDTree(points).query(points, k=k + 1)
    return np.asarray(dist)[:, 1:].mean(1)


def create_params(
    points: np.ndarray, colors: np.ndarray, *, init: InitConfig, sh_degree: int, device: torch.device
) -> torch.nn.ParameterDict:
    """Gaussians at ``points`` [P,3] with ``colors`` [P,3] in [0,1], isotropic kNN scales."""
    assert points.ndim == 2 and points.shape[1] == 3 and colors.shape == points.shape
    n = len(points)
    dist = np.clip(_knn_mean_distance(points, init.scale_neighbors), 1e-7, None)
    sh0 = ((colors - 0.5) / SH_C0)[:, None, :]
    shN = np.zeros((n, (sh_degree + 1) ** 2 - 1, 3))
    logit = math.log(init.initial_opacity / (1 - init.initial_opacity))

    def p(a) -> torch.nn.Parameter:
        return torch.nn.Parameter(torch.as_tensor(np.asarray(a), dtype=torch.float32, device=device))

    return torch.nn.ParameterDict({
        "means": p(points),
        "scales": p(np.log(dist)[:, None].repeat(3, 1)),
        "quats": p(np.tile([1.0, 0.0, 0.0, 0.0], (n, 1))),
        "opacities": p(np.full(n, logit)),
        "sh0": p(sh0),
        "shN": p(shN),
    })


def camera_extent(scene) -> float:
    """Extent of the training cameras (1.1 x the largest distance from their centroid, 3DGS's
    rule): the unit of the position learning rate."""
    centers = np.asarray(scene.T_world_cam)[list(scene.train_ids), :3, 3]
    return float(np.linalg.norm(centers - centers.mean(0), axis=1).max() * 1.1) or 1.0


def scene_scale(scene) -> float:
    """Size of the scene: the unit of gsplat's densification thresholds (split above 1%, prune above
    10% of it). Cameras around an object span it (the camera extent); a few cameras side by side
    (forward-facing captures, 3 views) span a fraction of what they see, so the scene is at least
    as large as its nearest surface is far: max(camera extent, near bound). On fern's 3 views the
    camera extent alone is 0.23 against a near bound of 1.33 (the points' 90th-percentile radius
    1.53): with it every Gaussian split and, from step 3000, 18k of 30k were pruned as too big."""
    near = float(getattr(scene, "near", 0.0) or 0.0)
    return max(camera_extent(scene), near if np.isfinite(near) else 0.0)


def learning_rates(optim: OptimConfig, scene_scale: float) -> dict[str, float]:
    """The per-attribute Adam learning rates (the position rate is its initial value)."""
    return {"means": optim.lr_means * scene_scale, "scales": optim.lr_scales, "quats": optim.lr_quats,
            "opacities": optim.lr_opacities, "sh0": optim.lr_sh0, "shN": optim.lr_shN}


EXTRA_LR = 1e-2
"""Learning rate of a per-Gaussian parameter the table above does not name (e.g. mask logits)."""


def create_optimizers(params: torch.nn.ParameterDict, lrs: dict[str, float], *, frozen: tuple[str, ...] = ()) -> dict:
    """One Adam per trainable parameter (gsplat strategies add/remove rows in each); parameters in
    ``frozen`` stop requiring gradients and get none."""
    out = {}
    for name, p in params.items():
        if name in frozen:
            p.requires_grad_(False)
            continue
        p.requires_grad_(True)
        out[name] = torch.optim.Adam([{"params": [p], "lr": lrs.get(name, EXTRA_LR), "name": name}], eps=1e-15,
                                     fused=True)
    return out


def position_lr(step: int, total_steps: int, optim: OptimConfig, scene_scale: float) -> float:
    """Exponential decay from lr_means to lr_means_final over ``total_steps`` (times the scene extent)."""
    t = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return scene_scale * math.exp((1 - t) * math.log(optim.lr_means) + t * math.log(optim.lr_means_final))


@dataclass(frozen=True)
class Activated:
    """Render-ready Gaussians: what rasterize() takes."""

    means: torch.Tensor  # [N, 3]
    quats: torch.Tensor  # [N, 4]
    scales: torch.Tensor  # [N, 3] standard deviations
    opacities: torch.Tensor  # [N] in (0, 1)
    colors: torch.Tensor  # [N, K, 3] SH coefficients

    def replace(self, **kw) -> "Activated":
        return replace(self, **kw)



def activate(params: torch.nn.ParameterDict) -> Activated:
    return Activated(
        means=params["means"],
        quats=params["quats"],
        scales=torch.exp(params["scales"]),
        opacities=torch.sigmoid(params["opacities"]),
        colors=torch.cat([params["sh0"], params["shN"]], 1),
    )


def render(
    gaussians: Activated,
    T_world_cam: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    *,
    sh_degree: int,
    background: torch.Tensor | None = None,
    render_mode: str = "RGB+ED",
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Render [C] views: T_world_cam [C,4,4] (OpenCV camera-to-world), Ks [C,3,3].

    Returns images [C,H,W,3 or 4] (RGB then expected depth), alphas [C,H,W,1], info.
    """
    from reconstruct.raster import rasterize

    assert T_world_cam.ndim == 3 and T_world_cam.shape[1:] == (4, 4), T_world_cam.shape
    viewmats = torch.linalg.inv(T_world_cam)
    backgrounds = None
    if background is not None:
        backgrounds = background.expand(len(viewmats), 3)  # depth channels get 0 behind the splats
    return rasterize(
        gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities, gaussians.colors,
        viewmats, Ks, width, height, sh_degree=sh_degree, backgrounds=backgrounds,
        render_mode=cast("RenderMode", render_mode),  # rasterize asserts it is one of RenderMode
    )
