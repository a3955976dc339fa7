"""`recon export RUN --format pointcloud|mesh` for NeRF runs.

- pointcloud: the density field sampled on a regular grid over the region the field models (the
  AABB of object scenes; the uncontracted inner cube of contracted scenes), points kept where the
  cell is occupied and the density exceeds ``density_threshold``; colors from the color MLP
  averaged over the six axis view directions. Written as a binary .ply (x y z, red green blue
  uchar) with plyfile.
- mesh: TSDF fusion with open3d (optional extra ``mesh``: ``pip install 'recon[mesh]'``, i.e.
  open3d-cpu): expected depth and color are rendered from the run's training cameras, fused into
  a UniformTSDFVolume over the same region as the point cloud, and marching cubes extracts the
  triangle mesh (.ply).

Both write through a temp file and a rename, so nothing half-written is left behind.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import torch

from reconstruct.run import Run
from scenes.errors import ReconError
from scenes.fileio import atomic_write_bytes


def _inner_box(space) -> tuple[float, float]:
    """Range of unit-cube coordinates exported: all of it for an AABB, the uncontracted core otherwise."""
    return (0.0, 1.0) if space.kind == "aabb" else (0.25, 0.75)


@torch.no_grad()
def density_points(field, grid, *, resolution: int = 128, density_threshold: float = 10.0,
                   chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """World points [P, 3] float32 and colors [P, 3] uint8 of grid cells whose density passes the threshold."""
    lo, hi = _inner_box(field.space)
    ax = torch.linspace(lo, hi, resolution + 1)[:-1] + (hi - lo) / (2 * resolution)  # cell centers
    u = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    dev = field.encoding.params.device
    dirs = torch.tensor([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]],
                        dtype=torch.float32, device=dev)
    pts, cols = [], []
    for c in u.split(chunk):
        c = c.to(dev)
        if grid is not None:
            c = c[grid.occupied(c)]
        if len(c) == 0:
            continue
        x = field.space.from_unit(c)
        sigma, geo = field.density(x)
        keep = sigma > density_threshold
        if not bool(keep.any()):
            continue
        x, geo = x[keep], geo[keep]
        rgb = torch.stack([field.color(geo, d.expand(len(geo), 3)) for d in dirs]).mean(0)
        pts.append(x.cpu())
        cols.append(rgb.cpu())
    if not pts:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
    rgb8 = (torch.cat(cols).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return torch.cat(pts).numpy().astype(np.float32), rgb8


def write_points_ply(path: Path, points: np.ndarray, colors: np.ndarray) -> Path:
    """Binary .ply point cloud (float x y z, uchar red green blue), atomically."""
    from plyfile import PlyData, PlyElement

    assert points.ndim == 2 and points.shape[1] == 3 and colors.shape == points.shape, (points.shape, colors.shape)
    v = np.empty(len(points), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"),
                                     ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    v["x"], v["y"], v["z"] = points.T
    v["red"], v["green"], v["blue"] = colors.T
    buf = io.BytesIO()
    PlyData([PlyElement.describe(v, "vertex")]).write(buf)
    return atomic_write_bytes(path, buf.getvalue())


def tsdf_mesh(field, grid, scene, *, resolution: int = 192, n_samples: int = 128,
              ids: list[int] | None = None, chunk: int = 8192):
    """open3d TriangleMesh fused from depth/color rendered at ``ids`` (default: training views)."""
    try:
        import open3d as o3d
    except ImportError:
        raise ReconError(None, "mesh export needs open3d: pip install 'recon[mesh]' (open3d-cpu)") from None
    from reconstruct.nerf.method import render_image

    space = field.space
    extent = 2.0 * space.radius  # the AABB, or the uncontracted core of a contracted scene
    origin = (np.asarray(space.center, np.float64) - space.radius).reshape(3, 1)
    volume = o3d.pipelines.integration.UniformTSDFVolume(
        length=extent, resolution=resolution, sdf_trunc=4 * extent / resolution,
        color_type=o3d.pipelines.integration.TSDFVolumeColorType.RGB8, origin=origin)
    ids = list(scene.train_ids if ids is None else ids)
    for frame in ids:
        rgb, depth_t, acc = render_image(field, grid, scene.Ks[frame], scene.T_world_cam[frame], scene.width,
                                         scene.height, near=scene.near, far=scene.far, background=scene.background,
                                         n_samples=n_samples, chunk=chunk)
        depth = depth_t.numpy().astype(np.float32)
        if space.kind == "contract":
            depth[depth > scene.far] = 0.0  # keep the measured foreground only
        # open3d's stubs accept a Buffer; numpy arrays are buffers, which the stubs do not say
        color = o3d.geometry.Image(np.ascontiguousarray((rgb.numpy() * 255).round().astype(np.uint8)))  # type: ignore[call-overload]
        depth_image = o3d.geometry.Image(np.ascontiguousarray(depth))  # type: ignore[call-overload]
        rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
            color, depth_image, depth_scale=1.0,
            depth_trunc=float(scene.far) * 2, convert_rgb_to_intensity=False)
        K = np.asarray(scene.Ks[frame])
        intr = o3d.camera.PinholeCameraIntrinsic(scene.width, scene.height, K[0, 0], K[1, 1], K[0, 2], K[1, 2])
        volume.integrate(rgbd, intr, np.linalg.inv(np.asarray(scene.T_world_cam[frame])))
    mesh = volume.extract_triangle_mesh()
    mesh.compute_vertex_normals()
    return mesh


def export_nerf(run: Run, format: str, out: Path | None = None, *, resolution: int = 128,
                density_threshold: float = 10.0) -> Path:
    """Write a NeRF run as a point cloud or mesh .ply; returns the path written."""
    from reconstruct.nerf.method import field_from_state

    if format not in ("pointcloud", "mesh"):
        raise ReconError(run.root, f"NeRF runs export as pointcloud or mesh, not {format}")
    out = Path(out) if out is not None else run.export_dir / f"{format}.ply"
    if out.suffix.lower() != ".ply":
        raise ReconError(out, "NeRF exports are .ply files")
    state = run.checkpoint()["state"]
    field, grid = field_from_state(state, torch.device("cpu"), implementation=run.nerf_config.nerf.encoding)
    if format == "pointcloud":
        pts, cols = density_points(field, grid, resolution=resolution, density_threshold=density_threshold)
        if len(pts) == 0:
            raise ReconError(run.root, f"no density above {density_threshold} anywhere: nothing to export")
        return write_points_ply(out, pts, cols)
    mesh = tsdf_mesh(field, grid, run.scene(), n_samples=int(state["n_samples"]))
    if len(mesh.triangles) == 0:
        raise ReconError(run.root, "TSDF fusion found no surface: nothing to export")
    import open3d as o3d

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mesh.ply"
        if not o3d.io.write_triangle_mesh(path, mesh):
            raise ReconError(out, "open3d could not write the mesh")
        atomic_write_bytes(out, path.read_bytes())
    return out
