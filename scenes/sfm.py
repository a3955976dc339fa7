"""Camera poses from photos alone: COLMAP (pycolmap) SIFT, exhaustive matching, mapping.

One default run is not enough for a handful of photos (it registers 2 of 6 where a finer
resolution registers 6 of 6), so ``estimate_poses`` climbs a ladder of rungs: image size (max
side 1600, 1000, 640, capped at the photos' own size), SIFT feature count and
matcher / mapper thresholds. Each rung is mapped twice, incrementally and with GLOMAP
(``pycolmap.global_mapping``, where pycolmap has it); the reconstruction that registers more
photos, then has the lower mean reprojection error, wins. The ladder stops at the first rung
that registers every photo.

Cameras: one shared SIMPLE_RADIAL camera when the photos look like one camera (same size and
EXIF camera / focal), else one per photo; an EXIF focal length is the prior. Photos are
re-encoded (pixels as stored, EXIF orientation ignored, as the readers do) and resized into a
scratch folder; intrinsics are scaled back to each photo's own size.

Outputs in ``workdir``: ``sfm/`` (the COLMAP model, cameras and keypoints at the photos' size,
images named by the photos' file names when those are unique),
``sparse_pc.ply`` (the triangulated points) and ``poses.json`` (nerfstudio layout:
``file_path`` = absolute photo path, ``transform_matrix`` = OpenGL camera-to-world in
nerfstudio's world, i.e. COLMAP's world through ``applied_transform``; ``fl_x fl_y cx cy w h``,
``k1 k2 p1 p2``). poses.json is written last, by rename, and marks a finished run; a failed run
leaves the folder as it was.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from scenes.errors import ReconError
from scenes.fileio import atomic_write_text
from scenes.photos import Photo, one_camera, read_photo
from scenes.types import SceneData

if TYPE_CHECKING:
    import pycolmap as pycolmap_types

#: COLMAP world -> nerfstudio world, as ns-process-data writes it (x and y swapped, z negated).
APPLIED_TRANSFORM = np.array([[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0]])
MAX_SIDES = (1600, 1000, 640)
POSES_FILE = "poses.json"
MODEL_DIR = "sfm"
POINTS_FILE = "sparse_pc.ply"
#: A registered photo must see this many triangulated points, else it is dropped (GLOMAP can
#: place cameras on a handful of tracks: 6 of 6 "registered" on 4 points, measured on lego).
MIN_IMAGE_POINTS = 10


@dataclass(frozen=True)
class Rung:
    """One attempt's settings (COLMAP option names)."""

    name: str
    max_side: int
    """Longest image side the photos are resized to (never enlarged)."""
    max_num_features: int = 8192
    two_view_min_inliers: int = 15
    """TwoViewGeometryOptions.min_num_inliers: verified matches a pair needs."""
    min_num_matches: int = 15
    init_min_num_inliers: int = 100
    abs_pose_min_num_inliers: int = 30
    init_min_tri_angle: float = 16.0

    @property
    def features_key(self) -> tuple[int, int]:
        return self.max_side, self.max_num_features

    @property
    def matches_key(self) -> tuple[int, int, int]:
        return self.max_side, self.max_num_features, self.two_view_min_inliers


def default_ladder(photo_max_side: int) -> list[Rung]:
    """Default thresholds then relaxed ones at each size, largest first; then more features, most relaxed."""
    sides = list(dict.fromkeys(min(s, photo_max_side) for s in MAX_SIDES))
    rungs: list[Rung] = []
    for s in sides:
        rungs.append(Rung(f"{s}px default", s))
        rungs.append(
            Rung(f"{s}px relaxed", s, two_view_min_inliers=10, min_num_matches=10, init_min_num_inliers=50,
                 abs_pose_min_num_inliers=15, init_min_tri_angle=8.0)
        )
    rungs.append(
        Rung(f"{sides[0]}px 16k features, loosest", sides[0], max_num_features=16384, two_view_min_inliers=8,
             min_num_matches=8, init_min_num_inliers=25, abs_pose_min_num_inliers=10, init_min_tri_angle=4.0)
    )
    return rungs


@dataclass(frozen=True)
class Attempt:
    """How one (rung, mapper) try went."""

    rung: str
    mapper: str
    """"incremental" or "global"."""
    registered: int
    mean_reprojection_error: float
    """Pixels at the rung's image size; inf when nothing registered."""
    points: int
    seconds: float


@dataclass(frozen=True)
class PoseEstimate:
    """The winning reconstruction, as written to ``poses_json``."""

    poses_json: Path
    model_dir: Path
    image_paths: tuple[Path, ...]
    """Registered photos, in frame order of poses.json."""
    unregistered: tuple[Path, ...]
    Ks: np.ndarray
    """[R, 3, 3] intrinsics at each photo's own size."""
    T_world_cam: np.ndarray
    """[R, 4, 4] OpenCV camera-to-world in poses.json's world frame."""
    coeffs: np.ndarray
    """[R, 4] OpenCV k1 k2 p1 p2 (zeros when the lens was modelled without distortion)."""
    registered: int
    total: int
    mean_reprojection_error: float
    """Mean reprojection error in pixels of the rung's (resized) images: what rungs are ranked by."""
    mean_reprojection_error_photo: float
    """The same error in pixels of the photos at their own size."""
    n_points: int
    rung: str
    mapper: str
    seconds: float
    attempts: tuple[Attempt, ...] = field(default=())
    reused: bool = False
    """True when an existing poses.json for the same photos was returned without running SfM."""


# ----------------------------------------------------------------------------- running COLMAP


def _pycolmap():
    """The pycolmap module, imported after Pillow's C core.

    Importing pycolmap first makes Pillow's PNG encoder corrupt the heap on large images
    (measured: SIGABRT saving an 800x800 PNG, pycolmap 4.2.1 with Pillow 13); Pillow first is safe.
    """
    import PIL.Image  # noqa: F401  (load order matters, see above)
    import pycolmap

    return pycolmap


@contextlib.contextmanager
def _quiet_colmap() -> Iterator[None]:
    """COLMAP logs nothing below FATAL inside the block (its log level is process-wide; restored after)."""
    pycolmap = _pycolmap()
    old = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = 3  # failed tries log errors; the outcome is reported by the caller
    try:
        yield
    finally:
        pycolmap.logging.minloglevel = old


def _resized_size(photo: Photo, max_side: int) -> tuple[int, int]:
    r = min(1.0, max_side / max(photo.width, photo.height))
    return max(1, round(photo.width * r)), max(1, round(photo.height * r))


def _write_resized(photos: Sequence[Photo], names: Sequence[str], max_side: int, folder: Path) -> None:
    """Each photo as PNG ``folder/name``, pixels as stored (RGB), longest side at most ``max_side``."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for photo, name in zip(photos, names):
        with Image.open(photo.path) as src:
            im = src.convert("RGB")
            size = _resized_size(photo, max_side)
            if size != im.size:
                im = im.resize(size, Image.Resampling.LANCZOS)
            im.save(folder / name)


def _extract(db: Path, folder: Path, photos: Sequence[Photo], names: Sequence[str], rung: Rung, shared: bool) -> None:
    """SIFT features into ``db``; one camera for all photos when ``shared``; EXIF focal as the prior."""
    pycolmap = _pycolmap()

    ext = pycolmap.FeatureExtractionOptions()
    ext.sift.max_num_features = rung.max_num_features
    ext.max_image_size = rung.max_side

    def reader(photo: Photo) -> pycolmap_types.ImageReaderOptions:
        ro = pycolmap.ImageReaderOptions()
        ro.camera_model = "SIMPLE_RADIAL"
        if photo.focal_px is not None:
            w, h = _resized_size(photo, rung.max_side)
            f = photo.focal_px * w / photo.width
            ro.camera_params = f"{f},{w / 2},{h / 2},0"
        return ro

    if shared:
        pycolmap.extract_features(db, folder, image_names=list(names), camera_mode=pycolmap.CameraMode.SINGLE,
                                  reader_options=reader(photos[0]), extraction_options=ext)
        return
    for photo, name in zip(photos, names):
        pycolmap.extract_features(db, folder, image_names=[name], camera_mode=pycolmap.CameraMode.PER_IMAGE,
                                  reader_options=reader(photo), extraction_options=ext)


def _match(db: Path, rung: Rung) -> None:
    pycolmap = _pycolmap()

    verify = pycolmap.TwoViewGeometryOptions()
    verify.min_num_inliers = rung.two_view_min_inliers
    pycolmap.match_exhaustive(db, verification_options=verify)


def _best(recs: dict) -> object | None:
    """The reconstruction with the most registered images, then the lowest reprojection error."""
    if not recs:
        return None
    return max(recs.values(), key=lambda r: (r.num_reg_images(), -r.compute_mean_reprojection_error()))


def _map(db: Path, folder: Path, out: Path, rung: Rung, mapper: str):
    """Run one mapper on ``db``; the best reconstruction or None."""
    pycolmap = _pycolmap()

    out.mkdir(parents=True, exist_ok=True)
    if mapper == "incremental":
        opts = pycolmap.IncrementalPipelineOptions()
        opts.min_num_matches = rung.min_num_matches
        opts.min_model_size = 2
        opts.mapper.init_min_num_inliers = rung.init_min_num_inliers
        opts.mapper.abs_pose_min_num_inliers = rung.abs_pose_min_num_inliers
        opts.mapper.init_min_tri_angle = rung.init_min_tri_angle
        return _best(pycolmap.incremental_mapping(db, folder, out, options=opts))
    opts = pycolmap.GlobalPipelineOptions()
    opts.min_num_matches = rung.min_num_matches
    opts.min_model_size = 2
    return _best(pycolmap.global_mapping(db, folder, out, options=opts))


def _prune_weak(rec):
    """Deregister photos that see fewer than MIN_IMAGE_POINTS points (their poses are guesses)."""
    if rec is None:
        return None
    changed = True
    while changed:  # dropping a photo can strand the points of another
        changed = False
        for image_id in list(rec.reg_image_ids()):
            image = rec.images[image_id]
            if image.num_points3D < MIN_IMAGE_POINTS:
                rec.deregister_frame(image.frame_id)
                changed = True
    return rec


def _score(rec) -> tuple[int, float]:
    if rec is None or rec.num_reg_images() == 0:
        return 0, math.inf
    return int(rec.num_reg_images()), float(rec.compute_mean_reprojection_error())


def _mappers() -> tuple[str, ...]:
    pycolmap = _pycolmap()

    return ("incremental", "global") if hasattr(pycolmap, "global_mapping") else ("incremental",)


# ----------------------------------------------------------------------------- outputs


def _intrinsics(cam) -> tuple[float, float, float, float, np.ndarray]:
    """(fx, fy, cx, cy, [k1, k2, p1, p2]) of a COLMAP camera (SIMPLE_RADIAL, RADIAL, PINHOLE, OPENCV...)."""
    name = cam.model_name if hasattr(cam, "model_name") else str(cam.model).split(".")[-1]
    p = [float(v) for v in cam.params]
    k = np.zeros(4)
    if name in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
        fx = fy = p[0]
        cx, cy = p[1], p[2]
        k[: len(p) - 3] = p[3:5]
    elif name in ("PINHOLE", "OPENCV"):
        fx, fy, cx, cy = p[:4]
        k[: len(p) - 4] = p[4:8]
    else:
        raise ValueError(f"camera model {name} is not handled")
    return fx, fy, cx, cy, k


def _write_ply(path: Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """[P, 3] float points and [P, 3] uint8 colours as a binary PLY vertex list."""
    from plyfile import PlyData, PlyElement

    v = np.zeros(len(xyz), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    v["x"], v["y"], v["z"] = np.asarray(xyz, dtype=np.float64).T
    v["red"], v["green"], v["blue"] = np.asarray(rgb, dtype=np.uint8).T
    PlyData([PlyElement.describe(v, "vertex")]).write(str(path))


def _opencv_to_opengl(T: np.ndarray) -> np.ndarray:
    T = np.array(T, dtype=np.float64, copy=True)
    T[..., :3, 1:3] *= -1.0
    return T


def _input_list(photos: Sequence[Photo]) -> list[dict]:
    """What identifies the input: absolute paths and byte sizes, in the order given."""
    return [{"path": str(p.path), "bytes": p.path.stat().st_size} for p in photos]


def _export(rec, photos: Sequence[Photo], names: Sequence[str], rung: Rung, tmp: Path) -> tuple[dict, dict]:
    """Write the model (cameras rescaled to the photos' size) and points into ``tmp``.

    Returns (poses.json dict without the "recon_sfm" record, arrays for the PoseEstimate).
    """
    by_name = dict(zip(names, photos))
    A4 = np.vstack([APPLIED_TRANSFORM, [0.0, 0.0, 0.0, 1.0]])  # [4, 4] nerfstudio world <- COLMAP world
    frames, paths, Ks, Ts, coeffs = [], [], [], [], []
    rescaled: set[int] = set()
    for image_id in sorted(rec.reg_image_ids(), key=lambda i: rec.images[i].name):
        image = rec.images[image_id]
        photo = by_name[image.name]
        cam = rec.cameras[image.camera_id]
        if image.camera_id not in rescaled:
            cam.rescale(photo.width, photo.height)
            rescaled.add(image.camera_id)
        fx, fy, cx, cy, k = _intrinsics(cam)
        for p2d in image.points2D:  # keypoints to the photo's pixels (COLMAP's pixel-edge convention scales exactly)
            p2d.xy = p2d.xy * np.array([photo.width, photo.height]) / np.array(_resized_size(photo, rung.max_side))
        T_cam_colmap = np.vstack([image.cam_from_world().matrix(), [0.0, 0.0, 0.0, 1.0]])  # [4, 4]
        T_colmap_cam = np.linalg.inv(T_cam_colmap)
        T_world_cam = A4 @ T_colmap_cam  # OpenCV axes, nerfstudio world
        frames.append({
            "file_path": str(photo.path),
            "transform_matrix": _opencv_to_opengl(T_world_cam).tolist(),
            "fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy, "w": photo.width, "h": photo.height,
            "k1": float(k[0]), "k2": float(k[1]), "p1": float(k[2]), "p2": float(k[3]),
            "colmap_im_id": int(image_id),
        })
        paths.append(photo.path)
        Ks.append(np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]))
        Ts.append(T_world_cam)
        coeffs.append(k)
    if len({p.path.name for p in photos}) == len(photos):  # the model names the photos themselves
        for image in rec.images.values():
            image.name = by_name[image.name].path.name
    rec.update_point_3d_errors()  # errors at the photos' size, now that keypoints are rescaled
    model = tmp / MODEL_DIR
    model.mkdir()
    rec.write_binary(str(model))
    pts = list(rec.points3D.values())
    xyz = np.array([p.xyz for p in pts], dtype=np.float64).reshape(-1, 3)
    rgb = np.array([p.color for p in pts], dtype=np.uint8).reshape(-1, 3)
    _write_ply(tmp / POINTS_FILE, xyz @ APPLIED_TRANSFORM[:, :3].T, rgb)
    meta = {
        "camera_model": "OPENCV",
        "applied_transform": APPLIED_TRANSFORM.tolist(),
        "ply_file_path": POINTS_FILE,
        "frames": frames,
    }
    arrays = {"paths": paths, "Ks": np.stack(Ks), "T": np.stack(Ts), "coeffs": np.stack(coeffs), "points": len(pts)}
    return meta, arrays


def _commit(tmp: Path, workdir: Path, meta: dict) -> None:
    """Move sfm/ and the ply into ``workdir``, then write poses.json by rename (last)."""
    old = None
    if (workdir / MODEL_DIR).exists():
        old = tmp / "old-model"
        os.replace(workdir / MODEL_DIR, old)
    os.replace(tmp / MODEL_DIR, workdir / MODEL_DIR)
    os.replace(tmp / POINTS_FILE, workdir / POINTS_FILE)
    atomic_write_text(workdir / POSES_FILE, json.dumps(meta, indent=1))
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _reuse(workdir: Path, photos: Sequence[Photo]) -> PoseEstimate | None:
    """The PoseEstimate of an existing poses.json written for exactly these photos, else None."""
    path = workdir / POSES_FILE
    try:
        meta = json.loads(path.read_text())
        info = meta["recon_sfm"]
        if info["input_images"] != _input_list(photos) or not (workdir / MODEL_DIR).is_dir() or not (workdir / POINTS_FILE).is_file():
            return None
        frames = meta["frames"]
        T = np.stack([np.asarray(fr["transform_matrix"], dtype=np.float64) for fr in frames])
        Ks = np.stack([[[fr["fl_x"], 0.0, fr["cx"]], [0.0, fr["fl_y"], fr["cy"]], [0.0, 0.0, 1.0]] for fr in frames])
        coeffs = np.array([[fr.get(k, 0.0) for k in ("k1", "k2", "p1", "p2")] for fr in frames], dtype=np.float64)
        paths = tuple(Path(fr["file_path"]) for fr in frames)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    registered = set(paths)
    return PoseEstimate(
        poses_json=path, model_dir=workdir / MODEL_DIR, image_paths=paths,
        unregistered=tuple(p.path for p in photos if p.path not in registered),
        Ks=Ks, T_world_cam=_opencv_to_opengl(T), coeffs=coeffs, registered=len(paths), total=len(photos),
        mean_reprojection_error=float(info["mean_reprojection_error_px"]),
        mean_reprojection_error_photo=float(info["mean_reprojection_error_photo_px"]), n_points=int(info["points"]),
        rung=str(info["rung"]), mapper=str(info["mapper"]), seconds=float(info["seconds"]), reused=True,
    )


def _common_folder(paths: Sequence[Path]) -> Path:
    return Path(os.path.commonpath([str(p.parent) for p in paths]))


# ----------------------------------------------------------------------------- entry points


def estimate_poses(
    image_paths: Sequence[str | Path],
    workdir: str | Path,
    *,
    progress: Callable[[str], None] | None = None,
    ladder: Sequence[Rung] | None = None,
    min_registered: int | None = None,
    reuse: bool = True,
) -> PoseEstimate:
    """Estimate every photo's camera; write ``workdir/sfm/``, ``sparse_pc.ply`` and ``poses.json``.

    ``ladder``: rungs to try in order (default ``default_ladder``); ``min_registered``: fewest
    registered photos accepted (default: at least 2 and 60% of them); ``reuse``: return an
    existing poses.json written for the same photos (paths and byte sizes) without running.
    Raises ReconError (one line) for unreadable photos, and when too few photos register; then
    nothing is left in ``workdir`` (a workdir this call created is removed again).
    """
    pycolmap = _pycolmap()

    say = progress or (lambda _msg: None)
    paths = [Path(p).resolve() for p in image_paths]
    if len(paths) < 2:
        raise ReconError(paths[0] if paths else None, f"pose estimation needs at least 2 photos, got {len(paths)}")
    if len(set(paths)) != len(paths):
        raise ReconError(_common_folder(paths), "the same photo is listed twice")
    photos = [read_photo(p) for p in paths]
    workdir = Path(workdir)
    if reuse and (found := _reuse(workdir, photos)) is not None:
        say(f"reusing {found.poses_json} ({found.registered} of {found.total} registered)")
        return found
    n = len(photos)
    need = min_registered if min_registered is not None else max(2, math.ceil(0.6 * n))
    rungs = list(ladder) if ladder is not None else default_ladder(max(max(p.width, p.height) for p in photos))
    shared = one_camera(photos)
    names = [f"{i:04d}_{p.path.stem}.png" for i, p in enumerate(photos)]

    created = not workdir.exists()
    workdir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".sfm-work-", dir=workdir))
    t0 = time.perf_counter()
    attempts: list[Attempt] = []
    best: tuple[tuple[int, float], Any, Rung, str] | None = None  # (score key, rec, rung, mapper)
    try:
        with _quiet_colmap():
            pycolmap.set_random_seed(0)
            features: dict[tuple, Path] = {}
            matched: dict[tuple, Path] = {}
            for rung in rungs:
                folder = scratch / f"images_{rung.max_side}"
                if not folder.is_dir():
                    say(f"resizing {n} photos to {rung.max_side} px")
                    _write_resized(photos, names, rung.max_side, folder)
                if rung.features_key not in features:
                    db = scratch / f"features_{rung.max_side}_{rung.max_num_features}.db"
                    say(f"{rung.name}: extracting SIFT features")
                    _extract(db, folder, photos, names, rung, shared)
                    features[rung.features_key] = db
                if rung.matches_key not in matched:
                    db = scratch / f"matches_{'_'.join(map(str, rung.matches_key))}.db"
                    shutil.copyfile(features[rung.features_key], db)
                    say(f"{rung.name}: matching all pairs")
                    _match(db, rung)
                    matched[rung.matches_key] = db
                for mapper in _mappers():
                    t = time.perf_counter()
                    out = scratch / f"out_{len(attempts)}"
                    try:
                        rec = _prune_weak(_map(matched[rung.matches_key], folder, out, rung, mapper))
                    except Exception as err:  # a mapper that crashes on a degenerate view graph is one failed try
                        say(f"{rung.name}, {mapper}: failed ({type(err).__name__}: {err})")
                        rec = None
                    reg, err_px = _score(rec)
                    attempts.append(Attempt(rung.name, mapper, reg, err_px, 0 if rec is None else rec.num_points3D(),
                                            time.perf_counter() - t))
                    say(f"{rung.name}, {mapper}: {reg} of {n} registered" + (f", {err_px:.2f} px" if reg else ""))
                    key = (reg, -err_px)
                    if rec is not None and reg > 0 and (best is None or key > best[0]):
                        best = (key, rec, rung, mapper)
                if best is not None and best[0][0] == n:
                    break
        registered = 0 if best is None else best[0][0]
        if registered < need:
            what = "more photos with more overlap between neighbours (60-80%), or a COLMAP model (sparse/0) of these photos"
            raise ReconError(_common_folder(paths), f"only {registered} of {n} photos could be registered (need {need}); try {what}")
        assert best is not None  # no registered try at all is rejected above
        (_, neg_err), rec, rung, mapper = best
        err_px = -neg_err
        seconds = time.perf_counter() - t0
        meta, arrays = _export(rec, photos, names, rung, scratch)
        err_photo = float(rec.compute_mean_reprojection_error())
        meta["recon_sfm"] = {
            "input_images": _input_list(photos),
            "registered": registered, "total": n, "mean_reprojection_error_px": err_px,
            "mean_reprojection_error_photo_px": err_photo, "max_side": rung.max_side,
            "points": arrays["points"], "rung": rung.name, "mapper": mapper, "seconds": seconds,
            "attempts": [a.__dict__ | {"mean_reprojection_error": None if math.isinf(a.mean_reprojection_error)
                                       else a.mean_reprojection_error} for a in attempts],
        }
        _commit(scratch, workdir, meta)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        if created:
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    shutil.rmtree(scratch, ignore_errors=True)
    reg_paths = set(arrays["paths"])
    return PoseEstimate(
        poses_json=workdir / POSES_FILE, model_dir=workdir / MODEL_DIR, image_paths=tuple(arrays["paths"]),
        unregistered=tuple(p.path for p in photos if p.path not in reg_paths),
        Ks=arrays["Ks"], T_world_cam=arrays["T"], coeffs=arrays["coeffs"], registered=registered, total=n,
        mean_reprojection_error=err_px, mean_reprojection_error_photo=err_photo, n_points=arrays["points"],
        rung=rung.name, mapper=mapper,
        seconds=seconds, attempts=tuple(attempts),
    )


def load_estimated_scene(
    poses_json: str | Path,
    *,
    views: int | None = None,
    downscale: float | None = None,
    resolution: int | None = None,
    holdout: bool = False,
) -> SceneData:
    """The SceneData of a poses.json written by ``estimate_poses``, read by the nerfstudio reader
    (so its cameras are exactly the file's; the world is normalized as for any nerfstudio scene).

    ``holdout=False`` (default): no test views, a person's few photos are all needed; ``views``
    evenly spaced photos train (None = all). True keeps the reader's every-8th holdout.
    """
    from dataclasses import replace

    from scenes.nerfstudio import read_nerfstudio

    path = Path(poses_json)
    if not path.is_file():
        raise ReconError(path, "poses file is missing (run pose estimation first)")
    scene = read_nerfstudio(path.parent, json_path=path, views=views if holdout else None, downscale=downscale, resolution=resolution)
    if holdout:
        return scene
    n = scene.n_frames
    if views is not None and not 1 <= views <= n:
        raise ReconError(path, f"--views {views} is not between 1 and the {n} registered photos")
    train = range(n) if views is None else sorted({int(i) for i in np.round(np.linspace(0, n - 1, views))})
    return replace(scene, train_ids=tuple(train), test_ids=())


__all__ = ["Attempt", "PoseEstimate", "Rung", "default_ladder", "estimate_poses", "load_estimated_scene"]
