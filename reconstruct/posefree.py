"""Scoring runs whose cameras were estimated, and a turntable to look at a photo-folder run.

On a posed dataset (``--poses estimate``), InstantSplat's protocol:

1. align the run's training cameras (after refinement) to the dataset's with a similarity
   (Umeyama on the camera centres and on the tips of each camera's three axes drawn one camera
   extent long, so orientations count too), and report the training cameras' rotation errors
   (degrees) and position errors (fraction of the extent = 1.1 x the largest distance of a dataset
   training camera from their centroid, the trainer's scene scale) after it, plus the gauge-free
   relative rotation error of every camera pair. Centres alone leave the rotation about the line
   of a few cameras poorly determined: on fern's 3 SfM cameras they gave 1.9 degrees of rotation
   error where the axis tips give 0.8 and the pairs' relative rotations differ by 0.2-0.55;
2. map each test camera into the run's frame through that similarity, with the run's (estimated)
   intrinsics, refine it photometrically with the splats frozen (``cfg.cameras.test_steps`` steps),
   then score it against the dataset's image.

A folder of photos has no test views: training photos are scored at their refined cameras,
held-out photos (``--holdout``) after test-time alignment of their SfM cameras, and
RUN/renders/orbit.gif shows a turntable around the recovered cameras.
"""

from __future__ import annotations

import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from reconstruct import gaussians as G
from reconstruct.run import Run
from scenes.fileio import atomic_write_bytes
from scenes.geometry import look_at, transform_poses, umeyama
from scenes.types import SceneData

log = logging.getLogger(__name__)

ORBIT_FRAMES = 36


@dataclass(frozen=True)
class Similarity:
    """``x_gt = scale * R @ x_est + t``: the run's world to the dataset's."""

    scale: float
    R: np.ndarray  # [3, 3]
    t: np.ndarray  # [3]

    @property
    def T_gt_est(self) -> np.ndarray:
        """[4, 4] matrix of the similarity."""
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = self.scale * self.R, self.t
        return T

    def cameras_to_gt(self, T_est_cam: np.ndarray) -> np.ndarray:
        """[F, 4, 4] camera-to-world in the run's world -> in the dataset's."""
        return transform_poses(self.T_gt_est, self.scale, T_est_cam)

    def cameras_to_est(self, T_gt_cam: np.ndarray) -> np.ndarray:
        """[F, 4, 4] camera-to-world in the dataset's world -> in the run's."""
        return transform_poses(np.linalg.inv(self.T_gt_est), 1.0 / self.scale, T_gt_cam)


def align_cameras(T_est_cam: np.ndarray, T_gt_cam: np.ndarray) -> Similarity:
    """The similarity taking [V, 4, 4] estimated cameras onto [V, 4, 4] dataset cameras (Umeyama)."""
    src, dst = T_est_cam[:, :3, 3], T_gt_cam[:, :3, 3]
    e_src, e_dst = camera_extent(T_est_cam), camera_extent(T_gt_cam)  # axis tips scale with each world
    src = np.concatenate([src] + [src + e_src * T_est_cam[:, :3, k] for k in range(3)])
    dst = np.concatenate([dst] + [dst + e_dst * T_gt_cam[:, :3, k] for k in range(3)])
    scale, R, t = umeyama(src, dst)
    return Similarity(scale, R, t)


def camera_extent(T_world_cam: np.ndarray) -> float:
    """1.1 x the largest distance of a camera centre from their centroid (``gaussians.camera_extent``)."""
    c = T_world_cam[:, :3, 3]
    return float(np.linalg.norm(c - c.mean(0), axis=1).max() * 1.1) or 1.0


def pose_errors(T_est_cam: np.ndarray, T_gt_cam: np.ndarray) -> dict:
    """Rotation (degrees) and position (fraction of the dataset cameras' extent) errors per camera
    after the similarity alignment, with their means and maxima."""
    sim = align_cameras(T_est_cam, T_gt_cam)
    aligned = sim.cameras_to_gt(T_est_cam)
    cos = (np.einsum("fji,fjk->fik", aligned[:, :3, :3], T_gt_cam[:, :3, :3]).trace(axis1=1, axis2=2) - 1) / 2
    rot = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    pos = np.linalg.norm(aligned[:, :3, 3] - T_gt_cam[:, :3, 3], axis=1) / camera_extent(T_gt_cam)
    pairs = [(i, j) for i in range(len(T_est_cam)) for j in range(i + 1, len(T_est_cam))]
    rel = [_angle_deg((T_est_cam[i, :3, :3].T @ T_est_cam[j, :3, :3]).T @ (T_gt_cam[i, :3, :3].T @ T_gt_cam[j, :3, :3]))
           for i, j in pairs]
    return {"rotation_error_deg": float(rot.mean()), "rotation_error_deg_max": float(rot.max()),
            "relative_rotation_error_deg": float(np.mean(rel)) if rel else None,
            "position_error": float(pos.mean()), "position_error_max": float(pos.max()),
            "per_camera_rotation_deg": rot.tolist(), "per_camera_position": pos.tolist(),
            "alignment_scale": sim.scale}


def _angle_deg(R: np.ndarray) -> float:
    """Angle of a [3, 3] rotation in degrees."""
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0))))


def _renderer(gaussians: G.Activated, *, K: torch.Tensor, width: int, height: int, sh_degree: int,
              background: torch.Tensor):
    """T_world_cam [1, 4, 4] -> rgb [H, W, 3] (differentiable w.r.t. the camera)."""

    def render(T_world_cam: torch.Tensor) -> torch.Tensor:
        out, _, _ = G.render(gaussians, T_world_cam, K[None], width, height, sh_degree=sh_degree,
                             background=background, render_mode="RGB")
        return out[0, ..., :3]

    return render


def _mean_K(scene: SceneData, ids, width: int, height: int) -> np.ndarray:
    """[3, 3] mean intrinsics of ``scene``'s frames ``ids`` at (width, height)."""
    K = np.asarray(scene.Ks)[list(ids)].mean(0)
    K = K.copy()
    K[0] *= width / scene.width
    K[1] *= height / scene.height
    return K


def refine_test_cameras(gaussians: G.Activated, T_init: np.ndarray, targets: list[np.ndarray], *, K: np.ndarray,
                        width: int, height: int, sh_degree: int, background, steps: int, lr: float,
                        scene_scale: float) -> np.ndarray:
    """[T, 4, 4] test cameras after test-time photometric alignment (splats frozen)."""
    from reconstruct.cameras import refine_camera

    device = gaussians.means.device
    render = _renderer(gaussians, K=torch.as_tensor(K, dtype=torch.float32, device=device), width=width,
                       height=height, sh_degree=sh_degree,
                       background=torch.as_tensor(background, dtype=torch.float32, device=device))
    out = []
    for T, target in zip(T_init, targets):
        T0 = torch.as_tensor(T, dtype=torch.float32, device=device)[None]
        if steps > 0:
            T0, _ = refine_camera(render, T0, torch.as_tensor(target, device=device), steps=steps, lr=lr,
                                  scene_scale=scene_scale)
        out.append(T0[0].detach().cpu().numpy().astype(np.float64))
    return np.stack(out) if out else np.zeros((0, 4, 4))


def _sfm_record(run: Run) -> dict:
    try:
        return dict(json.loads(run.poses_path.read_text())["recon_sfm"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def evaluate_estimated(run: Run, gaussians: G.Activated, scene: SceneData, T_train: np.ndarray, *,
                       sh_degree: int, out_dir: Path | None = None) -> dict:
    """Scores of a run trained on estimated poses (see the module docstring). ``scene``: the run's
    training scene (poses.json read back); ``T_train`` [V, 4, 4]: its training cameras after
    refinement, in ``scene.train_ids`` order; renders go to ``out_dir`` (default the run folder)."""
    from reconstruct.evaluate import evaluate_views, render_splats
    from reconstruct.poses import match_frames

    cfg = run.splat_config
    out = run.root if out_dir is None else Path(out_dir)
    sfm = _sfm_record(run)
    truth = run.dataset_scene()
    train_ids = list(scene.train_ids)
    cams = dict(zip(train_ids, T_train))
    base = {"poses": "estimate", "registered": sfm.get("registered", scene.n_frames), "n_images": sfm.get("total"),
            "sfm_seconds": sfm.get("seconds"), "sfm_reprojection_px": sfm.get("mean_reprojection_error_px")}
    scale = camera_extent(np.asarray(T_train))

    def render_at(T_by_frame: dict, K=None):
        return lambda frame: render_splats(gaussians, scene if truth is None else truth, frame, sh_degree=sh_degree,
                                           T_world_cam=T_by_frame[frame], K=K)

    with torch.no_grad():
        train = evaluate_views(lambda f: render_splats(gaussians, scene, f, sh_degree=sh_degree, T_world_cam=cams[f]),
                               scene, ids=train_ids, out_dir=out, prefix="train", grid=truth is None and not scene.test_ids,
                               with_lpips=False)
    base.update(train_psnr=train["psnr"], train_ssim=train["ssim"], n_train=len(train_ids))
    if truth is None:  # a folder of photos
        if scene.test_ids:
            test_ids = list(scene.test_ids)
            K = _mean_K(scene, train_ids, scene.width, scene.height)
            T_test = refine_test_cameras(gaussians, scene.T_world_cam[test_ids], [scene.image(i) for i in test_ids],
                                         K=K, width=scene.width, height=scene.height, sh_degree=sh_degree,
                                         background=scene.background, steps=cfg.cameras.test_steps,
                                         lr=cfg.cameras.test_lr, scene_scale=scale)
            with torch.no_grad():
                result = evaluate_views(render_at(dict(zip(test_ids, T_test)), K), scene, ids=test_ids, out_dir=out)
            result["scored_on"] = "held-out photos (test-time pose alignment)"
        else:
            result = {**train, "n_test": 0, "scored_on": "training photos"}
        result.update(base)
        write_orbit(run, gaussians, np.asarray(T_train), K=_mean_K(scene, train_ids, scene.width, scene.height),
                    width=scene.width, height=scene.height, sh_degree=sh_degree, background=scene.background)
        result["orbit"] = str(run.orbit_path)
        return result

    frames = match_frames(scene, truth)
    T_gt_train = np.asarray(truth.T_world_cam)[[frames[i] for i in train_ids]]
    errors = pose_errors(np.asarray(T_train), T_gt_train)
    sfm_only = pose_errors(np.asarray(scene.T_world_cam)[train_ids], T_gt_train)  # before camera refinement
    errors.update(sfm_rotation_error_deg=sfm_only["rotation_error_deg"], sfm_position_error=sfm_only["position_error"],
                  sfm_relative_rotation_error_deg=sfm_only["relative_rotation_error_deg"])
    sim = align_cameras(np.asarray(T_train), T_gt_train)
    test_ids = list(truth.test_ids)
    K = _mean_K(scene, train_ids, truth.width, truth.height)
    T_init = sim.cameras_to_est(np.asarray(truth.T_world_cam)[test_ids])
    with torch.no_grad():
        unrefined = evaluate_views(render_at(dict(zip(test_ids, T_init)), K), truth, ids=test_ids, with_lpips=False)
    T_test = refine_test_cameras(gaussians, T_init, [truth.image(i) for i in test_ids], K=K, width=truth.width,
                                 height=truth.height, sh_degree=sh_degree, background=truth.background,
                                 steps=cfg.cameras.test_steps, lr=cfg.cameras.test_lr, scene_scale=scale)
    with torch.no_grad():
        result = evaluate_views(render_at(dict(zip(test_ids, T_test)), K), truth, ids=test_ids, out_dir=out)
    result.update(base, n_views=len(truth.train_ids), psnr_unaligned=unrefined["psnr"],
                  test_refine_steps=cfg.cameras.test_steps, scored_on="dataset test views (aligned, test-time pose alignment)",
                  **errors)
    return result


def training_cameras_from_checkpoint(run: Run, scene: SceneData) -> np.ndarray:
    """[V, 4, 4] a finished run's training cameras after refinement (the checkpoint's corrections)."""
    from reconstruct.cameras import CameraRefinement

    T = np.asarray(scene.T_world_cam)[list(scene.train_ids)]
    state = run.checkpoint()["state"].get("cameras")
    if state is None:
        return T
    cfg = run.splat_config
    cams = CameraRefinement(len(T), cfg=cfg.cameras, scene_scale=G.camera_extent(scene), total_steps=cfg.iters,
                            device=torch.device("cpu"))
    cams.load_state_dict(state)
    return cams.corrected_all(torch.as_tensor(T, dtype=torch.float32)).numpy().astype(np.float64)


# ----------------------------------------------------------------------------- turntable
def orbit_cameras(T_world_cam: np.ndarray, n: int = ORBIT_FRAMES) -> np.ndarray:
    """[n, 4, 4] OpenCV cameras on a circle about the cameras' up axis (minus the mean image-down
    axis), looking at the point nearest every optical axis (the cameras' centroid when the axes do not
    meet in front of them); a full turn when the cameras surround it, else a sweep a little wider
    than theirs, back and forth."""
    centres = T_world_cam[:, :3, 3]  # [V, 3]
    fwd = T_world_cam[:, :3, 2]  # [V, 3]
    up = -T_world_cam[:, :3, 1].sum(0)
    up /= np.linalg.norm(up) or 1.0
    A = sum(np.eye(3) - np.outer(d, d) for d in fwd)
    b = sum((np.eye(3) - np.outer(d, d)) @ c for d, c in zip(fwd, centres))
    target = centres.mean(0)
    if np.linalg.cond(A) < 1e6:
        p = np.linalg.solve(A, b)
        if np.all(np.einsum("vi,vi->v", p - centres, fwd) > 0):
            target = p
    rel = centres - target
    height = float((rel @ up).mean())
    horiz = rel - np.outer(rel @ up, up)
    radius = float(np.linalg.norm(horiz, axis=1).mean())
    if radius < 1e-6:  # cameras above the target: circle at the cameras' distance
        radius = float(np.linalg.norm(rel, axis=1).mean()) or 1.0
        horiz = np.tile(np.cross(up, [1.0, 0.0, 0.0]) + np.cross(up, [0.0, 1.0, 0.0]), (len(rel), 1))
    e1 = horiz.mean(0)
    if np.linalg.norm(e1) < 1e-9:
        e1 = horiz[0]
    e1 = e1 / np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    az = np.arctan2(horiz @ e2, horiz @ e1)  # [V] azimuths about the mean direction
    spread = float(az.max() - az.min())
    if spread > math.pi:
        angles = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    else:
        amp = max(spread / 2 + math.radians(10), math.radians(15))
        angles = float(az.mean()) + amp * np.sin(np.linspace(0.0, 2 * math.pi, n, endpoint=False))
    out = []
    for a in angles:
        eye = target + radius * (math.cos(a) * e1 + math.sin(a) * e2) + height * up
        out.append(look_at(eye, target, up=up))
    return np.stack(out)


def write_orbit(run: Run, gaussians: G.Activated, T_train: np.ndarray, *, K: np.ndarray, width: int, height: int,
                sh_degree: int, background) -> None:
    """RUN/renders/orbit.gif: ORBIT_FRAMES renders around the recovered cameras (imageio, looping)."""
    import imageio.v3 as iio

    device = gaussians.means.device
    frames = []
    with torch.no_grad():
        for T in orbit_cameras(T_train):
            out, _, _ = G.render(gaussians, torch.as_tensor(T, dtype=torch.float32, device=device)[None],
                                 torch.as_tensor(K, dtype=torch.float32, device=device)[None], width, height,
                                 sh_degree=sh_degree, render_mode="RGB",
                                 background=torch.as_tensor(background, dtype=torch.float32, device=device))
            frames.append((out[0, ..., :3].clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8))
    buf = io.BytesIO()
    iio.imwrite(buf, np.stack(frames), extension=".gif", duration=80, loop=0)
    atomic_write_bytes(run.orbit_path, buf.getvalue())
    log.info("orbit: %s (%d frames)", run.orbit_path, len(frames))


__all__ = ["Similarity", "align_cameras", "evaluate_estimated", "orbit_cameras", "pose_errors",
           "refine_test_cameras", "training_cameras_from_checkpoint", "write_orbit"]
