"""The CPU kernel and the torch reference against gsplat 1.5.3's rules written out here.

``gsplat_composite`` is a line-by-line float64 transliteration of gsplat's per-pixel CUDA
kernels (gsplat/cuda/csrc/RasterizeToPixels3DGSFwd.cu:140-187 and
RasterizeToPixels3DGSBwd.cu:106-243) and ``gsplat_project`` of its pinhole projection
(ProjectionEWA3DGSFused.cu:72-208 with Utils.cuh ``persp_proj`` / ``add_blur``) and tile
intersection (IntersectTile.cu:55-113). Their constants are literals, not imports from the
package, so a backend that drifts from gsplat (e.g. an alpha clamp of 0.99 instead of
0.999) fails here even when the backends still agree with each other. Scenes use opacities
up to exactly 1, with heavy overlap, so the clamp and the transmittance stop both fire.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from reconstruct.raster import rasterize
from reconstruct.raster.kernel_cpu import bin_tiles_cpu, composite_cpu, project_cpu
from reconstruct.raster.projection import TILE_SIZE, bin_tiles, project_gaussians
from reconstruct.raster.reference import composite_reference
from test_raster import GSPLAT_ALPHA_CLAMP, GSPLAT_ALPHA_THRESHOLD, GSPLAT_T_STOP, assert_close, look_at

GSPLAT_EXTEND = 3.33  # ProjectionEWA3DGSFused.cu:164
GSPLAT_EPS2D = 0.3  # rendering.py:46 (rasterization's default eps2d)


def opaque_scene(seed: int, *, n: int = 60, width: int = 30, height: int = 26, cameras: int = 1,
                 spread: float = 0.35, dtype: torch.dtype = torch.float64) -> dict:
    """A tight cloud (heavy overlap) whose opacities reach 1: a third are exactly 1.0, 0.9999
    or 0.9995 (every sixth of those 8x wider), the rest uniform in [0.02, 1]."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=torch.float64) * spread
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    log_scales = torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.4 + math.log(0.08)
    log_scales[0::6] += math.log(8.0)  # wide opaque splats: cores span pixels, layers stop T
    opacities = torch.rand(n, generator=g, dtype=torch.float64) * 0.98 + 0.02
    opacities[0::9] = 1.0
    opacities[3::9] = 0.9999
    opacities[6::9] = 0.9995
    scales = log_scales.exp()
    colors = torch.rand(n, 3, generator=g, dtype=torch.float64)
    viewmats, Ks = [], []
    for c in range(cameras):
        angle = 0.9 * c + 0.4 * seed
        eye = torch.tensor([2.2 * math.sin(angle), 0.3, -2.2 * math.cos(angle)], dtype=torch.float64)
        viewmats.append(look_at(eye, torch.zeros(3, dtype=torch.float64)))
        f = 1.3 * width
        Ks.append(torch.tensor([[f, 0, width / 2 + 0.4], [0, f, height / 2 - 0.3], [0, 0, 1]], dtype=torch.float64))
    params = dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors,
                  backgrounds=torch.rand(cameras, 3, generator=g, dtype=torch.float64))
    return {
        "params": {k: v.to(dtype) for k, v in params.items()},
        "viewmats": torch.stack(viewmats).to(dtype),
        "Ks": torch.stack(Ks).to(dtype),
        "width": width,
        "height": height,
    }


# ---------------------------------------------------------------------------------------
# gsplat's kernels, transliterated (float64, one pixel at a time)
# ---------------------------------------------------------------------------------------


def gsplat_composite(means2d, conics, opacities, colors, backgrounds, offsets, flatten_ids,
                     width, height, v_render, v_alpha_render):
    """Forward and backward of gsplat's 3DGS tile rasterizer for one image set.

    means2d [G, 2], conics [G, 3], opacities [G], colors [G, D], backgrounds [C, D] (numpy
    float64, G = C * N), offsets [C * th * tw + 1], flatten_ids [M]; v_render [C, H, W, D],
    v_alpha_render [C, H, W]. Returns render [C, H, W, D], alphas [C, H, W], gradients
    v_means2d [G, 2], v_means2d_abs [G, 2], v_conics [G, 3], v_colors [G, D], v_opacities [G]
    and counters of clamped contributions and stopped pixels.
    """
    G, D = colors.shape
    C = backgrounds.shape[0]
    tw, th = math.ceil(width / TILE_SIZE), math.ceil(height / TILE_SIZE)
    render = np.zeros((C, height, width, D))
    alphas = np.zeros((C, height, width))
    v_xy, v_xy_abs = np.zeros((G, 2)), np.zeros((G, 2))
    v_conic, v_rgb, v_opac = np.zeros((G, 3)), np.zeros((G, D)), np.zeros(G)
    stats = {"clamped": 0, "stopped": 0, "above_0.99": 0}
    for cam in range(C):
        for i in range(height):
            for j in range(width):
                tile = cam * th * tw + (i // TILE_SIZE) * tw + j // TILE_SIZE
                start, end = int(offsets[tile]), int(offsets[tile + 1])
                px, py = j + 0.5, i + 0.5
                # ---- forward, RasterizeToPixels3DGSFwd.cu:140-187
                T, cur_idx, pix_out = 1.0, 0, np.zeros(D)
                for idx in range(start, end):
                    g = flatten_ids[idx]
                    a, b, c = conics[g]
                    dx, dy = means2d[g, 0] - px, means2d[g, 1] - py
                    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
                    alpha = min(GSPLAT_ALPHA_CLAMP, opacities[g] * math.exp(-sigma))
                    if sigma < 0.0 or alpha < GSPLAT_ALPHA_THRESHOLD:
                        continue
                    stats["above_0.99"] += opacities[g] * math.exp(-sigma) > 0.99
                    next_T = T * (1.0 - alpha)
                    if next_T <= GSPLAT_T_STOP:  # exclusive
                        stats["stopped"] += 1
                        break
                    pix_out += colors[g] * (alpha * T)
                    cur_idx = idx
                    T = next_T
                alphas[cam, i, j] = 1.0 - T
                render[cam, i, j] = pix_out + T * backgrounds[cam]
                # ---- backward, RasterizeToPixels3DGSBwd.cu:106-243
                T_final = 1.0 - alphas[cam, i, j]
                T = T_final
                buffer = np.zeros(D)
                v_c = v_render[cam, i, j]
                v_a = v_alpha_render[cam, i, j]
                for idx in range(end - 1, start - 1, -1):
                    if idx > cur_idx:
                        continue
                    g = flatten_ids[idx]
                    a, b, c = conics[g]
                    o = opacities[g]
                    dx, dy = means2d[g, 0] - px, means2d[g, 1] - py
                    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
                    vis = math.exp(-sigma)
                    alpha = min(GSPLAT_ALPHA_CLAMP, o * vis)
                    if sigma < 0.0 or alpha < GSPLAT_ALPHA_THRESHOLD:
                        continue
                    ra = 1.0 / (1.0 - alpha)
                    T *= ra
                    fac = alpha * T
                    v_rgb[g] += fac * v_c
                    v_alpha = float(((colors[g] * T - buffer * ra) * v_c).sum())
                    v_alpha += T_final * ra * v_a
                    v_alpha += -T_final * ra * float((backgrounds[cam] * v_c).sum())
                    if o * vis <= GSPLAT_ALPHA_CLAMP:
                        v_sigma = -o * vis * v_alpha
                        v_conic[g] += (0.5 * v_sigma * dx * dx, v_sigma * dx * dy, 0.5 * v_sigma * dy * dy)
                        gx, gy = v_sigma * (a * dx + b * dy), v_sigma * (b * dx + c * dy)
                        v_xy[g] += (gx, gy)
                        v_xy_abs[g] += (abs(gx), abs(gy))
                        v_opac[g] += vis * v_alpha
                    else:
                        stats["clamped"] += 1
                    buffer += colors[g] * fac
    return render, alphas, v_xy, v_xy_abs, v_conic, v_rgb, v_opac, stats


def _quat_scale_to_covar(q, s):
    w, x, y, z = q / np.linalg.norm(q)
    R = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])
    M = R * s[None, :]
    return M @ M.T


def gsplat_project(means, quats, scales, opacities, viewmats, Ks, width, height,
                   near=0.01, far=1e10, eps2d=GSPLAT_EPS2D):
    """gsplat's fused pinhole projection (ProjectionEWA3DGSFused.cu:72-208, radius_clip 0,
    classic mode). Returns radii [C, N, 2] int64, means2d [C, N, 2], conics [C, N, 3],
    depths [C, N] (zeros where culled)."""
    C, N = viewmats.shape[0], means.shape[0]
    radii = np.zeros((C, N, 2), dtype=np.int64)
    m2d, con, dep = np.zeros((C, N, 2)), np.zeros((C, N, 3)), np.zeros((C, N))
    for cam in range(C):
        R, t = viewmats[cam, :3, :3], viewmats[cam, :3, 3]
        fx, fy, cx, cy = Ks[cam, 0, 0], Ks[cam, 1, 1], Ks[cam, 0, 2], Ks[cam, 1, 2]
        for n in range(N):
            x, y, z = R @ means[n] + t
            if z < near or z > far:
                continue
            cov_c = R @ _quat_scale_to_covar(quats[n], scales[n]) @ R.T
            tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
            lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
            lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
            rz = 1.0 / z
            tx = z * min(lim_x_pos, max(-lim_x_neg, x * rz))
            ty = z * min(lim_y_pos, max(-lim_y_neg, y * rz))
            J = np.array([[fx * rz, 0.0, -fx * tx * rz * rz], [0.0, fy * rz, -fy * ty * rz * rz]])
            cov2d = J @ cov_c @ J.T
            mean2d = (fx * x * rz + cx, fy * y * rz + cy)
            cov2d[0, 0] += eps2d
            cov2d[1, 1] += eps2d
            det = cov2d[0, 0] * cov2d[1, 1] - cov2d[0, 1] * cov2d[1, 0]
            if det <= 0.0:
                continue
            inv = np.linalg.inv(cov2d)
            o = opacities[n]
            if o < GSPLAT_ALPHA_THRESHOLD:
                continue
            extend = min(GSPLAT_EXTEND, math.sqrt(2.0 * math.log(o / GSPLAT_ALPHA_THRESHOLD)))
            rx = math.ceil(extend * math.sqrt(cov2d[0, 0]))
            ry = math.ceil(extend * math.sqrt(cov2d[1, 1]))
            if rx <= 0 and ry <= 0:
                continue
            if mean2d[0] + rx <= 0 or mean2d[0] - rx >= width or mean2d[1] + ry <= 0 or mean2d[1] - ry >= height:
                continue
            radii[cam, n] = (min(rx, 2**31 - 1), min(ry, 2**31 - 1))  # float -> int32 saturates
            m2d[cam, n] = mean2d
            con[cam, n] = (inv[0, 0], inv[0, 1], inv[1, 1])
            dep[cam, n] = z
    return radii, m2d, con, dep


def gsplat_tiles(means2d, radii, depths, width, height):
    """Per (camera, tile) the Gaussian indices front to back, as IntersectTile.cu:55-113 and
    the (tile, depth) radix sort build them: {(cam, ty, tx): [n, ...]}."""
    C, N = depths.shape
    tw, th = math.ceil(width / TILE_SIZE), math.ceil(height / TILE_SIZE)
    lists: dict[tuple[int, int, int], list[tuple[float, int]]] = {}
    for cam in range(C):
        for n in range(N):
            rx, ry = radii[cam, n]
            if rx <= 0 or ry <= 0:
                continue
            tile_x, tile_y = means2d[cam, n, 0] / TILE_SIZE, means2d[cam, n, 1] / TILE_SIZE
            trx, try_ = rx / TILE_SIZE, ry / TILE_SIZE
            # CUDA's float -> uint32 conversion saturates negatives to 0.
            x0 = min(max(0, math.floor(tile_x - trx)), tw)
            y0 = min(max(0, math.floor(tile_y - try_)), th)
            x1 = min(max(0, math.ceil(tile_x + trx)), tw)
            y1 = min(max(0, math.ceil(tile_y + try_)), th)
            for ty in range(y0, y1):
                for tx in range(x0, x1):
                    lists.setdefault((cam, ty, tx), []).append((float(depths[cam, n]), n))
    return {k: [n for _, n in sorted(v)] for k, v in lists.items()}


# ---------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------


def _projection_inputs(scene):
    p = scene["params"]
    return (p["means"], p["quats"], p["scales"], p["opacities"], scene["viewmats"], scene["Ks"],
            scene["width"], scene["height"])


@pytest.mark.parametrize("seed,cameras", [(0, 1), (1, 2), (2, 1)])
def test_projection_and_tiles_follow_gsplat(seed, cameras):
    scene = opaque_scene(seed, cameras=cameras)
    p = scene["params"]
    width, height = scene["width"], scene["height"]
    radii, m2d, con, dep = gsplat_project(*(x.numpy() for x in _projection_inputs(scene)[:6]), width, height)
    assert (radii > 0).all(-1).sum() > 20
    for name, proj in [
        ("torch", project_gaussians(*_projection_inputs(scene), near_plane=0.01, far_plane=1e10)),
        ("numba", project_cpu(*_projection_inputs(scene), near_plane=0.01, far_plane=1e10)),
    ]:
        assert (proj.radii.numpy() == radii).all(), name
        np.testing.assert_allclose(proj.means2d.detach().numpy(), m2d, rtol=1e-12, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(proj.conics.detach().numpy(), con, rtol=1e-10, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(proj.depths.detach().numpy(), dep, rtol=1e-12, atol=1e-12, err_msg=name)
        want = gsplat_tiles(m2d, radii, dep, width, height)
        for bins in (bin_tiles(proj.means2d, proj.radii, proj.depths, width, height),
                     bin_tiles_cpu(proj.means2d, proj.radii, proj.depths, width, height, TILE_SIZE)):
            N = p["means"].shape[0]
            for cam in range(cameras):
                for ty in range(bins.tile_height):
                    for tx in range(bins.tile_width):
                        s, e = bins.tile_range(cam, ty, tx)
                        got = [int(i) - cam * N for i in bins.flatten_ids[s:e]]
                        assert got == want.get((cam, ty, tx), []), (name, cam, ty, tx)


def test_projection_culls_like_gsplat():
    """Near/far planes, opacity below 1/255, and exactly 1/255 (extend 0 -> radius 0)."""
    scene = opaque_scene(3, n=12)
    p = scene["params"]
    opac = p["opacities"].clone()
    opac[1] = 1.0 / 255.0 * 0.999  # below the threshold
    opac[2] = 1.0 / 255.0  # extend = sqrt(2 ln 1) = 0: both radii 0, culled
    opac[3] = 1.0 / 255.0 * 1.01  # tiny box, kept
    means = p["means"].clone()
    R, t = scene["viewmats"][0, :3, :3], scene["viewmats"][0, :3, 3]
    means[4] = -R.T @ t + 0.009 * R[2]  # z = 0.009 < near
    means[5] = -R.T @ t + 0.011 * R[2]  # z = 0.011 > near
    args = (means, p["quats"], p["scales"], opac, scene["viewmats"], scene["Ks"], scene["width"], scene["height"])
    radii = gsplat_project(*(x.numpy() for x in args[:6]), scene["width"], scene["height"])[0]
    assert (radii[0, [1, 2, 4]] == 0).all() and (radii[0, [3, 5]] > 0).all(-1).all()
    for proj in (project_gaussians(*args, near_plane=0.01, far_plane=1e10),
                 project_cpu(*args, near_plane=0.01, far_plane=1e10)):
        assert (proj.radii.numpy() == radii).all()
    far = gsplat_project(*(x.numpy() for x in args[:6]), scene["width"], scene["height"], far=2.2)[0]
    assert 0 < (far[0] > 0).all(-1).sum() < (radii[0] > 0).all(-1).sum()
    for proj in (project_gaussians(*args, near_plane=0.01, far_plane=2.2),
                 project_cpu(*args, near_plane=0.01, far_plane=2.2)):
        assert (proj.radii.numpy() == far).all()


def _composite_inputs(scene):
    proj = project_gaussians(*_projection_inputs(scene), near_plane=0.01, far_plane=1e10)
    bins = bin_tiles(proj.means2d, proj.radii, proj.depths, scene["width"], scene["height"])
    C, N = proj.depths.shape
    p = scene["params"]
    leaves = {
        "means2d": proj.means2d.detach().clone(),
        "conics": proj.conics.detach().clone(),
        "opacities": p["opacities"][None].expand(C, N).clone(),
        "colors": p["colors"][None].expand(C, N, 3).clone(),
        "backgrounds": p["backgrounds"].clone(),
    }
    return leaves, bins


@pytest.mark.parametrize("seed,cameras", [(0, 1), (1, 2), (4, 1)])
@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_composite_matches_gsplat_kernels(seed, cameras, backend):
    scene = opaque_scene(seed, cameras=cameras)
    W, H = scene["width"], scene["height"]
    leaves, bins = _composite_inputs(scene)
    C, N = leaves["opacities"].shape
    g = torch.Generator().manual_seed(seed + 100)
    v_img = torch.randn(C, H, W, 3, generator=g, dtype=torch.float64)
    v_alpha = torch.randn(C, H, W, 1, generator=g, dtype=torch.float64)

    offsets = torch.cat([bins.offsets.flatten(), torch.tensor([bins.flatten_ids.numel()])]).numpy()
    render, alphas, v_xy, v_xy_abs, v_conic, v_rgb, v_opac, stats = gsplat_composite(
        leaves["means2d"].reshape(C * N, 2).numpy(), leaves["conics"].reshape(C * N, 3).numpy(),
        leaves["opacities"].reshape(C * N).numpy(), leaves["colors"].reshape(C * N, 3).numpy(),
        leaves["backgrounds"].numpy(), offsets, bins.flatten_ids.numpy(), W, H,
        v_img.numpy(), v_alpha[..., 0].numpy(),
    )
    # The scene exercises what a 0.99 clamp would change: alphas above 0.99 and above 0.999
    # (no opacity/geometry gradient there), and pixels stopped by the transmittance test.
    assert stats["above_0.99"] >= 40 and stats["clamped"] >= 3 and stats["stopped"] >= 100, stats
    assert 0.999 < float(alphas.max()) < 1.0 - GSPLAT_T_STOP  # past one clamped layer, never past the stop

    x = {k: v.clone().requires_grad_(True) for k, v in leaves.items()}
    fn = composite_cpu if backend == "cpu" else composite_reference
    kwargs = {"absgrad": True} if backend == "cpu" else {}
    img, alpha = fn(x["means2d"], x["conics"], x["opacities"], x["colors"], x["backgrounds"], bins,
                    W, H, TILE_SIZE, **kwargs)
    ((img * v_img).sum() + (alpha * v_alpha).sum()).backward()
    assert_close(img.detach(), torch.from_numpy(render), 1e-12, "images")
    assert_close(alpha.detach()[..., 0], torch.from_numpy(alphas), 1e-12, "alphas")
    want = {"means2d": v_xy, "conics": v_conic, "colors": v_rgb, "opacities": v_opac}
    for name, expected in want.items():
        got = x[name].grad.reshape(expected.shape)
        assert float(np.abs(expected).max()) > 0, name
        assert_close(got, torch.from_numpy(expected), 1e-9, f"d/d{name}")
    v_bg = (v_img * (1.0 - torch.from_numpy(alphas))[..., None]).sum((1, 2))  # gsplat's autograd rule
    assert_close(x["backgrounds"].grad, v_bg, 1e-10, "d/dbackgrounds")
    if backend == "cpu":
        assert_close(x["means2d"].absgrad.reshape(C * N, 2), torch.from_numpy(v_xy_abs), 1e-9, "absgrad")


def test_opaque_splat_alpha_is_clamped_at_gsplat_value():
    """One splat of opacity 1 (and one of 0.9999) centered on a pixel: alpha there is exactly
    0.999, the opacity gets no gradient from that pixel, and its color still does."""
    for opacity in (1.0, 0.9999):
        means = torch.tensor([[0.0, 0.0, 2.0]], dtype=torch.float64)
        opac = torch.tensor([opacity], dtype=torch.float64, requires_grad=True)
        colors = torch.tensor([[0.2, 0.5, 0.9]], dtype=torch.float64, requires_grad=True)
        K = torch.tensor([[[20.0, 0, 8.5], [0, 20.0, 8.5], [0, 0, 1]]], dtype=torch.float64)
        quats = torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64)
        scales = torch.full((1, 3), 0.2, dtype=torch.float64)
        for backend in ("cpu", "reference"):
            opac.grad = colors.grad = None
            img, alpha, _ = rasterize(means, quats, scales, opac, colors, torch.eye(4, dtype=torch.float64)[None],
                                      K, 17, 17, backend=backend)
            assert float(alpha.detach()[0, 8, 8, 0]) == pytest.approx(GSPLAT_ALPHA_CLAMP, abs=1e-15), backend
            torch.testing.assert_close(img[0, 8, 8], GSPLAT_ALPHA_CLAMP * colors[0].detach(), rtol=1e-14, atol=0)
            (img[0, 8, 8].sum() + alpha[0, 8, 8, 0]).backward()
            assert float(opac.grad) == 0.0, backend
            assert float(colors.grad.abs().min()) == pytest.approx(GSPLAT_ALPHA_CLAMP), backend
            # Away from the core the alpha is below the clamp and the opacity has a gradient.
            opac.grad = None
            img, alpha, _ = rasterize(means, quats, scales, opac, colors, torch.eye(4, dtype=torch.float64)[None],
                                      K, 17, 17, backend=backend)
            alpha[0, 8, 12, 0].backward()
            assert 0.0 < float(alpha.detach()[0, 8, 12, 0]) < GSPLAT_ALPHA_CLAMP
            assert float(opac.grad) > 0.0, backend


def test_two_opaque_splats_stop_after_the_first():
    """T after one clamped splat is 0.001; a second clamped splat would bring it to 1e-6 <=
    1e-4, so gsplat stops there and the second splat is excluded (with a 0.99 clamp the
    second one would be composited: 0.01 * 0.01 = 1.0e-4 + rounding > 1e-4)."""
    means = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 3.0]], dtype=torch.float64)
    quats = torch.tensor([[1.0, 0, 0, 0]] * 2, dtype=torch.float64)
    scales = torch.full((2, 3), 0.2, dtype=torch.float64)
    opac = torch.tensor([1.0, 1.0], dtype=torch.float64)
    colors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    K = torch.tensor([[[20.0, 0, 8.5], [0, 20.0, 8.5], [0, 0, 1]]], dtype=torch.float64)
    for backend in ("cpu", "reference"):
        img, alpha, _ = rasterize(means, quats, scales, opac, colors, torch.eye(4, dtype=torch.float64)[None],
                                  K, 17, 17, backend=backend)
        torch.testing.assert_close(img[0, 8, 8], torch.tensor([0.999, 0.0, 0.0], dtype=torch.float64),
                                   rtol=0, atol=1e-15)
        assert float(alpha[0, 8, 8, 0]) == pytest.approx(0.999, abs=1e-15)


def _gsplat_source(name: str) -> str:
    gsplat = pytest.importorskip("gsplat")
    path = Path(gsplat.__file__).parent / name
    if not path.exists():
        pytest.skip(f"gsplat's CUDA source {name} is not installed")
    return path.read_text()


def test_constants_match_gsplat_sources():
    """The literals above (and so the backends) are the ones in the installed gsplat's
    CUDA sources; a gsplat upgrade that changes them fails here."""
    gsplat = pytest.importorskip("gsplat")
    assert gsplat.__version__ == "1.5.3"
    fwd = _gsplat_source("cuda/csrc/RasterizeToPixels3DGSFwd.cu")
    bwd = _gsplat_source("cuda/csrc/RasterizeToPixels3DGSBwd.cu")
    proj = _gsplat_source("cuda/csrc/ProjectionEWA3DGSFused.cu")
    common = _gsplat_source("cuda/include/Common.h")
    assert "float alpha = min(0.999f, opac * __expf(-sigma));" in fwd
    assert "if (sigma < 0.f || alpha < ALPHA_THRESHOLD) {" in fwd
    assert "if (next_T <= 1e-4f) { // this pixel is done: exclusive" in fwd
    assert "alpha = min(0.999f, opac * vis);" in bwd
    assert "if (opac * vis <= 0.999f) {" in bwd
    assert re.search(r"#define ALPHA_THRESHOLD \(1\.f / 255\.f\)", common)
    assert "float extend = 3.33f;" in proj
    assert "extend = min(extend, sqrt(2.0f * __logf(opacity / ALPHA_THRESHOLD)));" in proj
    assert "float radius_x = ceilf(extend * sqrtf(covar2d[0][0]));" in proj
    assert "if (mean_c.z < near_plane || mean_c.z > far_plane) {" in proj

    from reconstruct.raster import ALPHA_MAX, ALPHA_MIN, EPS2D, T_MIN

    assert (ALPHA_MAX, ALPHA_MIN, T_MIN, EPS2D) == (GSPLAT_ALPHA_CLAMP, GSPLAT_ALPHA_THRESHOLD, GSPLAT_T_STOP,
                                                    GSPLAT_EPS2D)


@pytest.mark.parametrize("seed", [0, 2, 3])
def test_finite_differences_on_opaque_overlap(seed):
    """Whole-pipeline gradients (projection + compositing) of the cpu backend on an opaque,
    heavily overlapping scene agree with central differences and with torch.gradcheck.

    The rules are discontinuous (alpha 1/255 threshold, transmittance stop), so a random
    direction can cross a jump within eps (seed 1 does, 1.5e-7 along its first direction,
    identically in the reference backend); these seeds cross none."""
    from test_raster import PARAM_NAMES, directional_derivative_error

    scene = opaque_scene(seed, n=24, width=20, height=18)
    p = scene["params"]
    inputs = tuple(p[k].detach().clone().requires_grad_(True) for k in PARAM_NAMES)

    def fn(means, quats, scales, opacities, colors, backgrounds):
        img, alpha, _ = rasterize(
            means, quats, scales, opacities, colors, scene["viewmats"], scene["Ks"], 20, 18,
            backgrounds=backgrounds, render_mode="RGB+ED", backend="cpu",
        )
        return img, alpha

    assert float(fn(*inputs)[1].detach().max()) > 0.999
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)
    for k in range(3):
        assert directional_derivative_error(fn, inputs, k) < 1e-6
