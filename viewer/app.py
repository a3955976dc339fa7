"""The `recon view` GUI: splats in the browser with budget / opacity sliders, cameras, original
vs compressed versions, and server-side renders (view-dependent SH color, depth, NeRF runs).

Single-user semantics: GUI state is shared by every connected client; a server render is sent
to the client that asked for it (or to every client following the camera).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from reconstruct.splats import Splats
from viewer.render import AdaptiveResolution, SplatRenderer, timed_render
from viewer.server import (
    ViewerHandle,
    client_camera,
    frame_view,
    initial_view_from_scene,
    select_splats,
    show_cameras,
    show_splats,
    splat_bounds,
)

if TYPE_CHECKING:
    import viser

    from reconstruct.raster import Backend
    from scenes.types import SceneData


@dataclass(frozen=True)
class ViewerConfig:
    """Defaults of the viewer GUI."""

    max_count: int = 1_000_000
    """Initial point budget sent to the browser (the browser sorts every splat each frame)."""
    min_opacity: float = 0.0
    """Initial opacity threshold."""
    camera_images: bool = True
    """Texture training frustums with their images."""
    render_target_s: float = 0.3
    """Seconds per server render that the adaptive resolution aims for when following the camera."""
    max_render_side: int = 1024
    """Longest side of a single "Render view" image (the client's viewport, capped)."""
    render_backend: Backend = "auto"
    """Rasterizer backend of server renders (reconstruct.raster.rasterize): auto picks by device."""
    file_fov_deg: float = 50.0
    """Vertical field of view of the start view of a splat file shown without cameras."""
    up_world: tuple[float, float, float] | None = None
    """Up of the view (orbiting keeps it level); None = the gravity up of the run's training
    cameras, or for a splat file without cameras the .ply frame's -y (what our exports use)."""


class ViewerApp:
    """Builds the scene and GUI on ``viewer`` and reacts to it; returned by :func:`view`."""

    def __init__(
        self,
        viewer: ViewerHandle,
        *,
        splats: Splats | None = None,
        compressed: Splats | None = None,
        scene: "SceneData | None" = None,
        render_fn: Callable[..., np.ndarray] | None = None,
        background: tuple[float, float, float] = (1.0, 1.0, 1.0),
        config: ViewerConfig = ViewerConfig(),
    ) -> None:
        assert splats is not None or render_fn is not None, "nothing to show: give splats or a render_fn"
        self.viewer = viewer
        self.server = viewer.server
        self.config = config
        self.scene = scene
        self.background = background
        self.versions: dict[str, Splats] = {}
        if splats is not None:
            self.versions["original"] = splats
        if compressed is not None:
            self.versions["compressed"] = compressed
        self.version = next(iter(self.versions), "")
        self._renderers: dict[str, Callable[..., np.ndarray]] = {}
        self.render_fn = render_fn  # NeRF-style server-only rendering
        self.resolution = AdaptiveResolution(target_s=config.render_target_s)
        self.shown_count = 0
        self.render_count = 0
        self._rendered = False  # a server render is the background right now
        self._refresh_wanted = False  # slider moved: resend the splats from the worker thread
        self._lock = threading.Lock()  # one scene rebuild / render at a time
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._pending: set[int] = set()
        self._splat_node: "viser.GaussianSplatHandle | None" = None
        self.camera_handles: list = []
        self._build_gui()
        self._build_scene()
        self.server.on_client_connect(self._on_connect)
        self._renderer_lock = threading.Lock()
        self._worker = threading.Thread(target=self._render_loop, name="recon-view-render", daemon=True)
        self._worker.start()
        if self.versions:
            threading.Thread(target=self._warm_up, name="recon-view-warm-up", daemon=True).start()

    # -- scene ---------------------------------------------------------------------------------

    def _build_scene(self) -> None:
        bounds = splat_bounds(self.versions[self.version]) if self.versions else None
        up = None if self.config.up_world is None else np.asarray(self.config.up_world, np.float64)
        if self.scene is not None:
            center, radius = bounds if bounds is not None else (None, None)
            initial_view_from_scene(self.server, self.scene, center=center, radius=radius, up_world=up)
            self.camera_handles = show_cameras(
                self.server, self.scene, with_images=self.config.camera_images, visible=self.gui_cameras.value
            )
        elif bounds is not None:  # a splat file: the .ply frame's up (-y) unless told, seen level from a little above
            from reconstruct.upright import PLY_UP, align_up

            up = PLY_UP if up is None else up / np.linalg.norm(up)
            forward = align_up(PLY_UP, target=up) @ np.array([0.0, 0.35, 1.0])  # the .ply frame's front, turned with up
            frame_view(self.server, center=bounds[0], radius=bounds[1], forward_world=forward, up_world=up,
                       fov=math.radians(self.config.file_fov_deg))
        self.refresh_splats()

    def refresh_splats(self) -> int:
        """Re-send the current version with the current budget and threshold; returns the count shown."""
        if not self.versions:
            return 0
        with self._lock:
            splats = self.versions[self.version]
            keep = select_splats(splats, max_count=int(self.gui_budget.value), min_opacity=float(self.gui_opacity.value))
            self._splat_node = show_splats(
                self.server, splats.subset(keep), name="/splats", visible=not (self.gui_follow.value or self._rendered)
            )
            self.shown_count = len(keep) if self._splat_node is not None else 0
        # The `.value = ...` ignores: viser 1.1 defines the setter apart from the getter, so mypy sees
        # a read-only property.
        self.gui_shown.value = f"{self.shown_count:,} of {len(splats):,}"  # type: ignore[misc]
        return self.shown_count

    # -- GUI -----------------------------------------------------------------------------------

    def _build_gui(self) -> None:
        gui = self.server.gui
        n_max = len(self.versions[self.version]) if self.versions else 0  # the slider follows the shown version
        has_splats = n_max > 0
        with gui.add_folder("Splats", visible=has_splats):
            if len(self.versions) > 1:
                self.gui_version = gui.add_dropdown("Version", tuple(self.versions), initial_value=self.version)
                self.gui_version.on_update(lambda _: self._switch_version())
            budget = max(1, min(self.config.max_count, n_max))
            self.gui_budget = gui.add_slider(
                "Point budget", min=1, max=max(n_max, 2), step=1, initial_value=budget,
                hint="Most visible splats sent to the browser (opacity x area); lower it on slow clients.",
            )
            self.gui_opacity = gui.add_slider(
                "Min opacity", min=0.0, max=1.0, step=0.01, initial_value=float(self.config.min_opacity),
                hint="Hide splats whose opacity is below this.",
            )
            self.gui_shown = gui.add_text("Shown", "0", disabled=True)
        # Sliders send a stream of values while dragged: resend once per burst, with the latest ones.
        self.gui_budget.on_update(lambda _: self._request_refresh())
        self.gui_opacity.on_update(lambda _: self._request_refresh())

        with gui.add_folder("Scene"):
            self.gui_cameras = gui.add_checkbox("Show cameras", self.scene is not None, disabled=self.scene is None)
            self.gui_axes = gui.add_checkbox("World frame", False)
        self.gui_cameras.on_update(lambda _: self._set_cameras_visible(self.gui_cameras.value))
        self.gui_axes.on_update(lambda _: setattr(self.server.scene.world_axes, "visible", self.gui_axes.value))

        server_only = not has_splats
        with gui.add_folder("Server render"):
            self.gui_render = gui.add_button("Render view", hint="Render this view on the server (view-dependent color).")
            self.gui_follow = gui.add_checkbox("Follow camera", server_only, disabled=server_only,
                                               hint="Re-render on the server whenever the view moves.")
            self.gui_depth = gui.add_checkbox("Depth", False)
            self.gui_live = gui.add_button("Show browser splats", visible=has_splats)
            self.gui_render_info = gui.add_text("Last render", "-", disabled=True)
        self.gui_render.on_click(self._on_render_click)
        self.gui_follow.on_update(lambda _: self._set_follow(self.gui_follow.value))
        self.gui_depth.on_update(lambda _: self._rerender())
        self.gui_live.on_click(lambda _: self._set_follow(False, clear=True))

    def _request_refresh(self) -> None:
        self._refresh_wanted = True
        self._wake.set()

    def _set_cameras_visible(self, visible: bool) -> None:
        for h in self.camera_handles:
            h.visible = visible

    def _switch_version(self) -> None:
        self.version = str(self.gui_version.value)
        self._fit_budget()
        self.refresh_splats()
        self._rerender()

    def _fit_budget(self) -> None:
        """The point-budget slider follows the shown version: its maximum is that version's splat
        count; a budget at the old maximum ("all") stays at the new one, a smaller one is kept
        (capped at the new maximum)."""
        n = len(self.versions[self.version])
        old_max, value = int(self.gui_budget.max), int(self.gui_budget.value)
        new_max = max(n, 2)
        new_value = max(1, n if value >= old_max else min(value, n))
        if new_max < old_max:  # shrinking: lower the value before the range, so it never lies outside
            self.gui_budget.value = new_value  # type: ignore[misc]
            self.gui_budget.max = new_max  # type: ignore[misc]
        else:
            self.gui_budget.max = new_max  # type: ignore[misc]
            self.gui_budget.value = new_value  # type: ignore[misc]

    def _set_follow(self, follow: bool, *, clear: bool = False) -> None:
        """Follow mode on: browser splats hidden, every camera move re-rendered on the server.
        Off: the last render stays until ``clear`` (the "Show browser splats" button)."""
        if self.gui_follow.value != follow:
            self.gui_follow.value = follow  # type: ignore[misc]  # may re-enter via on_update; idempotent
        if clear:
            self.server.scene.set_background_image(None)
            for client in self.server.get_clients().values():
                client.scene.set_background_image(None)
            self._rendered = False
        if self._splat_node is not None:
            self._splat_node.visible = not (follow or self._rendered)
        if follow:
            self._request_all()

    def _rerender(self) -> None:
        """Settings changed (depth, version): redo what is on screen."""
        if self.gui_follow.value:
            self._request_all()
        elif self._rendered:
            self._request_all(full=True)

    # -- server rendering ----------------------------------------------------------------------

    def renderer(self) -> Callable[..., np.ndarray]:
        """The render function of the current version (built once per version)."""
        if not self.versions:
            assert self.render_fn is not None
            return self.render_fn
        with self._renderer_lock:
            if self.version not in self._renderers:
                background = self.scene.background if self.scene is not None else self.background
                self._renderers[self.version] = SplatRenderer(
                    self.versions[self.version], background=background, backend=self.config.render_backend
                )
            return self._renderers[self.version]

    def _warm_up(self) -> None:
        """Build the renderer and render one tiny view in the background, so the first "Render
        view" click does not also pay for imports and kernel compilation."""
        try:
            T = np.eye(4)
            T[2, 3] = -1.0
            self.renderer()(T, np.array([[16.0, 0, 8], [0, 16.0, 8], [0, 0, 1]]), 16, 16)
        except Exception:  # noqa: BLE001 - a real render reports its own failure in the GUI
            pass

    def _on_connect(self, client: "viser.ClientHandle") -> None:
        @client.camera.on_update
        def _(_camera) -> None:
            if self.gui_follow.value:
                self._request(client.client_id)

    def _on_render_click(self, event) -> None:
        if event.client is None:
            return
        if self._splat_node is not None:
            self._splat_node.visible = False
        self._request(event.client.client_id, full=True)

    def _request(self, client_id: int, *, full: bool = False) -> None:
        with self._lock:
            self._pending.add(-client_id - 1 if full else client_id)
        self._wake.set()

    def _request_all(self, *, full: bool = False) -> None:
        for cid in self.server.get_clients():
            self._request(cid, full=full)

    def render_for(self, client: "viser.ClientHandle", *, full: bool) -> tuple[int, int, float]:
        """Render ``client``'s current view and send it as its background image.

        ``full``: the client's viewport (capped at ``max_render_side``); otherwise the adaptive
        size. Returns (width, height, seconds)."""
        camera = client.camera
        vw, vh = max(int(camera.image_width), 16), max(int(camera.image_height), 16)
        if full:
            s = min(1.0, self.config.max_render_side / max(vw, vh))
            w, h = max(16, int(vw * s)), max(16, int(vh * s))
        else:
            w, h = self.resolution.size(vw, vh)
        T_world_cam, K = client_camera(camera, width=w, height=h)
        image, seconds = timed_render(self.renderer(), T_world_cam, K, w, h, depth=bool(self.gui_depth.value))
        if not full:
            self.resolution.record(seconds)
        client.scene.set_background_image(image, format="jpeg", jpeg_quality=90)
        self._rendered = True
        self.render_count += 1
        self.gui_render_info.value = f"{w}x{h} in {seconds * 1000:.0f} ms"  # type: ignore[misc]
        return w, h, seconds

    def _render_loop(self) -> None:
        while not self._closed.is_set():
            if not self._wake.wait(timeout=0.25):
                continue
            self._wake.clear()
            if self._refresh_wanted:
                self._refresh_wanted = False
                self.refresh_splats()
            with self._lock:
                pending, self._pending = self._pending, set()
            clients = self.server.get_clients()
            for key in pending:
                full = key < 0
                client = clients.get(-key - 1 if full else key)
                if client is None:
                    continue
                try:
                    self.render_for(client, full=full)
                except Exception as err:  # a failed render must not kill the viewer
                    self.gui_render_info.value = f"render failed: {type(err).__name__}: {err}"[:200]  # type: ignore[misc]
                    if self._splat_node is not None and not self._rendered and not self.gui_follow.value:
                        self._splat_node.visible = True  # nothing to show instead of them

    def close(self) -> None:
        """Stop the render worker (the server itself is stopped through the handle)."""
        self._closed.set()
        self._wake.set()
        self._worker.join(timeout=5.0)


def view(
    viewer: ViewerHandle,
    *,
    splats: Splats | None = None,
    compressed: Splats | None = None,
    scene: "SceneData | None" = None,
    render_fn: Callable[..., np.ndarray] | None = None,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    config: ViewerConfig = ViewerConfig(),
) -> ViewerApp:
    """Show splats (and/or a server-side ``render_fn``) with cameras and the viewer GUI."""
    return ViewerApp(
        viewer, splats=splats, compressed=compressed, scene=scene, render_fn=render_fn,
        background=background, config=config,
    )
