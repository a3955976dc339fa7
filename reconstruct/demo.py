"""The bundled demo scene: a procedural object rendered by the project's own rasterizer.

A small toy (a striped sphere on a checkered disc with three colored posts), as 3D Gaussians,
rendered from cameras on an upper hemisphere into a Blender-layout folder (RGBA PNGs,
transforms_train.json / transforms_test.json, OpenGL camera convention) so it reads like
NeRF-synthetic. No third-party data, so it can ship in data/.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch


def demo_gaussians(seed: int = 0) -> dict[str, torch.Tensor]:
    """Activated Gaussians of the toy: means [N,3], quats [N,4], scales [N,3], opacities [N], rgb [N,3]."""
    rng = np.random.default_rng(seed)
    parts = []
    # striped sphere, radius 0.5, centered at z = 0.5
    n = 3000
    v = rng.normal(size=(n, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    stripes = (np.floor((v[:, 2] + 1) * 4) % 2)[:, None]
    parts.append((v * 0.5 + [0, 0, 0.5], stripes * [0.9, 0.2, 0.1] + (1 - stripes) * [0.95, 0.85, 0.2], 0.035))
    # checkered disc of radius 1.2 at z = 0
    n = 3000
    r, a = 1.2 * np.sqrt(rng.uniform(size=n)), rng.uniform(0, 2 * np.pi, n)
    xy = np.stack([r * np.cos(a), r * np.sin(a)], 1)
    check = ((np.floor(xy[:, 0] * 3) + np.floor(xy[:, 1] * 3)) % 2)[:, None]
    parts.append((np.concatenate([xy, np.zeros((n, 1))], 1), check * [0.15, 0.3, 0.7] + (1 - check) * [0.9, 0.9, 0.9], 0.04))
    # three posts
    for k, color in enumerate([[0.1, 0.7, 0.2], [0.6, 0.2, 0.8], [0.1, 0.7, 0.8]]):
        ang = 2 * np.pi * k / 3 + 0.4
        n = 400
        z = rng.uniform(0, 0.9, n)
        ring = rng.uniform(0, 2 * np.pi, n)
        p = np.stack([0.85 * np.cos(ang) + 0.08 * np.cos(ring), 0.85 * np.sin(ang) + 0.08 * np.sin(ring), z], 1)
        parts.append((p, np.tile(color, (n, 1)), 0.03))
    means = np.concatenate([p for p, _, _ in parts])
    rgb = np.concatenate([c for _, c, _ in parts])
    scales = np.concatenate([np.full((len(p), 3), s) for p, _, s in parts])
    t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    return {
        "means": t(means), "quats": t(np.tile([1.0, 0, 0, 0], (len(means), 1))), "scales": t(scales),
        "opacities": t(np.full(len(means), 0.9)), "rgb": t(rgb),
    }


def _T_world_cam_looking_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[4,4] OpenCV camera-to-world at ``eye`` looking at ``target`` with world +z up."""
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    T = np.eye(4)
    T[:3, :3] = np.stack([right, down, forward], 1)
    T[:3, 3] = eye
    return T


def write_demo_scene(out_dir: Path, *, n_train: int = 24, n_test: int = 8, size: int = 100, seed: int = 0) -> Path:
    """Render the toy into ``out_dir`` in Blender layout; returns ``out_dir``."""
    from PIL import Image

    from reconstruct.raster import rasterize

    out_dir = Path(out_dir)
    g = demo_gaussians(seed)
    fov = math.radians(40.0)
    focal = 0.5 * size / math.tan(0.5 * fov)
    K = torch.tensor([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1]], dtype=torch.float32)
    rng = np.random.default_rng(seed + 1)
    splits = {"train": n_train, "test": n_test}
    for split, count in splits.items():
        (out_dir / split).mkdir(parents=True, exist_ok=True)
        frames = []
        for k in range(count):
            # golden-angle spiral over the upper hemisphere; test views offset so they are novel
            phase = 0.5 if split == "test" else 0.0
            azim = 2.39996 * (k + phase) + rng.uniform(-0.05, 0.05)
            elev = math.radians(15 + 50 * ((k + phase) / max(count, 1)))
            radius = 4.0
            eye = radius * np.array([math.cos(elev) * math.cos(azim), math.cos(elev) * math.sin(azim), math.sin(elev)])
            T_world_cam = _T_world_cam_looking_at(eye + [0, 0, 0.3], np.array([0.0, 0.0, 0.3]))
            viewmat = torch.as_tensor(np.linalg.inv(T_world_cam), dtype=torch.float32)[None]
            with torch.no_grad():
                img, alpha, _ = rasterize(g["means"], g["quats"], g["scales"], g["opacities"], g["rgb"],
                                          viewmat, K[None], size, size)
            # straight (un-premultiplied) color in the PNG, as Blender writes it
            a = alpha[0].clamp(1e-6, 1)
            rgba = torch.cat([(img[0] / a).clamp(0, 1), alpha[0]], -1).numpy()
            name = f"{split}/r_{k}"
            Image.fromarray((rgba * 255).round().astype(np.uint8), "RGBA").save(out_dir / f"{name}.png")
            T_gl = T_world_cam.copy()
            T_gl[:3, 1:3] *= -1  # OpenCV -> OpenGL camera axes
            frames.append({"file_path": f"./{name}", "transform_matrix": T_gl.tolist()})
        meta = {"camera_angle_x": fov, "frames": frames}
        (out_dir / f"transforms_{split}.json").write_text(json.dumps(meta, indent=1))
    (out_dir / "README.md").write_text(
        "# demo scene\n\nProcedural toy (striped sphere, checkered disc, three posts) rendered by recon's own\n"
        "rasterizer; generated by `python -m reconstruct.demo data/demo`. No third-party content.\n"
        f"{n_train} train + {n_test} test views, {size}x{size}, Blender layout, white background when composited.\n"
    )
    return out_dir


if __name__ == "__main__":
    import sys

    write_demo_scene(Path(sys.argv[1] if len(sys.argv) > 1 else "data/demo"))
