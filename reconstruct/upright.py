"""Gravity up from the training cameras, and the rotation that puts a scene upright.

    est = scene_up(scene)                                   # UpEstimate, up in the world frame
    R_ply_world = align_up(est.up_world, target=PLY_UP)     # world -> a frame with up = -y

How up is found (photos are taken with the camera held level, rolled a little at most):

1. Horizon constraint. A level camera's x axis (OpenCV "right") is horizontal, so up is the
   direction most perpendicular to all the right vectors: the smallest eigenvector of
   M = mean_i(w_i r_i r_i^T). For cameras spread around an object this is exact whatever their
   pitch, where the cameras' mean up is not: the demo's 8 views look down at the object and their
   mean up is 21 degrees off +z, the horizon constraint gives +z to 1e-6 degrees.
2. Forward-facing captures. When the right vectors are nearly parallel (LLFF: all cameras face
   one way; M's second eigenvalue below ``spread``) they leave a whole plane (up and forward)
   undetermined, and the few degrees of yaw they do show are as much hand roll as heading;
   up is then the cameras' common up: m, the component-wise median of the camera up vectors
   (robust to a minority of odd cameras), with its component along the mean right removed.
3. Outliers. A camera held rolled (a portrait shot, a tilted hand) breaks the horizon
   constraint; iteratively reweighted least squares with Tukey's biweight on the angle between
   up and each right vector's perpendicular plane (cut-off ``outlier_deg``) drops them.
4. Snap. Scenes authored in a modelling tool (Blender: +z) or aligned when captured have an
   exact up axis; an estimate within ``snap_deg`` of one of the dataset's own axes (the original
   frame's, as mapped into the normalized world) is taken to mean that axis. Five degrees is
   above what the estimate wanders on few views (fern's 3 views: 1.3 degrees from the dataset's
   axis) and far below the tilt of a frame that is not gravity aligned by construction.

The sign is the one the cameras agree with (up . m > 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PLY_UP = np.array([0.0, -1.0, 0.0])
"""Up in the frame every splat writer takes (the 3DGS .ply frame, OpenCV-like, y down)."""


@dataclass(frozen=True)
class UpConfig:
    """How :func:`estimate_up` weighs the cameras."""

    spread: float = math.sin(math.radians(10.0)) ** 2
    """Second eigenvalue of the right vectors' scatter M above which they are taken to span the
    horizontal plane (sin^2 of their spread: right vectors within about 10 degrees of one another
    are "parallel", as in forward-facing captures, and up comes from the cameras' median up)."""
    outlier_deg: float = 25.0
    """Tukey cut-off: a camera whose right vector leaves the horizontal plane by more than this
    many degrees gets weight 0."""
    iterations: int = 10
    """Reweighting rounds."""
    snap_deg: float = 5.0
    """Snap to a dataset axis within this many degrees (0 = never snap)."""


@dataclass(frozen=True)
class UpEstimate:
    """The gravity up of a camera rig, with what it was made of."""

    up_world: np.ndarray
    """[3] unit up vector in the world frame (after snapping)."""
    unsnapped_world: np.ndarray
    """[3] unit up before snapping."""
    snapped: bool
    """Whether ``up_world`` is a dataset axis."""
    median_up_world: np.ndarray
    """[3] unit component-wise median of the cameras' up vectors (the prior)."""
    n_cameras: int
    """Cameras used."""
    n_outliers: int
    """Cameras whose final weight is 0."""

    @property
    def median_off_deg(self) -> float:
        """Angle between the estimate and the cameras' median up, degrees."""
        return angle_deg(self.up_world, self.median_up_world)


def angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle between two vectors in degrees."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    c = float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-300))
    return math.degrees(math.acos(min(1.0, max(-1.0, c))))


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-12 else v


def estimate_up(T_world_cam: np.ndarray, *, axes_world: np.ndarray | None = None,
                config: UpConfig = UpConfig()) -> UpEstimate:
    """Gravity up of cameras ``T_world_cam`` [F, 4, 4] (OpenCV camera-to-world).

    ``axes_world`` [A, 3]: candidate axes to snap to (both signs are tried); None = the world's
    own x, y, z. Needs at least one camera."""
    T = np.asarray(T_world_cam, np.float64)
    assert T.ndim == 3 and T.shape[1:] == (4, 4) and len(T) >= 1, T.shape
    rights = np.array([_unit(r) for r in T[:, :3, 0]])  # [F, 3]
    ups = np.array([_unit(u) for u in -T[:, :3, 1]])  # [F, 3] OpenCV y points down
    median = _unit(np.median(ups, axis=0))
    if np.linalg.norm(median) < 1e-9:  # cameras disagree completely: fall back to the mean
        median = _unit(ups.mean(axis=0)) if np.linalg.norm(ups.mean(axis=0)) > 1e-9 else ups[0]
    cut = math.sin(math.radians(config.outlier_deg))
    weights = np.ones(len(T))
    up = median
    for _ in range(max(1, config.iterations)):
        if weights.sum() <= 0:  # every camera rejected: keep the last estimate
            break
        M = (rights * weights[:, None]).T @ rights / weights.sum()  # [3, 3]
        vals, vecs = np.linalg.eigh(M)  # ascending
        if vals[1] >= config.spread:  # the rights span the horizontal plane: its normal is up
            new = vecs[:, 0]
        else:  # the rights are about parallel: the median up, made perpendicular to them
            new = _unit(median - np.dot(median, vecs[:, 2]) * vecs[:, 2])
        new = new * (1.0 if new @ median >= 0 else -1.0)
        residual = np.abs(rights @ new) / cut  # sin of each right vector's tilt, relative to the cut
        weights = np.where(residual < 1.0, (1.0 - residual ** 2) ** 2, 0.0)
        converged = np.dot(new, up) > 1 - 1e-14
        up = new
        if converged:
            break
    axes = np.eye(3) if axes_world is None else np.asarray(axes_world, np.float64).reshape(-1, 3)
    snapped, best = False, up
    if config.snap_deg > 0 and len(axes):
        cands = np.concatenate([axes, -axes]) / np.linalg.norm(np.concatenate([axes, -axes]), axis=1, keepdims=True)
        k = int(np.argmax(cands @ up))
        if angle_deg(cands[k], up) <= config.snap_deg:
            snapped, best = True, cands[k]
    return UpEstimate(up_world=best, unsnapped_world=up, snapped=snapped, median_up_world=median,
                      n_cameras=len(T), n_outliers=int((weights <= 0).sum()))


def dataset_axes_world(T_world_orig: np.ndarray) -> np.ndarray:
    """[3, 3] rows: the dataset's own x, y, z axes expressed in the normalized world frame."""
    R = np.asarray(T_world_orig, np.float64)[:3, :3]
    return (R / np.linalg.norm(R, axis=0, keepdims=True)).T


def scene_up(scene, *, config: UpConfig = UpConfig()) -> UpEstimate:
    """:func:`estimate_up` of a ``scenes.types.SceneData``'s training cameras (all frames when it
    has none), snapping to the dataset's axes."""
    ids = list(scene.train_ids) or list(range(scene.n_frames))
    return estimate_up(scene.T_world_cam[ids], axes_world=dataset_axes_world(scene.T_world_orig), config=config)


def align_up(up_world: np.ndarray, *, target: np.ndarray = PLY_UP) -> np.ndarray:
    """[3, 3] R_new_world: the smallest rotation taking ``up_world`` onto ``target`` (both [3]);
    turning about the horizontal axis only, so headings change as little as possible."""
    a, b = _unit(np.asarray(up_world, np.float64)), _unit(np.asarray(target, np.float64))
    v, c = np.cross(a, b), float(np.dot(a, b))
    if c < -1 + 1e-12:  # opposite: half turn about any axis perpendicular to a
        p = np.cross(a, [1.0, 0.0, 0.0])
        if np.linalg.norm(p) < 1e-6:
            p = np.cross(a, [0.0, 1.0, 0.0])
        p = _unit(p)
        return 2.0 * np.outer(p, p) - np.eye(3)
    vx = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)
