"""CUDA backend: gsplat's fused `rasterization`, called only with CUDA tensors."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from reconstruct.raster.projection import EPS2D, TILE_SIZE


def rasterize_gsplat(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    colors: Tensor,  # [N, D] or [N, K, 3]
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    *,
    sh_degree: int | None,
    backgrounds: Tensor | None,
    near_plane: float,
    far_plane: float,
    render_mode: str,
    absgrad: bool,
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """gsplat.rasterization with the options that match the CPU backends (pinhole, classic,
    unpacked so radii are [C, N, 2] on every device, 16 px tiles, 0.3 px dilation)."""
    from gsplat import rasterization

    images, alphas, info = rasterization(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height,
        near_plane=near_plane, far_plane=far_plane, sh_degree=sh_degree,
        backgrounds=backgrounds, render_mode=render_mode, packed=False, absgrad=absgrad,
        tile_size=TILE_SIZE, eps2d=EPS2D, rasterize_mode="classic", camera_model="pinhole",
    )
    info["backend"] = "gsplat"
    return images, alphas, info
