"""Teacher views: the finished run's own renders at cameras between its training cameras.

A compression phase fine-tunes on the training photos alone, so it keeps what those few views see
and is free to drop or distort whatever only a novel view sees: on a sparse-view run that is most of
the scene. Pseudo views rendered by the uncompressed splats (LightGaussian distils its SH this way)
add those viewpoints with the teacher's image as the target, so the fine-tuning keeps the run's
novel-view behaviour instead of only its training-view fit.

Cameras: for every training camera and its nearest training neighbour (each pair once), poses at
fixed fractions of the way from one to the other (reconstruct.priors.pseudo.interpolate_pose), the ends
extended a quarter of the gap beyond both cameras (the views just outside the
baseline, where sparse-view test cameras often sit), with the first camera's intrinsics.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from reconstruct.priors.pseudo import interpolate_pose
from scenes.types import SceneData


def teacher_fractions(views_per_pair: int) -> np.ndarray:
    """[views_per_pair] fractions of the way between two cameras, evenly spread over [-0.25, 1.25]
    (one view: the midpoint)."""
    assert views_per_pair >= 1, views_per_pair
    return np.array([0.5]) if views_per_pair == 1 else np.linspace(-0.25, 1.25, views_per_pair)


def neighbour_pairs(T_world_cam: np.ndarray, ids: list[int]) -> list[tuple[int, int]]:
    """Each training camera with its nearest training camera (by position), each unordered pair once."""
    assert T_world_cam.ndim == 3 and T_world_cam.shape[1:] == (4, 4), T_world_cam.shape
    pairs: list[tuple[int, int]] = []
    for a in ids:
        others = [j for j in ids if j != a]
        if not others:
            continue
        b = min(others, key=lambda j: float(np.linalg.norm(T_world_cam[a][:3, 3] - T_world_cam[j][:3, 3])))
        pair = (min(a, b), max(a, b))
        if pair not in pairs:
            pairs.append(pair)
    return pairs


def teacher_poses(scene: SceneData, views_per_pair: int) -> tuple[np.ndarray, list[int]]:
    """[P, 4, 4] camera-to-world of the teacher views and, per view, the frame whose intrinsics it uses."""
    poses, frames = [], []
    for a, b in neighbour_pairs(scene.T_world_cam, list(scene.train_ids)):
        for t in teacher_fractions(views_per_pair):
            poses.append(interpolate_pose(scene.T_world_cam[a], scene.T_world_cam[b], float(t)))
            frames.append(a)
    return np.asarray(poses, dtype=np.float64).reshape(-1, 4, 4), frames


def with_teacher_views(scene: SceneData, splats: Any, *, views_per_pair: int, device: Any = None) -> SceneData:
    """``scene`` with teacher frames appended after its own and added to its training views.

    The new frames' images are ``splats`` rendered at ``teacher_poses``; test views and every
    existing frame are unchanged. ``views_per_pair`` 0 returns ``scene`` itself.
    """
    if views_per_pair <= 0 or len(scene.train_ids) < 2:
        return scene
    from reconstruct.evaluate import render_splats

    poses, frames = teacher_poses(scene, views_per_pair)
    images = [render_splats(splats, scene, f, device=device, T_world_cam=T)[0].numpy().astype(np.float32)
              for T, f in zip(poses, frames)]
    n = scene.n_frames
    own_loader, own_masks = scene.loader, scene.mask_loader

    def loader(i: int) -> np.ndarray:
        if i >= n:
            return images[i - n]
        assert own_loader is not None
        return own_loader(i)

    def mask_loader(i: int) -> np.ndarray:
        if i >= n:
            return np.ones((scene.height, scene.width), dtype=bool)
        assert own_masks is not None
        return own_masks(i)

    extra = tuple(range(n, n + len(images)))
    return dataclasses.replace(
        scene,
        image_paths=tuple(scene.image_paths) + (Path(),) * len(images),  # rendered, not read from a file
        Ks=np.concatenate([scene.Ks, scene.Ks[frames]]),
        T_world_cam=np.concatenate([scene.T_world_cam, poses]),
        train_ids=tuple(scene.train_ids) + extra,
        distortion=None if scene.distortion is None else np.concatenate([scene.distortion, scene.distortion[frames]]),
        loader=loader,
        mask_loader=None if own_masks is None else mask_loader,
        _cache=dict(scene._cache),  # its own cache: the frame numbers mean more frames now
    )
