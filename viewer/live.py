"""Live training view: the trainer calls ``LiveViewer.update`` every step; the splats are pushed to
the browser every K steps (and at most once per ``min_interval_s``) on a background thread, the
step / loss / PSNR / count text is refreshed a few times a second, and pause / resume buttons
hold the trainer in ``wait_if_paused()``.

Overhead is measured, not assumed: ``caller_s`` is the time spent inside ``update`` on the
trainer's thread (snapshot copies included), ``worker_s`` the time the background thread spent
building and sending splats (it competes for the same cores).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

import numpy as np

from reconstruct.splats import Splats
from viewer.server import ViewerHandle, initial_view_from_scene, select_splats, show_cameras, show_splats

if TYPE_CHECKING:
    from scenes.types import SceneData

log = logging.getLogger(__name__)

_PARAM_NAMES = ("means", "quats", "scales", "opacities", "sh0", "shN")


@dataclass(frozen=True)
class LiveConfig:
    """How often the live view touches the trainer."""

    every: int = 100
    """Push the splats every this many steps."""
    min_interval_s: float = 1.0
    """... and no more often than this many seconds."""
    text_interval_s: float = 0.25
    """Refresh the step / loss / PSNR text at most this often."""
    max_count: int = 300_000
    """Most visible splats sent per push (keeps messages and browser sorting bounded)."""
    max_duty: float = 0.05
    """Share of time the background sender may be busy: after a push that took t seconds the
    next one waits at least t / max_duty (large scenes are pushed less often, training keeps its cores);
    1 = no limit."""


@dataclass(frozen=True)
class LiveStats:
    """What the live view cost so far."""

    updates: int
    """Calls to ``update``."""
    pushes: int
    """Splat sets sent to the browser."""
    caller_s: float
    """Seconds spent inside ``update`` on the trainer's thread."""
    worker_s: float
    """Seconds the background thread spent building and sending splats."""
    paused_s: float
    """Seconds the trainer waited in ``wait_if_paused``."""


def snapshot_params(params: Mapping) -> dict[str, np.ndarray]:
    """Copy the trainer's parameters (torch tensors or arrays, gsplat naming) to numpy now, so the
    optimizer can keep changing them while the copy is sent."""
    out = {}
    for name in _PARAM_NAMES:
        value = params[name]
        if hasattr(value, "detach"):
            value = value.detach().to("cpu").numpy()
        out[name] = np.array(value, dtype=np.float32, copy=True)
    return out


def splats_from_snapshot(snap: Mapping[str, np.ndarray]) -> Splats:
    """:class:`Splats` from a :func:`snapshot_params` dict (sh0 may be [N, 1, 3] or [N, 3])."""
    n = snap["means"].shape[0]
    shN = snap["shN"] if snap["shN"].ndim == 3 else snap["shN"].reshape(n, -1, 3)
    return Splats(
        means=snap["means"], quats=snap["quats"], log_scales=snap["scales"],
        opacity_logits=snap["opacities"].reshape(n), sh0=snap["sh0"].reshape(n, 3), shN=shN,
    )


class LiveViewer:
    """Live view of a training run on a :class:`ViewerHandle`; see the module docstring."""

    def __init__(self, viewer: ViewerHandle, *, scene: "SceneData | None" = None, config: LiveConfig = LiveConfig()) -> None:
        self.viewer = viewer
        self.server = viewer.server
        self.config = config
        self._resume = threading.Event()
        self._resume.set()
        self._pause_push = False  # push the splats at the next update after a pause click
        self._job: dict | None = None
        self._job_ready = threading.Event()
        self._closed = threading.Event()
        self._busy = False
        self._last_push_step: int | None = None
        self._last_push_t = -1e9
        self._next_push_t = -1e9  # duty-cycle limit, set by the sender after each push
        self._last_text_t = -1e9
        self._n_updates = 0
        self._n_pushes = 0
        self._caller_s = 0.0
        self._worker_s = 0.0
        self._paused_s = 0.0
        self.last_step = -1
        self._last_loss: float = float("nan")
        self._last_psnr: float | None = None
        if scene is not None:
            initial_view_from_scene(self.server, scene)
            show_cameras(self.server, scene, with_images=True)
        gui = self.server.gui
        with gui.add_folder("Training"):
            self.gui_step = gui.add_text("Step", "0", disabled=True)
            self.gui_loss = gui.add_text("Loss", "-", disabled=True)
            self.gui_psnr = gui.add_text("PSNR", "-", disabled=True)
            self.gui_count = gui.add_text("Gaussians", "0", disabled=True)
            self.gui_pause = gui.add_button("Pause training", icon=None)
            self.gui_resume = gui.add_button("Resume training", visible=False)
            self.gui_overhead = gui.add_text("Viewer cost", "-", disabled=True)
        self.gui_pause.on_click(lambda _: self.pause())
        self.gui_resume.on_click(lambda _: self.resume())
        self._worker = threading.Thread(target=self._push_loop, name="recon-live-viewer", daemon=True)
        self._worker.start()

    # -- pause / resume ----------------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return not self._resume.is_set()

    def pause(self) -> None:
        """Hold the trainer at its next ``wait_if_paused`` (also what the Pause button does)."""
        self._pause_push = True
        self._resume.clear()
        self.gui_pause.visible = False
        self.gui_resume.visible = True

    def resume(self) -> None:
        self._resume.set()
        self.gui_pause.visible = True
        self.gui_resume.visible = False

    def wait_if_paused(self, *, timeout: float | None = None) -> bool:
        """Block while paused (returns True if it waited). The trainer calls this once a step."""
        if self._resume.is_set():
            return False
        t0 = time.perf_counter()
        deadline = None if timeout is None else t0 + timeout
        while not self._resume.is_set() and not self._closed.is_set():
            left = 0.5 if deadline is None else min(0.5, deadline - time.perf_counter())
            if left <= 0:
                break
            self._resume.wait(timeout=left)
        self._paused_s += time.perf_counter() - t0
        return True

    # -- updates -----------------------------------------------------------------------------------

    def update(self, step: int, splats_params: Mapping, loss: float, psnr: float | None, n_gaussians: int) -> bool:
        """Record training ``step``; returns True when the splats were queued for the browser.

        ``splats_params``: the trainer's parameter dict (means [N,3], quats [N,4], scales [N,3]
        log, opacities [N] logit, sh0 [N,1,3], shN [N,K-1,3]); copied only on push steps.
        """
        t0 = time.perf_counter()
        self._n_updates += 1
        self.last_step = int(step)
        self._last_loss, self._last_psnr = loss, psnr
        now = time.monotonic()
        if now - self._last_text_t >= self.config.text_interval_s or self._pause_push:
            self._last_text_t = now
            self._set_text(step, loss, psnr, n_gaussians)
        due = (
            self._last_push_step is None
            or step - self._last_push_step >= self.config.every
        ) and now - self._last_push_t >= self.config.min_interval_s and now >= self._next_push_t
        pushed = False
        if (due or self._pause_push) and not self._busy:
            self._pause_push = False
            self._last_push_step = int(step)
            self._last_push_t = now
            self._busy = True
            self._job = {"step": int(step), "params": snapshot_params(splats_params)}
            self._job_ready.set()
            pushed = True
        self._caller_s += time.perf_counter() - t0
        return pushed

    def _set_text(self, step: int, loss: float, psnr: float | None, n_gaussians: int) -> None:
        # viser 1.1 defines `.value`'s setter apart from its getter, so mypy sees a read-only property.
        self.gui_step.value = f"{int(step)}"  # type: ignore[misc]
        self.gui_loss.value = f"{float(loss):.4f}"  # type: ignore[misc]
        self.gui_psnr.value = "-" if psnr is None else f"{float(psnr):.2f} dB"  # type: ignore[misc]
        self.gui_count.value = f"{int(n_gaussians):,}"  # type: ignore[misc]
        s = self.stats()
        if s.updates:
            self.gui_overhead.value = (  # type: ignore[misc]
                f"{1000 * s.caller_s / s.updates:.2f} ms/step here, {s.worker_s:.1f} s sending"
            )

    def _push_loop(self) -> None:
        while not self._closed.is_set():
            if not self._job_ready.wait(timeout=0.25):
                continue
            self._job_ready.clear()
            job, self._job = self._job, None
            if job is None:
                continue
            t0 = time.perf_counter()
            try:
                splats = splats_from_snapshot(job["params"])
                keep = select_splats(splats, max_count=self.config.max_count)
                show_splats(self.server, splats.subset(keep), name="/training/splats")
                self._n_pushes += 1
            finally:
                took = time.perf_counter() - t0
                self._worker_s += took
                if self.config.max_duty < 1.0:
                    self._next_push_t = time.monotonic() + took / max(self.config.max_duty, 1e-3)
                self._busy = False

    def final(self, step: int, splats_params: Mapping, n_gaussians: int, *, timeout: float = 30.0) -> None:
        """Send the final splats whatever the rate limit says (waits for a push in flight first)."""
        self.flush(timeout)
        self._pause_push = True
        self.update(step, splats_params, self._last_loss, self._last_psnr, n_gaussians)
        self.flush(timeout)

    def stats(self) -> LiveStats:
        return LiveStats(self._n_updates, self._n_pushes, self._caller_s, self._worker_s, self._paused_s)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the last queued push was sent (True) or ``timeout`` passed (False)."""
        deadline = time.monotonic() + timeout
        while (self._busy or self._job is not None) and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._busy

    def close(self) -> None:
        """Release a paused trainer and stop the background thread."""
        self._closed.set()
        self._resume.set()
        self._job_ready.set()
        self._worker.join(timeout=5.0)


class LiveViewerHook:
    """``recon train --viewer``: a loop hook (``on_step`` / ``on_end``, see reconstruct.loop) that
    serves a :class:`LiveViewer` on 127.0.0.1 (port 8080 or the next free one), feeds it every
    step and holds the loop while the browser's Pause button is down. It reads the splat method's
    parameters and never changes them."""

    def __init__(self, method, *, host: str = "127.0.0.1", port: int = 8080, config: LiveConfig = LiveConfig(),
                 start_step: int = 0) -> None:
        from viewer.server import open_viewer

        self.viewer = open_viewer(host=host, port=port)
        self.live = LiveViewer(self.viewer, scene=method.scene, config=config)
        self._step0 = start_step

    def on_step(self, method, state, out) -> None:
        self.live.update(state.step - 1, method.model.params, out.loss, out.psnr, out.count)
        self.live.wait_if_paused()

    def on_end(self, method, state) -> None:
        """Send the final splats, log what the viewer cost; the server keeps serving until exit."""
        self.live.final(state.step, method.model.params, len(method.model))
        s = self.live.stats()
        steps = max(state.step - self._step0, 1)
        log.info(
            "viewer: %d splat updates over %d steps; %.2f ms/step on the training thread, %.1f s sending in the "
            "background, %.1f s paused; still serving %s", s.pushes, steps, 1000 * s.caller_s / steps, s.worker_s,
            s.paused_s, self.viewer.url,
        )
