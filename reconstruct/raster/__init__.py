"""Gaussian-splat rasterization with one gsplat-shaped entry point and three backends.

``rasterize`` picks the backend from the tensors' device: gsplat's CUDA ``rasterization``
on a CUDA device, the project's numba kernel on CPU. ``backend="reference"`` selects the
pure-PyTorch autograd renderer (tests and benchmarks only). Callers never branch on the
device themselves.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor

from reconstruct.raster.projection import (
    ALPHA_MAX,
    ALPHA_MIN,
    EPS2D,
    T_MIN,
    TILE_SIZE,
    bin_tiles,
    project_gaussians,
    sh_colors,
)

RenderMode = Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"]
Backend = Literal["auto", "gsplat", "cpu", "reference"]

__all__ = [
    "ALPHA_MAX",
    "ALPHA_MIN",
    "T_MIN",
    "EPS2D",
    "TILE_SIZE",
    "dssim_loss",
    "rasterize",
    "resolve_backend",
]


def dssim_loss(img: Tensor, ref: Tensor, *, fused: bool = True) -> Tensor:
    """Differentiable 1 - SSIM of [H, W, 3] images (11x11 Gaussian window, zero padding): the
    fused numba kernel with its own backward on CPU (``fused``), the batched torch blur elsewhere.
    Both compute the same value (tests/test_raster_ssim.py)."""
    if fused and img.device.type == "cpu":
        from reconstruct.raster.ssim_numba import dssim_loss_numba

        return dssim_loss_numba(img, ref)
    from reconstruct.metrics import dssim_loss as torch_dssim

    return torch_dssim(img, ref)


def resolve_backend(device: torch.device, backend: Backend = "auto") -> str:
    """The backend `rasterize` uses for tensors on `device`: "gsplat", "cpu" or "reference"."""
    if backend == "auto":
        return "cpu" if device.type == "cpu" else "gsplat"
    if backend == "gsplat" and device.type == "cpu":
        raise ValueError("the gsplat backend needs CUDA tensors; gsplat's ops do not run on CPU")
    if backend in ("cpu", "reference") and device.type != "cpu":
        raise ValueError(f"the {backend} backend needs CPU tensors, got device {device}")
    if backend not in ("gsplat", "cpu", "reference"):
        raise ValueError(f"unknown rasterizer backend {backend!r}")
    return backend


def rasterize(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    *,
    sh_degree: int | None = None,
    backgrounds: Tensor | None = None,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    render_mode: RenderMode = "RGB",
    backend: Backend = "auto",
    absgrad: bool = False,
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Render N Gaussians into C pinhole cameras.

    Args:
        means: [N, 3] world-space centers.
        quats: [N, 4] rotations, w x y z, any norm.
        scales: [N, 3] activated standard deviations (exp of the log scales).
        opacities: [N] activated opacities in [0, 1].
        colors: [N, D] post-activation features (any D), or SH coefficients [N, K, 3],
            K = (d + 1)^2 for some d <= 3, evaluated to RGB with the view direction from
            the camera center (``max(SH + 0.5, 0)``, as gsplat).
        viewmats: [C, 4, 4] world-to-camera (OpenCV: x right, y down, z forward), T_cam_world.
        Ks: [C, 3, 3] pinhole intrinsics in pixels.
        width, height: image size in pixels.
        sh_degree: SH degree to use; None with [N, K, 3] colors means the full degree of K.
        backgrounds: [C, D] color behind the splats (depth channels get 0).
        near_plane, far_plane: camera-space z range; Gaussians outside are culled.
        render_mode: "RGB" features, "D" accumulated depth sum(w z), "ED" expected depth
            sum(w z) / alpha, or both with the depth as the last channel.
        backend: "auto" (by device), "gsplat", "cpu" (numba kernel) or "reference" (torch).
        absgrad: also accumulate |d loss / d means2d| into ``info["means2d"].absgrad``
            (gsplat and cpu backends).

    Returns:
        images [C, H, W, D(+1)], alphas [C, H, W, 1], info dict with the keys gsplat's
        ``DefaultStrategy`` reads: means2d [C, N, 2] (non-leaf, call retain_grad), radii
        [C, N, 2] int32, gaussian_ids None (never packed), width, height, n_cameras; plus
        depths, conics, opacities, tile bookkeeping.
    """
    N = means.shape[0]
    C = viewmats.shape[0]
    assert means.shape == (N, 3), means.shape
    assert quats.shape == (N, 4), quats.shape
    assert scales.shape == (N, 3), scales.shape
    assert opacities.shape == (N,), opacities.shape
    assert viewmats.shape == (C, 4, 4), viewmats.shape
    assert Ks.shape == (C, 3, 3), Ks.shape
    assert colors.shape[0] == N and colors.dim() in (2, 3), colors.shape
    assert render_mode in ("RGB", "D", "ED", "RGB+D", "RGB+ED"), render_mode
    assert width > 0 and height > 0, (width, height)
    if colors.dim() == 3:
        assert colors.shape[-1] == 3, colors.shape
        full = math.isqrt(colors.shape[1]) - 1
        assert (full + 1) ** 2 == colors.shape[1] and full <= 3, f"SH count {colors.shape[1]} is not 1, 4, 9 or 16"
        sh_degree = full if sh_degree is None else sh_degree
        assert 0 <= sh_degree <= full, (sh_degree, colors.shape)
    else:
        assert sh_degree is None, "sh_degree given but colors are [N, D] features"
    n_color = colors.shape[-1]
    if backgrounds is not None:
        assert backgrounds.shape == (C, n_color), (backgrounds.shape, (C, n_color))

    chosen = resolve_backend(means.device, backend)
    if chosen == "gsplat":
        from reconstruct.raster._gsplat import rasterize_gsplat

        return rasterize_gsplat(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height,
            sh_degree=sh_degree, backgrounds=backgrounds, near_plane=near_plane,
            far_plane=far_plane, render_mode=render_mode, absgrad=absgrad,
        )

    # The numba projection has no camera gradients; pose optimization takes the torch path.
    fused = chosen == "cpu" and not (viewmats.requires_grad or Ks.requires_grad)
    if fused:
        from reconstruct.raster.kernel_cpu import project_cpu, sh_colors_cpu

        proj = project_cpu(
            means, quats, scales, opacities, viewmats, Ks, width, height,
            near_plane=near_plane, far_plane=far_plane,
        )
    else:
        proj = project_gaussians(
            means, quats, scales, opacities, viewmats, Ks, width, height,
            near_plane=near_plane, far_plane=far_plane,
        )
    if colors.dim() == 3 and fused:
        assert sh_degree is not None  # resolved from the SH count above
        rgb = sh_colors_cpu(colors, sh_degree, means, proj.campos, proj.radii)  # [C, N, 3]
    elif colors.dim() == 3:
        assert sh_degree is not None  # resolved from the SH count above
        rgb = sh_colors(colors, sh_degree, means, proj.campos)  # [C, N, 3]
    else:
        rgb = colors[None].expand(C, N, n_color)  # [C, N, D]
    depth = proj.depths[..., None]  # [C, N, 1]
    if render_mode == "RGB":
        features, bg = rgb, backgrounds
    elif render_mode in ("D", "ED"):
        features = depth
        bg = None if backgrounds is None else backgrounds.new_zeros((C, 1))
    else:
        features = torch.cat([rgb, depth], dim=-1)
        bg = None if backgrounds is None else torch.cat([backgrounds, backgrounds.new_zeros((C, 1))], -1)

    if chosen == "cpu":
        from reconstruct.raster.kernel_cpu import bin_tiles_cpu

        bins = bin_tiles_cpu(proj.means2d, proj.radii, proj.depths, width, height, TILE_SIZE)
    else:
        bins = bin_tiles(proj.means2d, proj.radii, proj.depths, width, height, TILE_SIZE)
    opac = opacities[None, :].expand(C, N)  # [C, N]
    if chosen == "reference":
        from reconstruct.raster.reference import composite_reference

        images, alphas = composite_reference(
            proj.means2d, proj.conics, opac, features, bg, bins, width, height, TILE_SIZE
        )
    else:
        from reconstruct.raster.kernel_cpu import composite_cpu

        images, alphas = composite_cpu(
            proj.means2d, proj.conics, opac, features, bg, bins, width, height, TILE_SIZE,
            absgrad=absgrad,
        )
    if render_mode in ("ED", "RGB+ED"):
        images = torch.cat([images[..., :-1], images[..., -1:] / alphas.clamp(min=1e-10)], dim=-1)

    info: dict[str, Any] = {
        "means2d": proj.means2d,
        "radii": proj.radii,
        "depths": proj.depths,
        "conics": proj.conics,
        "opacities": opac,
        "gaussian_ids": None,
        "camera_ids": None,
        "batch_ids": None,
        "width": width,
        "height": height,
        "n_cameras": C,
        "n_batches": 1,
        "tile_size": TILE_SIZE,
        "tile_width": bins.tile_width,
        "tile_height": bins.tile_height,
        "tiles_per_gauss": bins.tiles_per_gauss,
        "flatten_ids": bins.flatten_ids,
        "isect_offsets": bins.offsets,
        "backend": chosen,
    }
    return images, alphas, info
