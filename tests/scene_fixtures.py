"""Tiny scenes written by the tests themselves: Blender, LLFF, COLMAP (.txt / .bin), nerfstudio.

All writers take known OpenCV camera-to-world poses (``orbit_poses``) and write each format's own
convention, so a reader test can compare what it reads against what was written. Frame i's
image has red channel (i + 1) / 32 everywhere, green a horizontal ramp, blue a vertical ramp.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image


def orbit_poses(n: int, *, radius: float = 4.0, height: float = 1.0, center=(0.0, 0.0, 0.0), seed: int = 0) -> np.ndarray:
    """[n, 4, 4] OpenCV camera-to-world poses on a circle, all looking at ``center`` (+z up world)."""
    rng = np.random.default_rng(seed)
    center = np.asarray(center, dtype=np.float64)
    T = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        a = 2 * math.pi * i / n + 0.1 * rng.standard_normal()
        eye = center + np.array([radius * math.cos(a), radius * math.sin(a), height + 0.2 * rng.standard_normal()])
        fwd = center - eye
        fwd /= np.linalg.norm(fwd)
        right = np.cross(fwd, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        down = np.cross(fwd, right)
        T[i, :3, 0], T[i, :3, 1], T[i, :3, 2], T[i, :3, 3] = right, down, fwd, eye
    return T


def frame_image(i: int, w: int, h: int, *, alpha: bool = False) -> np.ndarray:
    """[h, w, 3 or 4] uint8 test image of frame i (alpha 128 in the left half when ``alpha``)."""
    img = np.zeros((h, w, 4 if alpha else 3), dtype=np.uint8)
    img[..., 0] = min(255, 8 * (i + 1))
    img[..., 1] = np.linspace(0, 255, w).round().astype(np.uint8)[None, :]
    img[..., 2] = np.linspace(0, 255, h).round().astype(np.uint8)[:, None]
    if alpha:
        img[..., 3] = 255
        img[:, : w // 2, 3] = 128
    return img


def save_png(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


def opencv_to_opengl(T: np.ndarray) -> np.ndarray:
    T = np.array(T, dtype=np.float64, copy=True)
    T[..., :3, 1:3] *= -1.0
    return T


def write_blender(root: Path, *, n_train: int = 5, n_test: int = 3, size: int = 8, angle_x: float = 0.8) -> dict:
    """NeRF-synthetic layout with RGBA PNGs. Returns {"poses": [F, 4, 4] OpenCV, "angle_x": ...}."""
    poses = orbit_poses(n_train + n_test)
    for name, ids in (("train", range(n_train)), ("test", range(n_train, n_train + n_test))):
        frames = []
        for j, i in enumerate(ids):
            save_png(root / name / f"r_{j}.png", frame_image(i, size, size, alpha=True))
            frames.append({"file_path": f"./{name}/r_{j}", "rotation": 0.1, "transform_matrix": opencv_to_opengl(poses[i]).tolist()})
        (root / f"transforms_{name}.json").write_text(json.dumps({"camera_angle_x": angle_x, "frames": frames}))
    return {"poses": poses, "angle_x": angle_x, "size": size}


def write_llff(
    root: Path, *, n: int = 10, full_size: tuple[int, int] = (32, 24), factors: tuple[int, ...] = (4,), focal: float = 30.0, points: bool = False
) -> dict:
    """LLFF layout: poses_bounds.npy at full size, images in images_N for each factor (1 = images/)."""
    poses = orbit_poses(n, center=(0.5, -0.3, 0.2))
    W, H = full_size
    rows = []
    for T in poses:
        m = np.zeros((3, 5))
        m[:, 0], m[:, 1], m[:, 2], m[:, 3] = T[:3, 1], T[:3, 0], -T[:3, 2], T[:3, 3]  # [down, right, back, center]
        m[:, 4] = (H, W, focal)
        rows.append(np.concatenate([m.reshape(-1), [2.5, 6.0]]))
    bounds = np.array([r[15:] for r in rows])
    bounds[0] = (2.0, 7.0)
    pb = np.stack(rows)
    pb[:, 15:] = bounds
    np.save(root / "poses_bounds.npy", pb)
    for f in factors:
        folder = root / ("images" if f == 1 else f"images_{f}")
        for i in range(n):
            save_png(folder / f"IMG_{i:04d}.png", frame_image(i, W // f, H // f))
    xyz = None
    if points:
        xyz = np.random.default_rng(1).normal(size=(50, 3)) * 0.5
        write_colmap_points_txt(root / "sparse" / "0" / "points3D.txt", xyz)
    return {"poses": poses, "bounds": bounds, "focal": focal, "full_size": full_size, "points": xyz}


def write_colmap_points_txt(path: Path, xyz: np.ndarray, rgb: np.ndarray | None = None, track: list[tuple[int, int]] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.full((len(xyz), 3), 200, dtype=np.uint8) if rgb is None else rgb
    track_s = " ".join(f"{a} {b}" for a, b in (track or []))
    lines = ["# 3D point list"]
    for k, (p, c) in enumerate(zip(xyz, rgb), 1):
        lines.append(f"{k} {float(p[0])!r} {float(p[1])!r} {float(p[2])!r} {int(c[0])} {int(c[1])} {int(c[2])} 0.5 {track_s}".rstrip())
    path.write_text("\n".join(lines) + "\n")


def _quat_wxyz(R: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(R).as_quat()
    return np.array([w, x, y, z])


def write_colmap(
    root: Path,
    *,
    n: int = 10,
    size: tuple[int, int] = (16, 12),
    model: str = "PINHOLE",
    params: tuple[float, ...] = (14.0, 15.0, 8.0, 6.0),
    binary: bool = False,
    factors: tuple[int, ...] = (1,),
    n_points: int = 40,
    shuffle_ids: bool = True,
) -> dict:
    """COLMAP layout: sparse/0 as .txt (or converted to .bin with pycolmap), images in images/."""
    poses = orbit_poses(n, center=(1.0, 2.0, -0.5), radius=3.0)
    W, H = size
    txt = root / "sparse" / "0"
    txt.mkdir(parents=True, exist_ok=True)
    (txt / "cameras.txt").write_text(f"# cameras\n1 {model} {W} {H} " + " ".join(repr(float(p)) for p in params) + "\n")
    ids = list(range(1, n + 1))
    if shuffle_ids:  # image ids out of name order: the reader must sort by name
        ids = ids[::-1]
    lines = ["# images"]
    for i, T in enumerate(poses):
        R_cw = T[:3, :3].T
        t_cw = -R_cw @ T[:3, 3]
        q = _quat_wxyz(R_cw)
        lines.append(f"{ids[i]} {' '.join(repr(float(v)) for v in q)} {' '.join(repr(float(v)) for v in t_cw)} 1 frame_{i:03d}.png")
        lines.append("")
    (txt / "images.txt").write_text("\n".join(lines) + "\n")
    xyz = np.random.default_rng(2).normal(size=(n_points, 3)) * 0.5 + np.array([1.0, 2.0, -0.5])
    rgb = np.random.default_rng(3).integers(0, 256, size=(n_points, 3)).astype(np.uint8)
    write_colmap_points_txt(txt / "points3D.txt", xyz, rgb)
    if binary:
        import pycolmap

        rec = pycolmap.Reconstruction(str(txt))
        for name in ("cameras.txt", "images.txt", "points3D.txt"):
            (txt / name).unlink()
        rec.write_binary(str(txt))
    for f in factors:
        folder = root / ("images" if f == 1 else f"images_{f}")
        for i in range(n):
            save_png(folder / f"frame_{i:03d}.png", frame_image(i, W // f, H // f))
    return {"poses": poses, "points": xyz, "colors": rgb, "size": size}


def write_nerfstudio(
    root: Path,
    *,
    n: int = 9,
    size: tuple[int, int] = (16, 12),
    per_frame: bool = False,
    camera_model: str | None = "OPENCV",
    distortion: dict | None = None,
    factors: tuple[int, ...] = (1,),
    ngp: bool = False,
    ply_points: np.ndarray | None = None,
    applied_transform: np.ndarray | None = None,
) -> dict:
    """nerfstudio transforms.json (or instant-ngp style with camera_angle_x and no w/h when ``ngp``)."""
    poses = orbit_poses(n, radius=2.0)
    W, H = size
    intr = {"fl_x": 13.0, "fl_y": 14.0, "cx": 7.5, "cy": 6.5, "w": W, "h": H}
    meta: dict = {}
    if ngp:
        meta.update(camera_angle_x=1.0, aabb_scale=16)
    elif not per_frame:
        meta.update(intr)
    if camera_model is not None:
        meta["camera_model"] = camera_model
    meta.update(distortion or {})
    frames = []
    order = list(range(n))[::-1]  # written out of name order: the reader sorts by file_path
    for i in order:
        fr = {"file_path": f"images/frame_{i:05d}.png", "transform_matrix": opencv_to_opengl(poses[i]).tolist()}
        if per_frame:
            fr.update(intr, fl_x=10.0 + i, fl_y=11.0 + i)
        frames.append(fr)
    meta["frames"] = frames
    if ply_points is not None:
        from plyfile import PlyData, PlyElement

        v = np.zeros(len(ply_points), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
        v["x"], v["y"], v["z"] = ply_points.T
        v["red"] = 10
        PlyData([PlyElement.describe(v, "vertex")]).write(str(root / "sparse_pc.ply"))
        meta["ply_file_path"] = "sparse_pc.ply"
    if applied_transform is not None:
        meta["applied_transform"] = np.asarray(applied_transform).tolist()
    (root / "transforms.json").write_text(json.dumps(meta))
    for f in factors:
        folder = root / ("images" if f == 1 else f"images_{f}")
        for i in range(n):
            save_png(folder / f"frame_{i:05d}.png", frame_image(i, W // f, H // f))
    return {"poses": poses, "intrinsics": intr}


def train_run(cfg, run_dir: Path, *, resume: bool = False) -> int:
    """Train (or resume) ``cfg`` into ``run_dir`` through the same path as `recon train`."""
    import dataclasses

    from recon.train import TrainRequest, train
    from reconstruct.config import resolve

    cfg = dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, out=Path(run_dir)), device="cpu")
    return train(TrainRequest(cfg=resolve(cfg, device_type="cpu"), resume=Path(run_dir) if resume else None,
                              overwrite=not resume))


def leaning_rig_scene():
    """A Blender-style (+z up) rig of four 100x100 cameras looking down at the origin from one side,
    whose mean up leans away from +z (no images: for viewer and orientation tests)."""
    from scenes.geometry import look_at
    from scenes.types import SceneData

    eyes = [4.0 * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
            for az, el in zip(np.radians([-90, -40, 10, 60]), np.radians([25, 40, 30, 35]))]
    T = np.array([look_at(e, [0.0, 0.0, 0.4]) for e in eyes])
    K = np.array([[110.0, 0, 50], [0, 110.0, 50], [0, 0, 1]])
    return SceneData(format="synthetic", root=Path("."), image_paths=(Path(""),) * 4, Ks=np.repeat(K[None], 4, 0),
                     T_world_cam=T, width=100, height=100, train_ids=(0, 1, 2, 3), test_ids=(), near=1.0, far=8.0)
