"""How many splats the browser client draws at interactive rates: frames per second while the
server orbits the view at 30 Hz, in headless chromium, for growing splat counts.

    recon bench browser [--counts 10000 50000 100000 300000] [--seconds 3]

A frame is counted when a requestAnimationFrame tick saw at least one WebGL draw call (viser
renders on demand, so idle ticks draw nothing). On a machine without a GPU chromium draws with
SwiftShader (software WebGL on the CPU), so these numbers are a floor for a user's browser.
"""

from __future__ import annotations

import json
import time

import numpy as np

FRAME_COUNTER_JS = """
(() => {
  window.__frames = 0;
  let drew = false;
  for (const proto of [WebGLRenderingContext.prototype, WebGL2RenderingContext.prototype]) {
    for (const name of ['drawArrays', 'drawElements', 'drawArraysInstanced', 'drawElementsInstanced']) {
      const orig = proto[name];
      if (!orig) continue;
      proto[name] = function (...args) { drew = true; return orig.apply(this, args); };
    }
  }
  const tick = () => { if (drew) { window.__frames++; drew = false; } requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
})();
"""


def blob_splats(n: int, *, seed: int = 0):
    """n Gaussians in a unit ball, colored by position, scale shrinking as n grows (a dense object)."""
    from reconstruct.splats import SH_C0, Splats

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    x = x / np.linalg.norm(x, axis=1, keepdims=True) * rng.uniform(0, 1, (n, 1)) ** (1 / 3)
    rgb = np.clip(0.5 + 0.5 * x, 0, 1)
    s = 1.5 / n ** (1 / 3)
    return Splats(
        means=x.astype(np.float32), quats=rng.normal(size=(n, 4)).astype(np.float32),
        log_scales=np.log(rng.uniform(0.3, 1.0, (n, 3)) * s).astype(np.float32),
        opacity_logits=np.full(n, 2.0, np.float32), sh0=((rgb - 0.5) / SH_C0).astype(np.float32),
        shN=np.zeros((n, 0, 3), np.float32),
    )


def measure(counts: list[int], *, seconds: float, width: int, height: int) -> list[dict]:
    from playwright.sync_api import sync_playwright

    from viewer.server import open_viewer, show_splats

    rows = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"])
        for n in counts:
            viewer = open_viewer(port=0, verbose=False)
            server = viewer.server
            server.initial_camera.position = (0.0, -3.0, 0.0)
            server.initial_camera.look_at = (0.0, 0.0, 0.0)
            show_splats(server, blob_splats(n))
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(90_000)
            page.add_init_script(FRAME_COUNTER_JS)
            t0 = time.perf_counter()
            try:
                rows.append(_measure_page(page, viewer, n, seconds=seconds, width=width, height=height, t0=t0))
            except Exception as err:  # noqa: BLE001 - a client too slow to answer is a result too
                rows.append({"splats": n, "fps_while_orbiting": None, "error": f"{type(err).__name__}: {err}"[:160],
                             "viewport": f"{width}x{height}"})
            print(json.dumps(rows[-1]), flush=True)
            page.close()
            viewer.stop()
        browser.close()
    return rows


def _measure_page(page, viewer, n: int, *, seconds: float, width: int, height: int, t0: float) -> dict:
    from io import BytesIO

    from PIL import Image

    server = viewer.server
    page.goto(viewer.url)
    page.get_by_text("Connected", exact=True).wait_for(timeout=60_000)
    # Loaded = the splats cover a patch left of the image center (clear of the GUI panel).
    deadline = time.monotonic() + 120
    while True:
        img = np.asarray(Image.open(BytesIO(page.screenshot(clip={
            "x": 0.42 * width - 15, "y": height / 2 - 15, "width": 30, "height": 30}))).convert("RGB"))
        if (np.abs(img.astype(int) - 255).max(-1) > 30).mean() > 0.3:
            break
        if time.monotonic() > deadline:
            raise TimeoutError("splats never appeared")
        page.wait_for_timeout(200)
    load_s = time.perf_counter() - t0
    # Orbit the client's camera from the server at 30 Hz; every move asks for a frame.
    client = next(iter(server.get_clients().values()))
    f0 = page.evaluate("window.__frames")
    t1 = time.perf_counter()
    k = 0
    while time.perf_counter() - t1 < seconds:
        a = 2 * np.pi * k / 90
        client.camera.position = (3.0 * np.sin(a), -3.0 * np.cos(a), 0.5)
        client.camera.look_at = (0.0, 0.0, 0.0)
        k += 1
        time.sleep(1 / 30)
    page.wait_for_timeout(50)
    frames = page.evaluate("window.__frames") - f0
    dt = time.perf_counter() - t1
    return {"splats": n, "fps_while_orbiting": frames / dt, "load_s": load_s, "camera_moves": k,
            "viewport": f"{width}x{height}"}
