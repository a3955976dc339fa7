"""Initial points for the Gaussians: triangulated from the training views, or random.

SfM init runs COLMAP's SIFT extraction and exhaustive matching (pycolmap) on the *training*
images only, keeps matches consistent with the known poses (Sampson distance to the epipolar
geometry), links them into tracks, and triangulates each track with its known cameras (linear
multi-view DLT), filtering by reprojection error, cheirality and triangulation angle. It never
reads a dataset's precomputed all-view points: those see the test views.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from reconstruct.config import InitConfig
from reconstruct.splats import Splats
from scenes.errors import ReconError
from scenes.types import SceneData


def _projection(scene: SceneData, i: int) -> np.ndarray:
    """[3, 4] P = K [R | t] mapping world to pixels for frame i."""
    T_cam_world = np.linalg.inv(scene.T_world_cam[i])
    return scene.Ks[i] @ T_cam_world[:3]


def _fundamental(scene: SceneData, i: int, j: int) -> np.ndarray:
    """[3, 3] F with x_j^T F x_i = 0 for pixel coordinates."""
    T_j_i = np.linalg.inv(scene.T_world_cam[j]) @ scene.T_world_cam[i]
    R, t = T_j_i[:3, :3], T_j_i[:3, 3]
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    return np.linalg.inv(scene.Ks[j]).T @ tx @ R @ np.linalg.inv(scene.Ks[i])


def _sampson(F: np.ndarray, xi: np.ndarray, xj: np.ndarray) -> np.ndarray:
    """Sampson distance (pixels^2) of matches xi [M,2] -> xj [M,2]."""
    hi = np.concatenate([xi, np.ones((len(xi), 1))], 1)
    hj = np.concatenate([xj, np.ones((len(xj), 1))], 1)
    Fx = hi @ F.T
    Ftx = hj @ F
    num = np.sum(hj * Fx, 1) ** 2
    return num / (Fx[:, 0] ** 2 + Fx[:, 1] ** 2 + Ftx[:, 0] ** 2 + Ftx[:, 1] ** 2 + 1e-12)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict = {}

    def find(self, a):
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a, b) -> None:
        self.parent[self.find(a)] = self.find(b)


def triangulate_views(
    scene: SceneData, ids: list[int], *, matching: Literal["exhaustive", "epipolar"] = "exhaustive",
    sift_upscale: int = 1, max_epipolar_px: float = 2.0, max_reproj_px: float = 2.0, min_angle_deg: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Points [P, 3] and colors [P, 3] (float in [0, 1]) triangulated from frames ``ids``.

    ``matching``: exhaustive: COLMAP's nearest-neighbour matches, then the ones within
    ``max_epipolar_px`` of the known epipolar geometry; epipolar: the known poses pick each keypoint's
    candidates first (``epipolar_matches``). ``sift_upscale``: extract SIFT on images this many times
    larger (keypoints mapped back), for small images whose finest octave holds most of the detail."""
    import pycolmap
    from PIL import Image

    assert sift_upscale >= 1, sift_upscale
    pycolmap.logging.minloglevel = 2  # COLMAP's per-image INFO lines would drown the progress bar
    with tempfile.TemporaryDirectory(prefix="recon_sfm_") as tmp:
        tmp_path = Path(tmp)
        image_dir = tmp_path / "images"
        image_dir.mkdir()
        names = []
        for i in ids:
            name = f"{i:05d}.png"
            image = Image.fromarray((scene.image(i) * 255).round().astype(np.uint8))
            if sift_upscale > 1:
                image = image.resize((image.width * sift_upscale, image.height * sift_upscale), Image.Resampling.BICUBIC)
            image.save(image_dir / name)
            names.append(name)
        db_path = tmp_path / "db.db"
        extraction = pycolmap.FeatureExtractionOptions()
        extraction.num_threads = 2
        pycolmap.extract_features(db_path, image_dir, camera_mode=pycolmap.CameraMode.PER_IMAGE,
                                  extraction_options=extraction, device=pycolmap.Device.cpu)
        if matching == "exhaustive":
            options = pycolmap.FeatureMatchingOptions()
            options.num_threads = 2
            pycolmap.match_exhaustive(db_path, matching_options=options, device=pycolmap.Device.cpu)
        db = pycolmap.Database.open(str(db_path))
        try:
            by_name = {img.name: img.image_id for img in db.read_all_images()}
            frame_of = {by_name[n]: i for n, i in zip(names, ids)}
            # COLMAP keypoints are in pixel coordinates with the origin at the top-left corner of the
            # top-left pixel, as our intrinsics are (pixel centers at integer + 0.5), so a scaled image's
            # keypoints map back by division.
            keypoints = {frame_of[iid]: db.read_keypoints(iid)[:, :2] / sift_upscale for iid in frame_of}
            pair_matches = []
            if matching == "exhaustive":
                for a in frame_of:
                    for b in frame_of:
                        if a < b and db.exists_matches(a, b):
                            m = db.read_matches(a, b)
                            fa, fb = frame_of[a], frame_of[b]
                            good = _sampson(_fundamental(scene, fa, fb), keypoints[fa][m[:, 0]],
                                            keypoints[fb][m[:, 1]]) < max_epipolar_px**2
                            pair_matches.append((fa, fb, m[good]))
            else:
                descriptors = {frame_of[iid]: np.asarray(db.read_descriptors(iid).data, dtype=np.float32)
                               for iid in frame_of}
        finally:
            db.close()
    if matching == "epipolar":
        for n, a in enumerate(ids):
            for b in ids[n + 1:]:
                pair_matches.append((a, b, epipolar_matches(
                    _fundamental(scene, a, b), keypoints[a], keypoints[b], descriptors[a], descriptors[b],
                    max_epipolar_px=max_epipolar_px)))
    return _triangulate_tracks(scene, ids, keypoints, pair_matches, max_reproj_px=max_reproj_px,
                               min_angle_deg=min_angle_deg)


def epipolar_matches(
    F: np.ndarray, xa: np.ndarray, xb: np.ndarray, da: np.ndarray, db: np.ndarray, *,
    max_epipolar_px: float = 2.0, ratio: float = 0.8, chunk: int = 2048,
) -> np.ndarray:
    """[M, 2] index pairs (into xa [N, 2], xb [K, 2]) matched under known epipolar geometry F
    (x_b^T F x_a = 0): each keypoint's candidates are the other image's keypoints within
    ``max_epipolar_px`` (Sampson distance) of its epipolar line; among them the nearest descriptor
    (da [N, D], db [K, D]) must pass Lowe's ratio test against the second nearest and be mutual.
    The geometry removes most wrong candidates before the ratio test sees them, so far more true
    matches pass than in unconstrained matching (fern, 3 views at 504x378: 595 triangulated points
    against 374)."""
    assert xa.shape[1] == 2 and xb.shape[1] == 2 and len(xa) == len(da) and len(xb) == len(db), (xa.shape, da.shape)
    if len(xa) < 2 or len(xb) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    ha = np.concatenate([xa, np.ones((len(xa), 1))], 1)
    hb = np.concatenate([xb, np.ones((len(xb), 1))], 1)
    lines_b, lines_a = ha @ F.T, hb @ F  # [N, 3] epipolar lines in b, [K, 3] in a
    na = da / np.maximum(np.linalg.norm(da, axis=1, keepdims=True), 1e-12)
    nb = db / np.maximum(np.linalg.norm(db, axis=1, keepdims=True), 1e-12)
    best_b = np.full(len(xa), -1)
    ok_a = np.zeros(len(xa), dtype=bool)
    col_best = np.full(len(xb), np.inf)  # nearest admissible a for each b (mutual check)
    col_arg = np.full(len(xb), -1)
    for lo in range(0, len(xa), chunk):
        sl = slice(lo, lo + chunk)
        num = (lines_b[sl] @ hb.T) ** 2  # [c, K]
        den = (lines_b[sl, 0:1] ** 2 + lines_b[sl, 1:2] ** 2) + (lines_a[:, 0] ** 2 + lines_a[:, 1] ** 2)[None]
        dist = np.sqrt(np.maximum(2.0 - 2.0 * (na[sl] @ nb.T), 0.0))  # [c, K] descriptor distance
        dist[num / np.maximum(den, 1e-12) >= max_epipolar_px**2] = np.inf
        two = np.argpartition(dist, 1, axis=1)[:, :2]
        d2 = np.take_along_axis(dist, two, 1)
        order = np.argsort(d2, axis=1)
        first = np.take_along_axis(two, order[:, :1], 1)[:, 0]
        d_first, d_second = np.take_along_axis(d2, order, 1).T
        best_b[sl] = first
        ok_a[sl] = np.isfinite(d_first) & (d_first < ratio * d_second)
        rows = np.argmin(dist, axis=0)
        vals = dist[rows, np.arange(len(xb))]
        better = vals < col_best
        col_best[better], col_arg[better] = vals[better], rows[better] + lo
    idx = np.nonzero(ok_a)[0]
    idx = idx[col_arg[best_b[idx]] == idx]
    return np.stack([idx, best_b[idx]], 1).astype(np.int64)


def _triangulate_tracks(
    scene: SceneData, ids: list[int], keypoints: dict[int, np.ndarray], pair_matches: list, *,
    max_reproj_px: float, min_angle_deg: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Link pairwise matches (frame a, frame b, [M, 2] keypoint indices) into tracks and triangulate each."""
    uf = _UnionFind()
    for fa, fb, m in pair_matches:
        for ka, kb in m:
            uf.union((fa, int(ka)), (fb, int(kb)))
    tracks: dict = {}
    for node in list(uf.parent):
        tracks.setdefault(uf.find(node), []).append(node)
    P = {i: _projection(scene, i) for i in ids}
    centers = {i: scene.T_world_cam[i][:3, 3] for i in ids}
    points, colors = [], []
    for obs in tracks.values():
        frames = [f for f, _ in obs]
        if len(obs) < 2 or len(set(frames)) != len(frames):
            continue  # inconsistent track (two keypoints of one image)
        xs = np.array([keypoints[f][k] for f, k in obs])
        X = _dlt([P[f] for f in frames], xs)
        if X is None:
            continue
        ok = True
        for f, x in zip(frames, xs):
            h = P[f] @ np.append(X, 1.0)
            if h[2] <= 0 or np.linalg.norm(h[:2] / h[2] - x) > max_reproj_px:
                ok = False
                break
        if not ok:
            continue
        rays = [(X - centers[f]) / np.linalg.norm(X - centers[f]) for f in frames]
        max_angle = max(np.degrees(np.arccos(np.clip(r1 @ r2, -1, 1))) for r1 in rays for r2 in rays)
        if max_angle < min_angle_deg:
            continue
        f0, x0 = frames[0], xs[0]
        u = np.clip(np.floor(x0).astype(int), 0, [scene.width - 1, scene.height - 1])
        points.append(X)
        colors.append(scene.image(f0)[u[1], u[0]])
    if not points:
        return np.zeros((0, 3)), np.zeros((0, 3))
    return np.array(points), np.array(colors, dtype=np.float64)


def _dlt(Ps: list[np.ndarray], xs: np.ndarray) -> np.ndarray | None:
    """Linear triangulation of one point seen at pixels xs [V, 2] by cameras Ps (V x [3, 4])."""
    rows = []
    for Pm, (u, v) in zip(Ps, xs):
        rows.append(u * Pm[2] - Pm[0])
        rows.append(v * Pm[2] - Pm[1])
    _, _, vt = np.linalg.svd(np.array(rows))
    h = vt[-1]
    if abs(h[3]) < 1e-12:
        return None
    return h[:3] / h[3]


def random_points(scene: SceneData, ids: list[int], n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Points [n, 3] sampled uniformly inside the training frustums (between near and far), random colors."""
    points = np.empty((0, 3))
    while len(points) < n:
        i = ids[int(rng.integers(len(ids)))]
        m = 4 * n
        px = rng.uniform([0, 0], [scene.width, scene.height], size=(m, 2))
        depth = rng.uniform(scene.near, scene.far, size=m)
        rays = np.concatenate([px, np.ones((m, 1))], 1) @ np.linalg.inv(scene.Ks[i]).T
        cam = rays * depth[:, None]
        world = cam @ scene.T_world_cam[i][:3, :3].T + scene.T_world_cam[i][:3, 3]
        points = np.concatenate([points, world[: max(1, n // len(ids))]])
    return points[:n], rng.uniform(0, 1, size=(n, 3))


@dataclass
class InitResult:
    """Where the Gaussians start, decided before the method is built."""

    points: np.ndarray
    """[P, 3] centres."""
    colors: np.ndarray
    """[P, 3] colors in [0, 1]."""
    kind: str
    """The kind that produced them: sfm, random, dense or ply (after fallbacks)."""
    how: str
    """One line for the history ("sfm (374 points from 3 views)", ...)."""
    sfm_points: np.ndarray | None = None
    """[S, 3] points triangulated from the training views, when SfM ran (the SfM depth prior's targets)."""
    splats: Splats | None = None
    """The full Gaussians of --init.kind ply."""

    def record(self) -> dict:
        return {"init": self.how, "kind": self.kind, "n_points": int(len(self.points))}


def triangulate_training_views(cfg: InitConfig, scene: SceneData, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """``triangulate_views`` with the matcher and SIFT scale of ``cfg``; options still "auto" / None
    triangulate as the vanilla preset does (exhaustive matches on the images as they are)."""
    return triangulate_views(scene, ids, matching="exhaustive" if cfg.matching == "auto" else cfg.matching,
                             sift_upscale=cfg.sift_upscale or 1)


def initialize(cfg: InitConfig, scene: SceneData, *, seed: int, cache_dir: Path | None,
               scene_points: bool = False) -> InitResult:
    """The initial Gaussians of ``cfg.kind`` (resolved: not "auto") on ``scene``'s training views.

    sfm: triangulated SIFT matches; below ``min_sfm_points`` the ``fallback`` (random points, or the
    plane-sweep matches); dense: the sfm points plus plane-sweep matches (cached in ``cache_dir``; they replace random points when SfM found too
    few); ply: the Gaussians of a splat file. ``scene_points``: the scene's own points are the sfm
    points (poses estimated from the training images: their bundle-adjusted SfM points see no test
    view), so nothing is triangulated again.
    """
    assert cfg.kind != "auto", "resolve the config first"
    rng = np.random.default_rng(seed)
    ids = list(scene.train_ids)
    if cfg.kind == "ply":
        from reconstruct.ply import read_ply

        if cfg.ply is None:
            raise ReconError(None, "--init.kind ply needs --init.ply FILE")
        splats = read_ply(cfg.ply)
        return InitResult(splats.means.astype(np.float64), splats.rgb.astype(np.float64), "ply",
                          f"ply ({len(splats)} Gaussians from {cfg.ply})", splats=splats)
    sfm = None
    if cfg.kind in ("sfm", "dense") and (len(ids) >= 2 or scene_points):
        if scene_points and scene.points is not None:
            points = np.asarray(scene.points, dtype=np.float64)
            colors = (np.full_like(points, 0.5) if scene.point_colors is None
                      else np.asarray(scene.point_colors, dtype=np.float64) / 255.0)
            source = "pose estimation"
        else:
            points, colors = triangulate_training_views(cfg, scene, ids)
            source = f"{len(ids)} views"
        sfm = points
        min_points = 50 if cfg.min_sfm_points is None else cfg.min_sfm_points
        if len(points) >= min_points:
            base = InitResult(points, colors, "sfm", f"sfm ({len(points)} points from {source})", sfm_points=sfm)
        else:
            base = None
            why = f"sfm found {len(points)} < {min_points} points"
    else:
        base, why = None, "random"
    if base is None:
        P, C = random_points(scene, ids, cfg.n_random, rng)
        base = InitResult(P, C, "random", f"random ({why})" if why != "random" else "random", sfm_points=sfm)
    if cfg.kind != "dense" and not (base.kind == "random" and cfg.fallback == "dense" and cfg.kind == "sfm"):
        return base
    P, C = dense_init_points(scene, ids, cfg.dense, cache_dir)
    if not len(P):
        return base
    if base.kind == "random":  # random points fill every frustum with colored haze; matched points replace them
        return InitResult(P, np.clip(C, 0, 1), "dense", f"dense plane-sweep ({len(P)} points; was {base.how})",
                          sfm_points=sfm)
    return InitResult(np.concatenate([base.points, P]), np.clip(np.concatenate([base.colors, C]), 0, 1), "dense",
                      f"{base.how} + dense plane-sweep ({len(P)} points)", sfm_points=sfm)


def dense_init_points(scene: SceneData, ids: list[int], cfg, cache_dir: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """Plane-sweep points of the training views, cached in ``cache_dir`` keyed by views, size and settings."""
    import dataclasses
    import hashlib
    import io
    import json

    from reconstruct.stereo import dense_points
    from scenes.fileio import atomic_write_bytes

    key = json.dumps([str(getattr(scene, "root", "")), list(map(int, ids)), scene.width, scene.height,
                      dataclasses.asdict(cfg), np.asarray(scene.T_world_cam)[ids].round(6).tolist()], default=str)
    path = Path(cache_dir) / f"dense_init_{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz" if cache_dir else None
    if path is not None and path.is_file():
        with np.load(path) as f:
            return f["points"], f["colors"]
    P, C = dense_points(scene, ids, cfg, seed=0)  # the same for every seed
    if path is not None:
        buf = io.BytesIO()
        np.savez(buf, points=P, colors=C)
        atomic_write_bytes(path, buf.getvalue())
    return P, C
