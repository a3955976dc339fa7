"""CPU backend: tile compositing in numba with a hand-written backward.

Projection, SH and binning run in torch (``projection.py``, autograd handles their
backward); this module is the expensive part: compositing every tile front to back and
walking it back to front for the gradients (the 3DGS paper's scheme: the forward keeps the
final transmittance and the last contributing intersection per pixel).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from reconstruct.raster.projection import TileBins


def _np64(x: Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().to(torch.float64).cpu().numpy())


class _CompositeCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, features, backgrounds, bins, width, height, tile_size, absgrad):
        from reconstruct.raster import _numba

        C, N, D = features.shape
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
        _numba.composite_forward(
            arrays["means2d"], arrays["conics"], arrays["opacities"], arrays["features"],
            arrays["offsets"], arrays["flatten_ids"], width, height, tile_size,
            bins.tile_width, bins.tile_height, out, T_final, last_ids,
        )
        dtype = features.dtype
        images = torch.from_numpy(out)  # [C, H, W, D] without background
        T = torch.from_numpy(T_final)  # [C, H, W]
        if backgrounds is not None:
            images = images + T[..., None] * backgrounds.detach().to(torch.float64)[:, None, None, :]
        ctx.arrays = arrays
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
        v_f = np.zeros((M, D))
        _numba.composite_backward(
            a["means2d"], a["conics"], a["opacities"], a["features"], bg,
            a["offsets"], a["flatten_ids"], width, height, tile_size, tw, th,
            ctx.T_final, ctx.last_ids, v_out, v_alpha, v_m, v_abs, v_q, v_o, v_f,
        )
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
