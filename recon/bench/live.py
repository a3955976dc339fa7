"""What the live viewer costs a training run: steps/s with and without it, in the same run.

    recon bench live SCENE [--views 8] [--resolution 200] [--block 150] [--blocks 6] [--browser]

One trainer, alternating blocks of steps without and with the viewer hook (ABAB..., so slow
drifts such as other jobs on the machine hit both sides); densification is off so the Gaussian
count, and thus the cost of a step, stays constant. ``--browser`` connects headless chromium to
the viewer during the viewer blocks (on a CPU-only machine the browser's software WebGL then
competes with training for the same cores, which a user's GPU browser would not).

Reported: steps/s per block (wall clock), each viewer block's slowdown against the plain blocks
beside it, and process CPU seconds per step (all threads: a shared, loaded machine inflates wall
time for both sides alike, CPU time less so), plus the hook's own time on the training thread.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path


class _StepOnly:
    """The viewer hook without its end-of-run report (blocks end many times here)."""

    def __init__(self, hook) -> None:
        self.hook = hook

    def on_step(self, method, state, out) -> None:
        self.hook.on_step(method, state, out)

    def on_end(self, method, state) -> None:
        pass


def measure(scene_path: Path, *, views: int, resolution: int, block: int, blocks: int, every: int,
            n_random: int, browser: bool) -> dict:
    import numpy as np
    import torch

    from reconstruct.config import SplatTrainConfig, resolve
    from reconstruct.loop import LoopState, train_loop
    from reconstruct.splatting import SplatMethod
    from reconstruct.training import build_method
    from scenes import load_scene
    from viewer.live import LiveConfig, LiveViewerHook

    base = SplatTrainConfig(scene=scene_path, views=views, iters=block * blocks, device="cpu")
    base = dataclasses.replace(
        base,
        data=dataclasses.replace(base.data, resolution=resolution),
        init=dataclasses.replace(base.init, kind="random", n_random=n_random),
        densify=dataclasses.replace(base.densify, enabled=False),
    )
    cfg = resolve(base, device_type="cpu")
    torch.manual_seed(0)
    np.random.seed(0)
    scene = load_scene(scene_path, views=views, resolution=resolution)
    page = None
    with tempfile.TemporaryDirectory() as tmp:
        method = build_method(cfg, scene, torch.device("cpu"), cache_dir=Path(tmp))
        assert isinstance(method, SplatMethod)
        n_gaussians = len(method.model)
        hook = LiveViewerHook(method, port=0, config=LiveConfig(every=every))
        if browser:
            page = _open_browser(hook.viewer.url)
        rates: dict[str, list[float]] = {"plain": [], "viewer": []}
        cpu: dict[str, list[float]] = {"plain": [], "viewer": []}  # process CPU seconds per step (all threads)
        state = train_loop(method, LoopState(), until=20, show_progress=False)  # warm-up (numba compilation): not timed
        for b in range(blocks):
            use = b % 2 == 1
            key = "viewer" if use else "plain"
            t0, c0 = time.perf_counter(), time.process_time()
            state = train_loop(method, state, until=state.step + block, hooks=[_StepOnly(hook)] if use else [],
                               show_progress=False)
            rates[key].append(block / (time.perf_counter() - t0))
            cpu[key].append((time.process_time() - c0) / block)
            print(f"block {b} ({key}): {rates[key][-1]:.2f} steps/s, {1000 * cpu[key][-1]:.0f} CPU-ms/step",
                  file=sys.stderr, flush=True)
        stats = hook.live.stats()
        hook.live.close()
        hook.viewer.stop()
        if page is not None:
            page[1].close()
            page[0].stop()
    plain, viewed = statistics.mean(rates["plain"]), statistics.mean(rates["viewer"])
    # Each viewer block against the plain blocks on either side of it (cancels slow drifts).
    paired = []
    for j, v in enumerate(rates["viewer"]):
        around = rates["plain"][j:j + 2]
        paired.append(100.0 * (1.0 - v / statistics.mean(around)))
    return {
        "scene": str(scene_path), "views": views, "resolution": resolution, "gaussians": n_gaussians,
        "block_steps": block, "blocks": blocks, "push_every": every, "browser_connected": browser,
        "steps_per_s_plain": rates["plain"], "steps_per_s_viewer": rates["viewer"],
        "slowdown_percent": 100.0 * (1.0 - viewed / plain),
        "paired_slowdown_percent": paired,
        "cpu_s_per_step_plain": cpu["plain"], "cpu_s_per_step_viewer": cpu["viewer"],
        "cpu_overhead_percent": 100.0 * (statistics.mean(cpu["viewer"]) / statistics.mean(cpu["plain"]) - 1.0),
        "pushes": stats.pushes, "caller_ms_per_step": 1000.0 * stats.caller_s / max(stats.updates, 1),
        "worker_s": stats.worker_s,
    }


def _open_browser(url: str):
    from playwright.sync_api import sync_playwright

    p = sync_playwright().start()
    b = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
        "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"])
    page = b.new_page(viewport={"width": 960, "height": 540})
    page.goto(url)
    page.get_by_text("Connected", exact=True).wait_for(timeout=30_000)
    return p, b
