"""CPU backend: torch autograd Functions around the numba kernels.

- ``_ProjectCPU`` / ``_SHColorsCPU``: EWA projection and SH colors (``_numba_project.py``),
  backward by hand to means, quats, scales and SH coefficients. With camera gradients
  requested, ``rasterize`` uses the torch projection instead.
- ``bin_tiles_cpu``: counting sort of the Gaussian/tile intersections.
- ``_CompositeCPU``: tile compositing front to back and the 3DGS paper's back-to-front
  backward (the forward keeps each pixel's final transmittance and last contributor);
  per-intersection gradient rows are summed into Gaussians with one ``index_add_``.

The kernels compute in float64 whatever the input dtype; results come back in that dtype.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import parallel_chunksize
from torch import Tensor

from reconstruct.raster.projection import ALPHA_MAX, ALPHA_MIN, RADIUS_MAX, T_MIN, TileBins


def _np64(x: Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().to(torch.float64).cpu().numpy())


def _channels(x: np.ndarray, lo: int) -> np.ndarray:
    """Channels [lo, lo + CHANNELS) of the last axis of ``x``, zero-padded to CHANNELS."""
    from reconstruct.raster._numba import CHANNELS

    block = np.zeros(x.shape[:-1] + (CHANNELS,))
    part = x[..., lo:lo + CHANNELS]
    block[..., :part.shape[-1]] = part
    return block


class _CompositeCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, features, backgrounds, bins, width, height, tile_size, absgrad):
        from reconstruct.raster import _numba

        C, N, D = features.shape
        if tile_size > _numba.MAX_TILE:
            raise ValueError(f"the CPU kernel takes tiles of up to {_numba.MAX_TILE} pixels, got {tile_size}")
        offsets = torch.cat([bins.offsets.flatten(), bins.offsets.new_tensor([bins.flatten_ids.numel()])])
        arrays = dict(
            means2d=_np64(means2d.reshape(C * N, 2)),
            conics=_np64(conics.reshape(C * N, 3)),
            opacities=_np64(opacities.reshape(C * N)),
            features=_np64(features.reshape(C * N, D)),
            offsets=np.ascontiguousarray(offsets.numpy().astype(np.int64)),
            flatten_ids=np.ascontiguousarray(bins.flatten_ids.numpy().astype(np.int64)),
        )
        out = np.zeros((C, height, width, D))
        T_final = np.ones((C, height, width))
        last_ids = np.zeros((C, height, width), dtype=np.int64)
        feature_blocks = [_channels(arrays["features"], lo) for lo in range(0, D, _numba.CHANNELS)]
        for lo, feats in zip(range(0, D, _numba.CHANNELS), feature_blocks):  # the same transmittance in each
            block = np.zeros((C, height, width, _numba.CHANNELS))
            with parallel_chunksize(1):  # tiles differ in cost: hand them out one at a time
                _numba.composite_forward(
                    arrays["means2d"], arrays["conics"], arrays["opacities"], feats,
                    arrays["offsets"], arrays["flatten_ids"], width, height, tile_size,
                    bins.tile_width, bins.tile_height, float(ALPHA_MIN), float(ALPHA_MAX), float(T_MIN),
                    block, T_final, last_ids,
                )
            out[..., lo:lo + _numba.CHANNELS] = block[..., :D - lo]
        dtype = features.dtype
        images = torch.from_numpy(out)  # [C, H, W, D] without background
        T = torch.from_numpy(T_final)  # [C, H, W]
        if backgrounds is not None:
            images = images + T[..., None] * backgrounds.detach().to(torch.float64)[:, None, None, :]
        ctx.arrays = arrays
        ctx.feature_blocks = feature_blocks
        ctx.dims = (C, N, D, width, height, tile_size, bins.tile_width, bins.tile_height)
        ctx.T_final = T_final
        ctx.last_ids = last_ids
        ctx.flatten_ids = bins.flatten_ids
        ctx.has_background = backgrounds is not None
        ctx.bg = None if backgrounds is None else _np64(backgrounds)
        ctx.dtype = dtype
        # DefaultStrategy reads means2d.absgrad when asked; keep the tensor to attach it.
        ctx.absgrad_target = means2d if absgrad else None
        return images.to(dtype), (1.0 - T).unsqueeze(-1).to(dtype)

    @staticmethod
    def backward(ctx, v_images, v_alphas):
        from reconstruct.raster import _numba

        C, N, D, width, height, tile_size, tw, th = ctx.dims
        a = ctx.arrays
        M = a["flatten_ids"].shape[0]
        v_out = _np64(v_images) if v_images is not None else np.zeros((C, height, width, D))
        v_alpha = _np64(v_alphas[..., 0]) if v_alphas is not None else np.zeros((C, height, width))
        bg = ctx.bg if ctx.bg is not None else np.zeros((C, D))
        v_m = np.zeros((M, 2))
        v_abs = np.zeros((M, 2))
        v_q = np.zeros((M, 3))
        v_o = np.zeros(M)
        feat_rows = []
        # Channel blocks: the geometry gradients are linear in dL/d(alpha), which sums over
        # channels (plus the pixel-alpha term, given to the first block), so blocks add up. The
        # first block writes the totals; further ones (more than CHANNELS channels) are added.
        for lo, feats in zip(range(0, D, _numba.CHANNELS), ctx.feature_blocks):
            geometry = [v_m, v_abs, v_q, v_o] if lo == 0 else [np.zeros_like(x) for x in (v_m, v_abs, v_q, v_o)]
            feat_rows.append(np.zeros((M, _numba.CHANNELS)))
            with parallel_chunksize(1):
                _numba.composite_backward(
                    a["means2d"], a["conics"], a["opacities"], feats, _channels(bg, lo),
                    a["offsets"], a["flatten_ids"], width, height, tile_size, tw, th,
                    float(ALPHA_MIN), float(ALPHA_MAX), float(T_MIN),
                    ctx.T_final, ctx.last_ids, _channels(v_out, lo), v_alpha if lo == 0 else np.zeros_like(v_alpha),
                    *geometry, feat_rows[-1],
                )
            if lo > 0:
                for total, part in zip((v_m, v_abs, v_q, v_o), geometry):
                    total += part
        v_f = np.concatenate(feat_rows, axis=1)[:, :D] if len(feat_rows) > 1 else feat_rows[0][:, :D]
        ids = ctx.flatten_ids
        dtype = ctx.dtype

        def reduce(rows: np.ndarray, shape: tuple[int, ...]) -> Tensor:
            total = torch.zeros((C * N,) + rows.shape[1:], dtype=torch.float64)
            total.index_add_(0, ids, torch.from_numpy(rows))
            return total.reshape(shape).to(dtype)

        v_means2d = reduce(v_m, (C, N, 2))
        v_conics = reduce(v_q, (C, N, 3))
        v_opac = reduce(v_o, (C, N))
        v_feat = reduce(v_f, (C, N, D))
        v_bg = None
        if ctx.has_background and ctx.needs_input_grad[4]:
            v_bg = (torch.from_numpy(ctx.T_final)[..., None] * torch.from_numpy(v_out)).sum((1, 2)).to(dtype)
        if ctx.absgrad_target is not None:
            ctx.absgrad_target.absgrad = reduce(v_abs, (C, N, 2))
        return v_means2d, v_conics, v_opac, v_feat, v_bg, None, None, None, None, None


def composite_cpu(
    means2d: Tensor,  # [C, N, 2]
    conics: Tensor,  # [C, N, 3]
    opacities: Tensor,  # [C, N]
    features: Tensor,  # [C, N, D]
    backgrounds: Tensor | None,  # [C, D]
    bins: TileBins,
    width: int,
    height: int,
    tile_size: int,
    *,
    absgrad: bool = False,
) -> tuple[Tensor, Tensor]:
    """Composite with the numba kernel. Returns features [C, H, W, D], alphas [C, H, W, 1]."""
    return _CompositeCPU.apply(
        means2d, conics, opacities, features, backgrounds, bins, width, height, tile_size, absgrad
    )


class _ProjectCPU(torch.autograd.Function):
    """EWA projection in numba; gradients to means, quats and scales (not the cameras)."""

    @staticmethod
    def forward(ctx, means, quats, scales, opacities, viewmats, Ks, width, height, near, far, eps2d):
        from reconstruct.raster import _numba_project

        C, N = viewmats.shape[0], means.shape[0]
        arrays = dict(
            means=_np64(means), quats=_np64(quats), scales=_np64(scales),
            Rvs=_np64(viewmats[:, :3, :3]), tvs=_np64(viewmats[:, :3, 3]), Ks=_np64(Ks),
        )
        means2d = np.empty((C, N, 2))
        conics = np.empty((C, N, 3))
        depths = np.empty((C, N))
        radii = np.empty((C, N, 2), dtype=np.int32)
        _numba_project.project_forward(
            arrays["means"], arrays["quats"], arrays["scales"], _np64(opacities), arrays["Rvs"], arrays["tvs"],
            arrays["Ks"], width, height, near, far, eps2d, float(ALPHA_MIN), float(RADIUS_MAX),
            means2d, conics, depths, radii,
        )
        ctx.arrays = arrays
        ctx.radii = radii
        ctx.dims = (width, height, eps2d)
        ctx.dtype = means.dtype
        radii_t = torch.from_numpy(radii)
        ctx.mark_non_differentiable(radii_t)
        dtype = means.dtype
        return (torch.from_numpy(means2d).to(dtype), torch.from_numpy(conics).to(dtype),
                torch.from_numpy(depths).to(dtype), radii_t)

    @staticmethod
    def backward(ctx, v_means2d, v_conics, v_depths, v_radii):
        from reconstruct.raster import _numba_project

        a = ctx.arrays
        C, N = a["Rvs"].shape[0], a["means"].shape[0]
        width, height, eps2d = ctx.dims
        zeros = {2: np.zeros((C, N, 2)), 3: np.zeros((C, N, 3)), 1: np.zeros((C, N))}
        v_m2 = _np64(v_means2d) if v_means2d is not None else zeros[2]
        v_q = _np64(v_conics) if v_conics is not None else zeros[3]
        v_d = _np64(v_depths) if v_depths is not None else zeros[1]
        v_means = np.empty((N, 3))
        v_quats = np.empty((N, 4))
        v_scales = np.empty((N, 3))
        _numba_project.project_backward(
            a["means"], a["quats"], a["scales"], a["Rvs"], a["tvs"], a["Ks"], width, height, eps2d,
            ctx.radii, v_m2, v_q, v_d, v_means, v_quats, v_scales,
        )
        dt = ctx.dtype
        return (torch.from_numpy(v_means).to(dt), torch.from_numpy(v_quats).to(dt),
                torch.from_numpy(v_scales).to(dt)) + (None,) * 8


class _SHColorsCPU(torch.autograd.Function):
    """View-dependent SH colors [C, N, 3] in numba; gradients to coefficients and means."""

    @staticmethod
    def forward(ctx, coeffs, means, campos, radii, degree):
        from reconstruct.raster import _numba_project

        C, N = campos.shape[0], means.shape[0]
        c64, m64, p64 = _np64(coeffs), _np64(means), _np64(campos)
        r = np.ascontiguousarray(radii.numpy())
        colors = np.empty((C, N, 3))
        K = (degree + 1) ** 2
        _numba_project.sh_forward(c64, K, m64, p64, r, colors)
        ctx.saved = (c64, K, m64, p64, r, colors)
        ctx.dtype = coeffs.dtype
        return torch.from_numpy(colors).to(coeffs.dtype)

    @staticmethod
    def backward(ctx, v_colors):
        from reconstruct.raster import _numba_project

        c64, K, m64, p64, r, colors = ctx.saved
        v_coeffs = np.empty_like(c64)
        v_means = np.empty_like(m64)
        _numba_project.sh_backward(c64, K, m64, p64, r, colors, _np64(v_colors), v_coeffs, v_means)
        dt = ctx.dtype
        return torch.from_numpy(v_coeffs).to(dt), torch.from_numpy(v_means).to(dt), None, None, None


def project_cpu(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    *,
    near_plane: float,
    far_plane: float,
):
    """`projection.project_gaussians` computed by the numba kernels (no camera gradients)."""
    from reconstruct.raster.projection import EPS2D, Projected

    means2d, conics, depths, radii = _ProjectCPU.apply(
        means, quats, scales, opacities.detach(), viewmats.detach(), Ks.detach(), width, height,
        float(near_plane), float(far_plane), EPS2D,
    )
    R, t = viewmats.detach()[:, :3, :3], viewmats.detach()[:, :3, 3]
    campos = -torch.einsum("cji,cj->ci", R, t)  # [C, 3]
    return Projected(means2d=means2d, conics=conics, depths=depths, radii=radii, campos=campos)


def sh_colors_cpu(coeffs: Tensor, degree: int, means: Tensor, campos: Tensor, radii: Tensor) -> Tensor:
    """`projection.sh_colors` computed by numba, zero for culled Gaussians: [C, N, 3]."""
    return _SHColorsCPU.apply(coeffs, means, campos, radii, degree)


def bin_tiles_cpu(
    means2d: Tensor,  # [C, N, 2]
    radii: Tensor,  # [C, N, 2] int32
    depths: Tensor,  # [C, N]
    width: int,
    height: int,
    tile_size: int,
) -> TileBins:
    """`projection.bin_tiles` as a numba counting sort (same order, no comparison sort of M)."""
    import math

    from reconstruct.raster import _numba

    tw, th = math.ceil(width / tile_size), math.ceil(height / tile_size)
    C = depths.shape[0]
    order = torch.sort(depths.detach(), dim=1, stable=True).indices  # [C, N] front to back
    offsets, flatten_ids, tiles_per_gauss = _numba.bin_tiles(
        _np64(means2d), np.ascontiguousarray(radii.numpy()), order.numpy(), tile_size, tw, th
    )
    return TileBins(
        tile_width=tw,
        tile_height=th,
        offsets=torch.from_numpy(offsets[:-1]).reshape(C, th, tw),
        flatten_ids=torch.from_numpy(flatten_ids),
        tiles_per_gauss=torch.from_numpy(tiles_per_gauss),
    )
