"""Where a run's cameras come from (``--poses``): the dataset, or pose estimation from the images.

    scene = training_scene(cfg, workdir=run.root)        # estimates into RUN/ when it must
    truth = dataset_scene(cfg)                            # the posed dataset, for scoring

- dataset / refine: the scene as its reader returns it (refine adds camera refinement while training).
- estimate on a posed dataset: the dataset's poses are ignored; ``scenes.sfm.estimate_poses`` runs on
  the *training* images only (their paths, in place: nothing is copied into the dataset) and writes
  RUN/sfm/, RUN/sparse_pc.ply and RUN/poses.json. The training scene is poses.json read back (every
  registered training image trains; it has no test views: ``reconstruct.posefree`` scores them).
- a folder of photos (``--poses`` auto = estimate): every photo is posed; all of them train, or
  ``--holdout K`` keeps K evenly spaced photos out to score them.

An existing RUN/poses.json written for the same images is reused (a rerun or ``--resume`` runs no SfM).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from reconstruct.config import TrainConfig
from scenes.errors import ReconError
from scenes.types import SceneData

log = logging.getLogger(__name__)


def is_photo_folder(scene: Path | None) -> bool:
    from scenes.load import detect_format

    return scene is not None and detect_format(scene) == "photos"


def count_photos(scene: Path) -> int:
    """How many photos a photo folder holds (each decoded once: a bad one is refused here)."""
    from scenes.photos import list_photos

    return len(list_photos(scene))


def dataset_scene(cfg: TrainConfig) -> SceneData:
    """The posed dataset the config names, with its split and resolution."""
    import scenes

    assert cfg.scene is not None, "a resolved config names its scene"
    return scenes.load_scene(cfg.scene, views=cfg.views, downscale=cfg.data.downscale, resolution=cfg.data.resolution,
                             test_every=cfg.data.test_every)


def images_to_pose(cfg: TrainConfig) -> list[Path]:
    """The images pose estimation sees: every photo of a folder, or a dataset's training images."""
    from scenes.photos import list_photos

    assert cfg.scene is not None, "a resolved config names its scene"
    if is_photo_folder(cfg.scene):
        return [p.path for p in list_photos(cfg.scene)]
    ds = dataset_scene(cfg)
    return [Path(ds.image_paths[i]) for i in ds.train_ids]


def estimated(cfg: TrainConfig) -> bool:
    """True when the run trains on estimated poses (a photo folder, or --poses estimate)."""
    return cfg.poses == "estimate"


def training_scene(cfg: TrainConfig, *, workdir: Path, estimate: bool = True) -> SceneData:
    """The scene ``cfg`` trains on. With estimated poses, ``estimate=True`` runs (or reuses) SfM into
    ``workdir``; False only reads ``workdir``'s poses.json (evaluation, resume)."""
    from scenes.sfm import POSES_FILE, estimate_poses, load_estimated_scene

    assert cfg.scene is not None, "a resolved config names its scene"
    photos = is_photo_folder(cfg.scene)
    if photos and cfg.poses in ("dataset", "refine"):
        raise ReconError(cfg.scene, f"holds photos without camera poses; --poses {cfg.poses} needs a posed dataset "
                                    "(leave --poses out, or --poses estimate)")
    if not photos and cfg.holdout:
        raise ReconError(cfg.scene, "--holdout is for photo folders; a dataset has its own test views")
    if not estimated(cfg):
        return dataset_scene(cfg)
    poses_json = Path(workdir) / POSES_FILE
    if estimate:
        from scenes.progress import progress

        images = images_to_pose(cfg)
        with progress(f"poses of {len(images)} images", 1, transient=True) as bar:
            def say(msg: str) -> None:  # each try is a debug line; the bar shows the latest
                log.debug("poses: %s", msg)
                bar.update(0, msg)

            est = estimate_poses(images, workdir, progress=say)
        if est.reused:
            log.info("poses: reusing %s (%d of %d registered)", poses_json, est.registered, est.total)
        else:
            log.info("poses: %d of %d images registered (%s, %s mapper, %.2f px, %d points, %.1f s)", est.registered,
                     est.total, est.rung, est.mapper, est.mean_reprojection_error, est.n_points, est.seconds)
    scene = load_estimated_scene(poses_json, downscale=cfg.data.downscale, resolution=cfg.data.resolution)
    if photos:
        return split_photos(scene, holdout=cfg.holdout, views=cfg.views, path=poses_json)
    return with_background(scene, dataset_scene(cfg).background)


def with_background(scene: SceneData, background: tuple[float, float, float]) -> SceneData:
    """``scene`` composited over ``background`` (a Blender dataset's white, for its estimated twin)."""
    import copy

    if tuple(scene.background) == tuple(background):
        return scene
    loader = copy.copy(scene.loader)
    if loader is not None and hasattr(loader, "background"):
        loader.background = background
    return dataclasses.replace(scene, background=background, loader=loader, _cache={})


def split_photos(scene: SceneData, *, holdout: int, views: int | None, path: Path) -> SceneData:
    """``holdout`` evenly spaced photos become test views (the first and last always train); ``views``
    evenly spaced ones of the rest train (None = all of them)."""
    n = scene.n_frames
    if holdout < 0 or holdout > n - 2:
        raise ReconError(path, f"--holdout {holdout} leaves fewer than 2 of the {n} registered photos to train on")
    test = sorted({int(i) for i in np.round(np.linspace(0, n - 1, holdout + 2))[1:-1]}) if holdout else []
    rest = [i for i in range(n) if i not in test]
    if views is not None and not 1 <= views <= len(rest):
        raise ReconError(path, f"--views {views} is not between 1 and the {len(rest)} registered training photos")
    train = rest if views is None else [rest[int(k)] for k in sorted({int(k) for k in np.round(np.linspace(0, len(rest) - 1, views))})]
    return dataclasses.replace(scene, train_ids=tuple(train), test_ids=tuple(test))


def match_frames(est: SceneData, truth: SceneData) -> list[int]:
    """For each frame of the estimated scene, the dataset frame showing the same image file."""
    index = {Path(p).resolve(): i for i, p in enumerate(truth.image_paths)}
    out = []
    for p in est.image_paths:
        key = Path(p).resolve()
        if key not in index:
            raise ReconError(p, "is not an image of the dataset the run was estimated from")
        out.append(index[key])
    return out


__all__ = ["count_photos", "dataset_scene", "estimated", "images_to_pose", "is_photo_folder", "match_frames",
           "split_photos", "training_scene"]
