"""Start a viser server and put splats and cameras into its scene.

Functional core in viser's shape: functions take the server (or a handle) and return scene or
GUI handles; options are keyword-only; array shapes are asserted where they enter.
Frames follow the project convention: ``T_world_cam`` is an OpenCV camera-to-world matrix
(x right, y down, z forward), which is also what viser's camera handles use.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from reconstruct.splats import Splats

if TYPE_CHECKING:  # viser is imported lazily: `recon --help` must not pay for it
    import viser

    from scenes.types import SceneData

TRAIN_COLOR = (40, 110, 255)
"""Frustum color of training cameras (blue)."""
TEST_COLOR = (255, 140, 0)
"""Frustum color of held-out test cameras (orange)."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ViewerHandle:
    """A running viser server and the address it really listens on."""

    server: "viser.ViserServer"
    """The viser server; add scene nodes and GUI through it."""
    host: str
    """Interface it is bound to."""
    port: int
    """Port it is bound to (may differ from the one asked for when that was taken)."""

    @property
    def url(self) -> str:
        host = "localhost" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        """Shut the server down (closes client connections)."""
        self.server.stop()


def open_viewer(*, host: str = "127.0.0.1", port: int = 8080, verbose: bool = True) -> ViewerHandle:
    """Start a viser server on ``host:port`` and return its handle.

    viser moves to the next free port when ``port`` is taken (``port=0`` lets the OS pick);
    the handle and the printed line carry the port actually bound.
    """
    import viser

    server = viser.ViserServer(host=host, port=port, verbose=False)
    server.gui.configure_theme(show_share_button=False, control_width="medium")
    handle = ViewerHandle(server=server, host=host, port=int(server.get_port()))
    if verbose:
        moved = "" if port in (0, handle.port) else f" (port {port} was taken)"
        log.info("viewer: open %s%s", handle.url, moved)
    return handle


# ----------------------------------------------------------------------------------------------
# Splats


def quats_to_rotmats(quats: np.ndarray) -> np.ndarray:
    """[N, 4] wxyz quaternions (any norm) -> [N, 3, 3] rotation matrices."""
    assert quats.ndim == 2 and quats.shape[1] == 4, quats.shape
    q = quats.astype(np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    w, x, y, z = q.T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=1,
    )


def splat_covariances(splats: Splats) -> np.ndarray:
    """[N, 3, 3] world covariances R S^2 R^T from the quaternions and log scales."""
    R = quats_to_rotmats(splats.quats)  # [N, 3, 3]
    M = R * np.exp(splats.log_scales.astype(np.float64))[:, None, :]  # R S: columns scaled, [N, 3, 3]
    return np.matmul(M, M.transpose(0, 2, 1)).astype(np.float32)  # (R S)(R S)^T = R S^2 R^T


def select_splats(splats: Splats, *, max_count: int | None = None, min_opacity: float = 0.0) -> np.ndarray:
    """Deterministic subset for slow clients: indices of splats with opacity >= ``min_opacity``,
    the ``max_count`` most visible first (opacity x mean cross-section area), in input order.

    Returns an int64 index array into ``splats``.
    """
    opacity = splats.opacities
    keep = np.flatnonzero(opacity >= min_opacity)
    if max_count is not None and len(keep) > max_count:
        area = np.exp(splats.log_scales[keep].astype(np.float64).sum(axis=1) * (2.0 / 3.0))
        score = opacity[keep] * area
        # Stable sort on the negated score: ties keep input order, so the choice is reproducible.
        top = np.argsort(-score, kind="stable")[: max(int(max_count), 0)]
        keep = np.sort(keep[top])
    return keep.astype(np.int64)


def show_splats(
    server: "viser.ViserServer",
    splats: Splats,
    *,
    name: str = "/splats",
    max_count: int | None = None,
    min_opacity: float = 0.0,
    visible: bool = True,
) -> "viser.GaussianSplatHandle | None":
    """Add (or replace) ``splats`` as a Gaussian-splat node rendered in the browser.

    Colors are the view-independent SH degree-0 term (the browser renderer has no SH);
    ``max_count`` / ``min_opacity`` thin the set with :func:`select_splats`. Splats with a
    non-finite center, covariance, color or opacity are left out (a NaN splat breaks the browser's
    sort). Nothing is sent when no splat is left: an empty buffer makes the client allocate
    zero-sized textures (WebGL errors); any node already under ``name`` is removed instead and
    None returned.
    """
    if max_count is not None or min_opacity > 0.0:
        splats = splats.subset(select_splats(splats, max_count=max_count, min_opacity=min_opacity))
    centers = np.ascontiguousarray(splats.means, dtype=np.float32)  # [N, 3]
    covariances = splat_covariances(splats)  # [N, 3, 3]
    rgbs = splats.rgb.astype(np.float32)  # [N, 3]
    opacities = splats.opacities.astype(np.float32).reshape(-1, 1)  # [N, 1]
    finite = (np.isfinite(centers).all(1) & np.isfinite(covariances).all((1, 2)) & np.isfinite(rgbs).all(1)
              & np.isfinite(opacities[:, 0]))
    if not finite.all():
        log.warning("viewer: %d of %d splats have non-finite values; not shown", int((~finite).sum()), len(finite))
        centers, covariances, rgbs, opacities = centers[finite], covariances[finite], rgbs[finite], opacities[finite]
    if len(centers) == 0:
        server.scene.remove_by_name(name)
        return None
    return server.scene.add_gaussian_splats(
        name, centers=centers, covariances=covariances, rgbs=rgbs, opacities=opacities, visible=visible
    )


# ----------------------------------------------------------------------------------------------
# Cameras


def rotmat_to_wxyz(R: np.ndarray) -> np.ndarray:
    """[3, 3] rotation -> [4] wxyz unit quaternion (Shepperd's method)."""
    assert R.shape == (3, 3), R.shape
    m = R.astype(np.float64)
    tr = np.trace(m)
    if tr > 0:
        s = math.sqrt(tr + 1.0) * 2
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    qa = np.asarray(q)
    return qa / np.linalg.norm(qa)


def wxyz_to_rotmat(wxyz: np.ndarray) -> np.ndarray:
    """[4] wxyz quaternion -> [3, 3] rotation matrix."""
    return quats_to_rotmats(np.asarray(wxyz, dtype=np.float64).reshape(1, 4))[0]


def vertical_fov(K: np.ndarray, height: int) -> float:
    """Vertical field of view in radians of pinhole ``K`` [3, 3] for an image ``height`` px tall."""
    return 2.0 * math.atan(0.5 * height / float(K[1, 1]))


def intrinsics_from_fov(fov: float, width: int, height: int) -> np.ndarray:
    """[3, 3] pinhole K with vertical field of view ``fov`` (radians), square pixels, centered."""
    f = 0.5 * height / math.tan(0.5 * fov)
    return np.array([[f, 0.0, 0.5 * width], [0.0, f, 0.5 * height], [0.0, 0.0, 1.0]])


def camera_thumbnail(image: np.ndarray, *, max_side: int = 160) -> np.ndarray:
    """[H, W, 3] float image in [0, 1] -> uint8 image whose longer side is at most ``max_side``
    (block-average downscale; keeps frustum textures small on the wire)."""
    assert image.ndim == 3 and image.shape[2] == 3, image.shape
    h, w = image.shape[:2]
    f = max(1, int(math.ceil(max(h, w) / max_side)))
    hh, ww = h // f * f, w // f * f
    small = image[:hh, :ww].reshape(hh // f, f, ww // f, f, 3).mean(axis=(1, 3))
    return (np.clip(small, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def scene_extent(scene: "SceneData") -> float:
    """Rough size of the scene: spread of the camera centers (or of near/far when they coincide)."""
    centers = scene.T_world_cam[:, :3, 3]
    spread = float(np.linalg.norm(centers.max(axis=0) - centers.min(axis=0))) if len(centers) else 0.0
    return spread if spread > 1e-6 else max(float(scene.far - scene.near), 1.0)


def default_frustum_scale(scene: "SceneData") -> float:
    """Default frustum size for ``scene``: a small fraction of its extent (1.5%: after viser's
    volume normalization (:func:`frustum_depth`) a frustum of the demo's 50-degree cameras reaches
    about 12% of the way from a camera to the scene, where 4% made it 31% and its image hid the
    scene from any start view near the cameras)."""
    return 0.015 * scene_extent(scene)


def frustum_depth(fov: float, aspect: float, scale: float) -> float:
    """Apex-to-image distance of a viser frustum: viser normalizes the frustum to a fixed volume
    (x * y * z / 3 = scale^3, with x = tan(fov / 2) * aspect, y = tan(fov / 2), z = 1) first."""
    y = math.tan(0.5 * fov)
    return scale / (y * y * aspect / 3.0) ** (1.0 / 3.0)


def show_cameras(
    server: "viser.ViserServer",
    scene: "SceneData",
    *,
    name: str = "/cameras",
    with_images: bool = True,
    frustum_scale: float | None = None,
    visible: bool = True,
) -> list["viser.CameraFrustumHandle"]:
    """Training cameras as blue frustums showing their images, test cameras as orange frustums.

    Returns the frustum handles (train first); toggle ``.visible`` on them to show/hide.
    """
    assert scene.T_world_cam.shape == (scene.n_frames, 4, 4), scene.T_world_cam.shape
    assert scene.Ks.shape == (scene.n_frames, 3, 3), scene.Ks.shape
    scale = frustum_scale if frustum_scale is not None else default_frustum_scale(scene)
    aspect = scene.width / scene.height
    handles = []
    for group, ids, color in (("train", scene.train_ids, TRAIN_COLOR), ("test", scene.test_ids, TEST_COLOR)):
        for i in ids:
            T = scene.T_world_cam[i]
            image = None
            if with_images and group == "train" and scene.loader is not None:
                image = camera_thumbnail(scene.image(i))
            handles.append(
                server.scene.add_camera_frustum(
                    f"{name}/{group}/{i:04d}",
                    fov=vertical_fov(scene.Ks[i], scene.height),
                    aspect=aspect,
                    scale=scale,
                    thickness=0.04 * scale,
                    color=color,
                    image=image,
                    wxyz=rotmat_to_wxyz(T[:3, :3]),
                    position=T[:3, 3],
                    visible=visible,
                    cast_shadow=False,
                    receive_shadow=False,
                )
            )
    return handles


def _vec3(v: np.ndarray) -> tuple[float, float, float]:
    """[3] array -> (x, y, z) Python floats."""
    x, y, z = (float(c) for c in v)
    return (x, y, z)


def splat_bounds(splats: Splats, *, quantile: float = 0.01, min_opacity: float = 0.1) -> tuple[np.ndarray, float]:
    """(centre [3], radius) of what a viewer should frame, from the splats with opacity >=
    ``min_opacity`` (all of them when none is): the centre of the box between their ``quantile``
    and 1 - ``quantile`` positions along each axis, and the 1 - ``quantile`` quantile of their
    distances from it (a few stray floaters neither move nor grow the view) plus three standard
    deviations of a typical splat."""
    assert len(splats) > 0, "no splats to frame"
    keep = splats.opacities >= min_opacity
    means = (splats.means[keep] if keep.any() else splats.means).astype(np.float64)
    means = means[np.isfinite(means).all(axis=1)]
    if len(means) == 0:
        return np.zeros(3), 1.0
    lo, hi = np.quantile(means, [quantile, 1.0 - quantile], axis=0)
    center = 0.5 * (lo + hi)
    radius = float(np.quantile(np.linalg.norm(means - center, axis=1), 1.0 - quantile))
    sizes = (splats.scales[keep] if keep.any() else splats.scales).max(axis=1)
    sizes = sizes[np.isfinite(sizes)]
    return center, radius + (3.0 * float(np.median(sizes)) if len(sizes) else 0.0)


def framing_distance(radius: float, fov: float, *, aspect: float = 1.0, margin: float = 1.15) -> float:
    """Distance from which a sphere of ``radius`` fills at most 1 / ``margin`` of the narrower of a
    pinhole's vertical field of view ``fov`` (radians) and its horizontal one at ``aspect``."""
    half = 0.5 * min(fov, 2.0 * math.atan(math.tan(0.5 * fov) * aspect))
    return margin * max(radius, 1e-6) / math.sin(half)


def frame_view(
    server: "viser.ViserServer",
    *,
    center: np.ndarray,
    radius: float,
    forward_world: np.ndarray,
    up_world: np.ndarray,
    fov: float,
    max_distance: float | None = None,
    max_fov: float = math.radians(75.0),
) -> tuple[np.ndarray, float]:
    """Start new clients level (image up = ``up_world``, also the orbit up) looking along
    ``forward_world`` at ``center``, from the distance that shows a sphere of ``radius`` whole
    with field of view ``fov`` (:func:`framing_distance`; the panel-free part of a landscape
    window is about square, so the vertical field of view decides). When that is farther than
    ``max_distance`` (the camera the view starts from, whose frustum would otherwise fill it)
    the eye stays at ``max_distance`` and the field of view widens to fit (at most ``max_fov``).
    Returns (eye [3], vertical fov in radians)."""
    from scenes.geometry import look_at

    up = np.asarray(up_world, np.float64)
    up = up / max(float(np.linalg.norm(up)), 1e-12)
    fwd = np.asarray(forward_world, np.float64)
    fwd = fwd / max(float(np.linalg.norm(fwd)), 1e-12)
    if abs(float(fwd @ up)) > 0.98:  # looking straight down or up: tilt towards a horizontal axis
        side = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
        fwd = fwd + 0.5 * side / np.linalg.norm(side)
        fwd /= np.linalg.norm(fwd)
    center = np.asarray(center, np.float64)
    distance = framing_distance(radius, fov)
    if max_distance is not None and distance > max_distance > 0:
        needed = 2.0 * math.asin(min(1.0, 1.15 * radius / max_distance))
        fov = max(fov, min(needed, max_fov))
        distance = max(max_distance, framing_distance(radius, fov))
    eye = center - fwd * distance
    T = look_at(eye, center, up=up)
    server.scene.set_up_direction(_vec3(up))
    server.initial_camera.position = _vec3(eye)
    server.initial_camera.look_at = _vec3(center)
    server.initial_camera.up = _vec3(-T[:3, 1])
    server.initial_camera.fov = fov
    return eye, fov


def scene_center(scene: "SceneData") -> np.ndarray:
    """[3] the point nearest every training camera's optical axis (mid-depth in front of the
    first camera when the axes do not meet in front of them)."""
    ids = list(scene.train_ids) or [0]
    T = scene.T_world_cam[ids]
    A = sum(np.eye(3) - np.outer(d, d) for d in T[:, :3, 2])
    b = sum((np.eye(3) - np.outer(d, d)) @ c for d, c in zip(T[:, :3, 2], T[:, :3, 3]))
    first = T[0]
    fallback = first[:3, 3] + first[:3, 2] * 0.5 * (scene.near + scene.far)
    if len(ids) < 2 or np.linalg.cond(A) > 1e6:
        return fallback
    p = np.linalg.solve(A, b)
    return p if float((p - first[:3, 3]) @ first[:3, 2]) > 0 else fallback


def initial_view_from_scene(server: "viser.ViserServer", scene: "SceneData", *, center: np.ndarray | None = None,
                            radius: float | None = None, up_world: np.ndarray | None = None) -> None:
    """Initial view: from the first training camera's direction, level with the gravity up
    of the training cameras (reconstruct.upright), framing the sphere (``center`` [3], ``radius``;
    default: :func:`scene_center`, and the near..far depth range of the scene), with no camera
    frustum in front of the view (:func:`frame_view`). ``up_world`` [3] overrides the gravity up."""
    from reconstruct.upright import scene_up

    i = scene.train_ids[0] if scene.train_ids else 0
    T = scene.T_world_cam[i]
    if center is None:
        center = scene_center(scene)
    if radius is None:
        radius = 0.5 * float(scene.far - scene.near)
    fov = vertical_fov(scene.Ks[i], scene.height)
    # in front of the first camera's frustum (its image plane), or that image fills the view
    depth = frustum_depth(fov, scene.width / scene.height, default_frustum_scale(scene))
    frame_view(server, center=center, radius=radius, forward_world=np.asarray(center) - T[:3, 3],
               up_world=scene_up(scene).up_world if up_world is None else up_world, fov=fov,
               max_distance=float(np.linalg.norm(np.asarray(center) - T[:3, 3])) - 1.5 * depth)


def client_camera(camera: "viser.CameraHandle", *, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A connected client's current view as (T_world_cam [4, 4] OpenCV, K [3, 3]) at width x height."""
    T = np.eye(4)
    T[:3, :3] = wxyz_to_rotmat(np.asarray(camera.wxyz))
    T[:3, 3] = np.asarray(camera.position)
    return T, intrinsics_from_fov(float(camera.fov), width, height)
