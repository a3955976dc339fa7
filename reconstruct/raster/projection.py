"""Front end of the rasterizers in readable PyTorch: EWA projection, SH colors, tile binning.

The reference renderer uses these functions as they are (autograd gives every gradient);
the CPU kernel runs numba ports of them (``_numba_project.py``, ``_numba.bin_tiles``) and
the parity tests hold the two to the same values and gradients. The math follows gsplat
1.5.3's pinhole path (``fully_fused_projection`` + ``isect_tiles``, the path
``gsplat.rasterization`` takes with ``packed=False, rasterize_mode="classic"``) so the CPU
backends and gsplat on CUDA select, order and shade the same Gaussians:

- world -> camera with the view matrix, covariance R S S^T R^T rotated into the camera;
- culled (radius 0) when z < near or z > far (ProjectionEWA3DGSFused.cu:72);
- EWA: 2D covariance J Sigma J^T, the Jacobian J evaluated at a mean whose x/y is clamped to
  1.3x the field of view (Utils.cuh:514-535, ``persp_proj``), plus the 0.3 px^2 dilation on
  the diagonal (Utils.cuh:381-388, ``add_blur``; ``eps2d=0.3``); culled if det <= 0;
- culled if opacity < 1/255; radius = ceil(extend * sqrt(blurred variance)) per axis with
  the opacity-aware extend = min(3.33, sqrt(2 ln(255 o))), beyond which alpha < 1/255
  anyway (ProjectionEWA3DGSFused.cu:164-184, gsplat passes the opacities: rendering.py:426);
  culled if both radii are 0 or the box lies fully off screen (ProjectionEWA3DGSFused.cu:
  186-198). Radii are not capped: a huge footprint keeps its full radius (saturated at the
  int32 maximum) and the tile range, not the radius, is clipped to the image;
- tiles of 16x16 px, Gaussian tiles [floor(m/ts - r/ts), ceil(m/ts + r/ts)) clipped to the
  tile grid (IntersectTile.cu:66-77); intersections sorted by (camera, tile, depth), ties
  by Gaussian index.

File:line references are to gsplat 1.5.3's ``gsplat/cuda/csrc`` and ``gsplat/cuda/include``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

ALPHA_MIN = 1.0 / 255.0
"""gsplat's ALPHA_THRESHOLD (Common.h:54): a Gaussian with opacity below it is culled at
projection (ProjectionEWA3DGSFused.cu:171), a contribution with alpha below it is skipped
(RasterizeToPixels3DGSFwd.cu:149, RasterizeToPixels3DGSBwd.cu:178)."""
ALPHA_MAX = 0.999
"""Per-Gaussian alpha clamp, alpha = min(0.999, o exp(-power)) (RasterizeToPixels3DGSFwd.cu:148,
RasterizeToPixels3DGSBwd.cu:177). Where o exp(-power) > 0.999 the opacity, conic and mean
get no gradient from that pixel; its color still does (RasterizeToPixels3DGSBwd.cu:222)."""
T_MIN = 1e-4
"""A pixel stops at the first Gaussian that would bring its transmittance to <= T_MIN; that
Gaussian is excluded (RasterizeToPixels3DGSFwd.cu:153-156)."""
EPS2D = 0.3
"""Low-pass dilation added to the 2D covariance diagonal, in px^2 (gsplat's eps2d default)."""
RADIUS_MAX = 2**31 - 1
"""Radii saturate at the int32 maximum (the float -> int32 conversion on CUDA saturates)."""
TILE_SIZE = 16
"""Tile edge in pixels."""


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """[..., 4] wxyz (any norm) -> [..., 3, 3] rotation matrices."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(quats.shape[:-1] + (3, 3))


@dataclass
class Projected:
    """Per (camera, Gaussian) screen-space quantities. Culled entries have radii == 0 and
    zeros elsewhere. Float fields are differentiable w.r.t. means/quats/scales."""

    means2d: Tensor
    """[C, N, 2] pixel coordinates of the projected centers."""
    conics: Tensor
    """[C, N, 3] inverse 2D covariance (a, b, c): power = 0.5 (a dx^2 + c dy^2) + b dx dy."""
    depths: Tensor
    """[C, N] camera-space z."""
    radii: Tensor
    """[C, N, 2] int32 bounding-box half sizes in px; 0 = culled."""
    campos: Tensor
    """[C, 3] camera centers in world coordinates."""


def project_gaussians(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    viewmats: Tensor,  # [C, 4, 4] world-to-camera
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    *,
    near_plane: float,
    far_plane: float,
    eps2d: float = EPS2D,
) -> Projected:
    """EWA-project N Gaussians into C pinhole cameras (see module docstring for the rules)."""
    R = quat_to_rotmat(quats)  # [N, 3, 3]
    M = R * scales[:, None, :]  # [N, 3, 3]
    covars = M @ M.transpose(-1, -2)  # [N, 3, 3]
    R_cam_world = viewmats[:, :3, :3]  # [C, 3, 3]
    t_cam_world = viewmats[:, :3, 3]  # [C, 3]
    means_c = torch.einsum("cij,nj->cni", R_cam_world, means) + t_cam_world[:, None, :]  # [C, N, 3]
    covars_c = torch.einsum("cij,njk,clk->cnil", R_cam_world, covars, R_cam_world)  # [C, N, 3, 3]

    x, y, z = means_c.unbind(-1)  # [C, N]
    valid = (z >= near_plane) & (z <= far_plane) & (z > 0)
    # Culled entries get a harmless depth so no inf/NaN reaches the backward pass.
    zs = torch.where(valid, z, torch.ones_like(z))
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]  # [C, 1]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    tx = zs * torch.minimum(torch.maximum(x / zs, -lim_x_neg), lim_x_pos)
    ty = zs * torch.minimum(torch.maximum(y / zs, -lim_y_neg), lim_y_pos)
    zero = torch.zeros_like(zs)
    J = torch.stack([fx / zs, zero, -fx * tx / zs**2, zero, fy / zs, -fy * ty / zs**2], dim=-1)
    J = J.reshape(zs.shape + (2, 3))  # [C, N, 2, 3]
    cov2d = J @ covars_c @ J.transpose(-1, -2)  # [C, N, 2, 2]
    a = cov2d[..., 0, 0] + eps2d
    b = 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0])
    c = cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    valid = valid & (det > 0) & torch.isfinite(det)
    det_s = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / det_s, -b / det_s, a / det_s], dim=-1)  # [C, N, 3]
    means2d = torch.stack([fx * x / zs + cx, fy * y / zs + cy], dim=-1)  # [C, N, 2]

    with torch.no_grad():
        opac = opacities.detach()[None, :].expand_as(z)
        valid = valid & (opac >= ALPHA_MIN)
        extend = torch.sqrt(2.0 * torch.log(opac.clamp_min(ALPHA_MIN) / ALPHA_MIN)).clamp_max(3.33)
        rx = torch.ceil(extend * torch.sqrt(a.detach().clamp_min(0)))
        ry = torch.ceil(extend * torch.sqrt(c.detach().clamp_min(0)))
        mx, my = means2d.detach().unbind(-1)
        valid = valid & ((rx > 0) | (ry > 0))
        valid = valid & (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        valid = valid & torch.isfinite(means2d.detach()).all(-1) & torch.isfinite(conics.detach()).all(-1)
        # No cap beyond int32 saturation: bin_tiles clips the tile range to the image.
        radii = torch.stack([rx, ry], dim=-1).double().clamp_max(float(RADIUS_MAX))  # exact in float64
        radii = torch.where(valid[..., None], radii, torch.zeros_like(radii)).to(torch.int32)

    v = valid[..., None]
    campos = -torch.einsum("cji,cj->ci", R_cam_world, t_cam_world)  # [C, 3] = -R^T t
    return Projected(
        means2d=torch.where(v, means2d, torch.zeros_like(means2d)),
        conics=torch.where(v, conics, torch.zeros_like(conics)),
        depths=torch.where(valid, z, torch.zeros_like(z)),
        radii=radii,
        campos=campos,
    )


# Real SH basis constants (same ordering and signs as gsplat / the 3DGS reference code).
_C0 = 0.28209479177387814
_C1 = 0.4886025119029199
_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
_C3 = (
    -0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
    -0.4570457994644658, 1.445305721320277, -0.5900435899266435,
)


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """Real SH basis up to `degree` (0..3) at unit directions [..., 3] -> [..., (degree+1)^2]."""
    assert 0 <= degree <= 3, degree
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, _C0)]
    if degree >= 1:
        out += [-_C1 * y, _C1 * z, -_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            _C2[0] * x * y, _C2[1] * y * z, _C2[2] * (2 * zz - xx - yy),
            _C2[3] * x * z, _C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            _C3[0] * y * (3 * xx - yy), _C3[1] * x * y * z, _C3[2] * y * (4 * zz - xx - yy),
            _C3[3] * z * (2 * zz - 3 * xx - 3 * yy), _C3[4] * x * (4 * zz - xx - yy),
            _C3[5] * z * (xx - yy), _C3[6] * x * (xx - 3 * yy),
        ]
    return torch.stack(out, dim=-1)


def sh_colors(
    sh_coeffs: Tensor,  # [N, K, 3]
    degree: int,
    means: Tensor,  # [N, 3]
    campos: Tensor,  # [C, 3]
) -> Tensor:
    """View-dependent RGB [C, N, 3] = max(sum_k basis_k(dir) * coeff_k + 0.5, 0), with dir the
    unit vector from the camera center to the Gaussian (as gsplat's `rasterization`)."""
    K = (degree + 1) ** 2
    assert sh_coeffs.shape[1] >= K, (sh_coeffs.shape, degree)
    dirs = F.normalize(means[None, :, :] - campos[:, None, :], dim=-1)  # [C, N, 3]
    basis = sh_basis(degree, dirs)  # [C, N, K]
    rgb = torch.einsum("cnk,nkd->cnd", basis, sh_coeffs[:, :K, :])
    return torch.clamp_min(rgb + 0.5, 0.0)


@dataclass
class TileBins:
    """Gaussian/tile intersections, sorted by (camera, tile, depth)."""

    tile_width: int
    tile_height: int
    offsets: Tensor
    """[C, tile_height, tile_width] int64 start of each tile's run in `flatten_ids`."""
    flatten_ids: Tensor
    """[M] int64 indices into the flattened [C * N] (camera, Gaussian) arrays."""
    tiles_per_gauss: Tensor
    """[C, N] int64 number of tiles each Gaussian touches."""

    def tile_range(self, cam: int, ty: int, tx: int) -> tuple[int, int]:
        """[start, end) of one tile's run."""
        flat = self.offsets.flatten()
        i = (cam * self.tile_height + ty) * self.tile_width + tx
        end = int(flat[i + 1]) if i + 1 < flat.numel() else int(self.flatten_ids.numel())
        return int(flat[i]), end


@torch.no_grad()
def bin_tiles(
    means2d: Tensor,  # [C, N, 2]
    radii: Tensor,  # [C, N, 2]
    depths: Tensor,  # [C, N]
    width: int,
    height: int,
    tile_size: int = TILE_SIZE,
) -> TileBins:
    """Assign every visible Gaussian to the tiles its bounding box touches (gsplat's rule:
    tiles [floor(m/ts - r/ts), ceil(m/ts + r/ts)) clipped to the grid) and sort each tile's
    list front to back."""
    C, N = depths.shape
    tw, th = math.ceil(width / tile_size), math.ceil(height / tile_size)
    m = means2d.detach().double() / tile_size
    r = radii.double() / tile_size
    x0 = torch.floor(m[..., 0] - r[..., 0]).clamp(0, tw).long()
    x1 = torch.ceil(m[..., 0] + r[..., 0]).clamp(0, tw).long()
    y0 = torch.floor(m[..., 1] - r[..., 1]).clamp(0, th).long()
    y1 = torch.ceil(m[..., 1] + r[..., 1]).clamp(0, th).long()
    visible = (radii > 0).all(-1)
    counts = torch.where(visible, (x1 - x0) * (y1 - y0), torch.zeros_like(x0))  # [C, N]

    flat_counts = counts.flatten()
    pair = torch.repeat_interleave(torch.arange(C * N, device=depths.device), flat_counts)  # [M]
    start = torch.cumsum(flat_counts, 0) - flat_counts
    local = torch.arange(pair.numel(), device=depths.device) - start[pair]  # [M] index in the box
    box_w = (x1 - x0).flatten()[pair]
    tx = x0.flatten()[pair] + local % box_w.clamp_min(1)
    ty = y0.flatten()[pair] + local // box_w.clamp_min(1)
    cam = pair // N

    # Depth rank per camera (stable: equal depths keep Gaussian index order).
    order = torch.sort(depths.detach(), dim=1, stable=True).indices  # [C, N]
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(N, device=depths.device).expand(C, N))
    tile_key = (cam * th + ty) * tw + tx
    key = tile_key * N + rank.flatten()[pair]
    sort = torch.sort(key).indices
    flatten_ids = pair[sort]
    n_per_tile = torch.bincount(tile_key, minlength=C * th * tw)
    offsets = (torch.cumsum(n_per_tile, 0) - n_per_tile).reshape(C, th, tw)
    return TileBins(tw, th, offsets, flatten_ids, counts)
