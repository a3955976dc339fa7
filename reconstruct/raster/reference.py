"""Pure-PyTorch reference compositor: readable, autograd for every gradient, tests only.

Walks the tiles one at a time. For a tile with n depth-sorted Gaussians and P pixels it
builds the [n, P] alpha matrix and composites front to back with a cumulative product,
which reproduces the sequential kernel's rules exactly:

    power  = 0.5 (a dx^2 + c dy^2) + b dx dy          (dx = mean_x - pixel center)
    alpha  = min(ALPHA_MAX, o exp(-power)), skipped if power < 0 or alpha < 1/255;
             where o exp(-power) > ALPHA_MAX alpha is that constant (no gradient to o,
             the conic or the mean), as gsplat's RasterizeToPixels3DGSBwd.cu:222
    T_k    = prod_{j<k} (1 - alpha_j)  over contributing j
    stop   : the first Gaussian that would bring T to <= T_MIN and all later ones are dropped
    color  = sum_k alpha_k T_k c_k + T_final * background,  alpha_pixel = 1 - T_final

Works in float32 or float64 (whatever the inputs are).
"""

from __future__ import annotations

import torch
from torch import Tensor

from reconstruct.raster.projection import ALPHA_MAX, ALPHA_MIN, T_MIN, TileBins


def composite_reference(
    means2d: Tensor,  # [C, N, 2]
    conics: Tensor,  # [C, N, 3]
    opacities: Tensor,  # [C, N]
    features: Tensor,  # [C, N, D]
    backgrounds: Tensor | None,  # [C, D]
    bins: TileBins,
    width: int,
    height: int,
    tile_size: int,
) -> tuple[Tensor, Tensor]:
    """Composite per tile. Returns features [C, H, W, D] and alphas [C, H, W, 1]."""
    C, N, D = features.shape
    flat_means = means2d.reshape(C * N, 2)
    flat_conics = conics.reshape(C * N, 3)
    flat_opac = opacities.reshape(C * N)
    flat_feat = features.reshape(C * N, D)
    out_rows = []
    alpha_rows = []
    for cam in range(C):
        feat_rows, acc_rows = [], []
        for ty in range(bins.tile_height):
            feat_tiles, acc_tiles = [], []
            y_lo, y_hi = ty * tile_size, min(height, (ty + 1) * tile_size)
            for tx in range(bins.tile_width):
                x_lo, x_hi = tx * tile_size, min(width, (tx + 1) * tile_size)
                ys, xs = torch.meshgrid(
                    torch.arange(y_lo, y_hi, dtype=features.dtype),
                    torch.arange(x_lo, x_hi, dtype=features.dtype),
                    indexing="ij",
                )
                px, py = xs.reshape(-1) + 0.5, ys.reshape(-1) + 0.5  # [P] pixel centers
                start, end = bins.tile_range(cam, ty, tx)
                ids = bins.flatten_ids[start:end]  # [n] front to back
                tile_shape = (y_hi - y_lo, x_hi - x_lo)
                if ids.numel() == 0:
                    rgb = features.new_zeros((px.numel(), D))
                    T = features.new_ones(px.numel())
                else:
                    m, q, o, f = flat_means[ids], flat_conics[ids], flat_opac[ids], flat_feat[ids]
                    dx = m[:, 0:1] - px[None, :]  # [n, P]
                    dy = m[:, 1:2] - py[None, :]
                    power = 0.5 * (q[:, 0:1] * dx * dx + q[:, 2:3] * dy * dy) + q[:, 1:2] * dx * dy
                    raw = o[:, None] * torch.exp(-power)  # [n, P]
                    # The clamp by where (not clamp_max) so the tie raw == ALPHA_MAX keeps its
                    # gradient exactly as gsplat's `opac * vis <= 0.999f` test does.
                    alpha = torch.where(raw <= ALPHA_MAX, raw, torch.full_like(raw, ALPHA_MAX))
                    hit = (power >= 0) & (alpha >= ALPHA_MIN)
                    alpha = torch.where(hit, alpha, torch.zeros_like(alpha))
                    with torch.no_grad():  # which Gaussians are composited before the stop
                        T_after = torch.cumprod(1.0 - alpha, dim=0)
                        keep = hit & (T_after > T_MIN)
                    alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
                    one_minus = 1.0 - alpha
                    T_before = torch.cumprod(
                        torch.cat([torch.ones_like(one_minus[:1]), one_minus[:-1]], dim=0), dim=0
                    )
                    weights = alpha * T_before  # [n, P]
                    rgb = weights.transpose(0, 1) @ f  # [P, D]
                    T = T_before[-1] * one_minus[-1]  # [P]
                if backgrounds is not None:
                    rgb = rgb + T[:, None] * backgrounds[cam][None, :]
                feat_tiles.append(rgb.reshape(tile_shape + (D,)))
                acc_tiles.append((1.0 - T).reshape(tile_shape + (1,)))
            feat_rows.append(torch.cat(feat_tiles, dim=1))
            acc_rows.append(torch.cat(acc_tiles, dim=1))
        out_rows.append(torch.cat(feat_rows, dim=0))
        alpha_rows.append(torch.cat(acc_rows, dim=0))
    return torch.stack(out_rows), torch.stack(alpha_rows)
