"""Viewer pieces without a browser: geometry sent to viser, subsampling, ports, server renders,
run/file loading, the live-training hook."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from reconstruct.splats import Splats
from scenes.errors import ReconError
from viewer.demo import demo_scene, front_camera, two_clusters
from viewer.render import AdaptiveResolution, SplatRenderer, colorize_depth
from viewer.server import (
    client_camera,
    frustum_depth,
    intrinsics_from_fov,
    open_viewer,
    quats_to_rotmats,
    rotmat_to_wxyz,
    select_splats,
    show_splats,
    splat_covariances,
    wxyz_to_rotmat,
)


def random_splats(n: int, *, seed: int = 0, sh_degree: int = 0) -> Splats:
    rng = np.random.default_rng(seed)
    k = (sh_degree + 1) ** 2 - 1
    return Splats(
        means=rng.normal(size=(n, 3)).astype(np.float32),
        quats=rng.normal(size=(n, 4)).astype(np.float32),
        log_scales=rng.uniform(-4, -1, (n, 3)).astype(np.float32),
        opacity_logits=rng.normal(size=n).astype(np.float32),
        sh0=rng.normal(size=(n, 3)).astype(np.float32),
        shN=rng.normal(scale=0.1, size=(n, k, 3)).astype(np.float32),
    )


def test_covariance_is_R_S2_Rt():
    from scipy.spatial.transform import Rotation

    s = random_splats(50)
    cov = splat_covariances(s)
    q = s.quats / np.linalg.norm(s.quats, axis=1, keepdims=True)
    R = Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_matrix()  # scipy is x y z w
    expected = R @ np.apply_along_axis(np.diag, 1, np.exp(2 * s.log_scales.astype(np.float64))) @ R.transpose(0, 2, 1)
    np.testing.assert_allclose(cov, expected, rtol=1e-4, atol=1e-9)
    assert np.allclose(cov, cov.transpose(0, 2, 1))
    assert (np.linalg.eigvalsh(cov.astype(np.float64)) > 0).all()


def test_quaternion_roundtrip():
    for q in np.random.default_rng(1).normal(size=(20, 4)):
        R = quats_to_rotmats(q[None])[0]
        q2 = rotmat_to_wxyz(R)
        np.testing.assert_allclose(wxyz_to_rotmat(q2), R, atol=1e-9)


def test_select_splats_threshold_budget_deterministic():
    s = random_splats(1000, seed=3)
    keep = select_splats(s, min_opacity=0.5)
    assert (s.opacities[keep] >= 0.5).all() and (s.opacities[np.setdiff1d(np.arange(1000), keep)] < 0.5).all()
    top = select_splats(s, max_count=100)
    assert len(top) == 100 and np.all(np.diff(top) > 0)
    np.testing.assert_array_equal(top, select_splats(s, max_count=100))
    score = s.opacities * np.exp(s.log_scales.astype(np.float64).sum(1) * 2 / 3)
    assert score[top].min() >= np.sort(score)[-100] - 1e-12  # the 100 most visible
    both = select_splats(s, max_count=50, min_opacity=0.5)
    assert len(both) == 50 and set(both) <= set(keep)


def test_open_viewer_moves_off_a_taken_port_and_reports_it(caplog):
    import logging

    caplog.set_level(logging.INFO, logger="viewer")
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    taken = blocker.getsockname()[1]
    try:
        viewer = open_viewer(host="127.0.0.1", port=taken)
        try:
            assert viewer.port != taken
            assert any(f"http://127.0.0.1:{viewer.port}" in r.getMessage() and "was taken" in r.getMessage()
                       for r in caplog.records)
            with socket.create_connection(("127.0.0.1", viewer.port), timeout=5):
                pass  # really listening there
            handle = show_splats(viewer.server, two_clusters(10), min_opacity=0.5)
            assert handle.buffer.shape == (10, 8)  # only the 10 opaque red splats went out
        finally:
            viewer.stop()
    finally:
        blocker.close()


def test_client_camera_intrinsics():
    K = intrinsics_from_fov(np.deg2rad(60.0), 200, 100)
    assert np.isclose(K[1, 1], 50 / np.tan(np.deg2rad(30.0))) and K[0, 2] == 100 and K[1, 2] == 50

    class Cam:
        wxyz = rotmat_to_wxyz(front_camera()[:3, :3])
        position = front_camera()[:3, 3]
        fov = np.deg2rad(60.0)

    T, K2 = client_camera(Cam, width=200, height=100)
    np.testing.assert_allclose(T, front_camera(), atol=1e-9)
    np.testing.assert_allclose(K2, K)


def test_frustum_depth_matches_viser_normalization():
    # viser scales (x, y, z) = (tan(f/2) a, tan(f/2), 1) so that x y z / 3 = scale^3.
    fov, aspect, scale = 0.9, 1.5, 0.2
    d = frustum_depth(fov, aspect, scale)
    y = np.tan(fov / 2) * d
    assert np.isclose(y * aspect * y * d / 3, scale**3)


def test_adaptive_resolution_converges_to_target():
    res = AdaptiveResolution(target_s=0.2, scale=1.0)
    for _ in range(20):
        w, h = res.size(1000, 800)
        res.record(w * h * 1e-6)  # a renderer costing 1 us per pixel
    w, h = res.size(1000, 800)
    assert abs(w * h * 1e-6 - 0.2) / 0.2 < 0.1


def test_server_render_uses_view_dependent_sh():
    """The browser only draws the DC color; the server render adds the SH bands. A degree-1
    term that turns the red cluster blue when seen along +z must show up there."""
    base = two_clusters(150, splat_scale=0.08)
    n = len(base)
    shN = np.zeros((n, 3, 3), np.float32)
    C1 = 0.4886025119029199
    shN[:150, 1] = np.array([-1.0, 0.0, 1.0]) / C1  # band 1, z coefficient: +C1 z sh
    s = Splats(base.means, base.quats, base.log_scales, base.opacity_logits, base.sh0, shN)
    K = intrinsics_from_fov(np.deg2rad(50.0), 64, 48)
    img = SplatRenderer(s)(front_camera(), K, 64, 48)
    assert img.shape == (48, 64, 3)
    left, right = img[:, :32], img[:, 32:]
    blue_left = ((left[..., 2] > 0.6) & (left[..., 0] < 0.4)).sum()
    green_right = ((right[..., 1] > 0.5) & (right[..., 0] < 0.4)).sum()
    assert blue_left > 20 and green_right > 20, (blue_left, green_right)
    dc_only = SplatRenderer(s.with_sh_degree(0))(front_camera(), K, 64, 48)
    assert ((dc_only[:, :32, 0] > 0.6) & (dc_only[:, :32, 2] < 0.4)).sum() > 20  # red without SH


def test_depth_render_and_colorize():
    s = two_clusters(100, splat_scale=0.08)
    K = intrinsics_from_fov(np.deg2rad(50.0), 64, 48)
    depth = SplatRenderer(s)(front_camera(), K, 64, 48, depth=True)
    valid = np.isfinite(depth)
    assert valid.sum() > 100 and np.isnan(depth[0, 0])
    assert np.all(np.abs(depth[valid] - 4.0) < 1.0)  # clusters sit at z = 0, camera at z = -4
    ramp = np.tile(np.linspace(1.0, 5.0, 32), (4, 1))
    ramp[0, 0] = np.nan
    rgb = colorize_depth(ramp)
    assert rgb[0, 0].tolist() == [0, 0, 0]
    assert rgb[2, 1, 0] > rgb[2, 1, 2] and rgb[2, -1, 2] > rgb[2, -1, 0]  # near red, far blue


def test_load_target_files_and_errors(tmp_path):
    from pruning.formats import write_splats
    from viewer.loading import load_target

    s = two_clusters(20)
    for name in ("a.ply", "a.splat", "a.sog", "a.glb"):
        write_splats(tmp_path / name, s)
        t = load_target(tmp_path / name)
        assert len(t.splats) == 40 and t.scene is None
        if name == "a.sog":  # SOG stores the splats in its texture grid's order, positions on a 16-bit grid
            np.testing.assert_allclose(np.sort(t.splats.means, axis=0), np.sort(s.means, axis=0), atol=2e-3)
        else:
            np.testing.assert_allclose(t.splats.means, s.means, atol=1e-5)
    with pytest.raises(ReconError, match="no such file"):
        load_target(tmp_path / "missing.ply")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ReconError, match="not a splat file"):
        load_target(tmp_path / "notes.txt")
    (tmp_path / "run").mkdir()
    with pytest.raises(ReconError, match="no splats.ply"):
        load_target(tmp_path / "run")
    (tmp_path / "bad.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 5\n")
    with pytest.raises(ReconError):
        load_target(tmp_path / "bad.ply")


def test_load_run_folder(tmp_path):
    from pruning.artifact import CompactSplats, save_artifact
    from pruning.formats import write_splats
    from viewer.loading import load_target

    run = tmp_path / "run"
    run.mkdir()
    s = two_clusters(20)
    write_splats(run / "splats.ply", s)
    t = load_target(run)
    assert len(t.splats) == 40 and t.compressed is None and t.scene is None
    save_artifact(run / "compressed", CompactSplats.from_splats(s.subset(np.arange(30))))
    t = load_target(run)
    assert len(t.splats) == 40 and len(t.compressed) == 30
    np.testing.assert_allclose(t.compressed.means, s.means[:30], atol=2e-3)  # fp16 storage
    (run / "compressed" / "artifact.json").write_text("{")
    t = load_target(run)
    assert t.compressed is None and any("compressed" in n for n in t.notes)


def test_load_run_folder_brings_the_scene_cameras(tmp_path):
    from pruning.formats import write_splats
    from reconstruct.config import SplatTrainConfig, to_json
    from viewer.loading import load_target

    demo = Path(__file__).resolve().parents[1] / "data" / "demo"
    run = tmp_path / "run"
    run.mkdir()
    write_splats(run / "splats.ply", two_clusters(5))
    (run / "config.json").write_text(to_json(SplatTrainConfig(scene=demo, views=3)))
    t = load_target(run)
    assert t.scene is not None and len(t.scene.train_ids) == 3 and t.scene.test_ids
    assert t.background == tuple(float(c) for c in t.scene.background)
    (run / "config.json").write_text(to_json(SplatTrainConfig(scene=tmp_path / "gone", views=3)))
    t = load_target(run)
    assert t.scene is None and any("cameras not shown" in n for n in t.notes)


def test_recon_view_bad_input_is_one_line_exit_1(tmp_path):
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 5\nproperty float x\nend_header\n")
    out = subprocess.run(
        [sys.executable, "-m", "recon.cli", "view", str(bad), "--port", "0"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0], out.stderr


def test_live_viewer_rate_limit_snapshot_and_pause():
    import torch

    from viewer.live import LiveConfig, LiveViewer

    viewer = open_viewer(port=0, verbose=False)
    try:
        live = LiveViewer(viewer, scene=demo_scene(), config=LiveConfig(every=10, min_interval_s=0.0, text_interval_s=0.0, max_duty=1.0))
        params = {k: v.clone() for k, v in two_clusters(50).to_params().items()}
        pushed = []
        for step in range(35):
            if live.update(step, params, loss=1.0 / (step + 1), psnr=10.0 + step, n_gaussians=100):
                pushed.append(step)
                live.flush()
        assert pushed == [0, 10, 20, 30]
        # the duty-cycle limit spaces pushes by (time a push took) / max_duty
        limited = LiveViewer(viewer, config=LiveConfig(every=1, min_interval_s=0.0, max_duty=0.01))
        assert limited.update(0, params, 1.0, None, 100)
        limited.flush()
        took = limited.stats().worker_s
        assert not limited.update(1, params, 1.0, None, 100)  # within took / 0.01 of the last push
        time.sleep(min(took / 0.01 + 0.05, 5.0))
        assert limited.update(2, params, 1.0, None, 100)
        limited.flush()
        limited.close()
        assert live.stats().pushes == 4 and live.gui_step.value == "34"
        # the snapshot is a copy: changing params after update() does not change what was sent
        live.update(40, params, 0.1, None, 100)
        with torch.no_grad():
            params["means"] += 100.0
        live.flush()
        sent = viewer.server.scene._handle_from_node_name["/training/splats"]
        centers = sent.buffer[:, :3].copy().view(np.float32)
        assert np.abs(centers).max() < 50.0

        before = live.stats().pushes
        live.final(41, params, 100)  # pushed although the rate limit says no
        assert live.stats().pushes == before + 1 and live.gui_loss.value == "0.1000"

        live.pause()
        done = threading.Event()

        def trainer():
            live.wait_if_paused()
            done.set()

        threading.Thread(target=trainer, daemon=True).start()
        assert not done.wait(0.3)  # held while paused
        live.resume()
        assert done.wait(5.0)
        live.close()
    finally:
        viewer.stop()


def test_recon_view_serves_a_file_and_prints_the_real_port(tmp_path):
    import re
    import signal
    import urllib.request

    from pruning.formats import write_splats

    path = tmp_path / "clusters.splat"
    write_splats(path, two_clusters(30))
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    taken = blocker.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "recon.cli", "view", str(path), "--port", str(taken)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        url, deadline, seen = None, time.monotonic() + 60, []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            m = re.search(r"open (http://127\.0\.0\.1:(\d+))", line)
            if m:
                url, port = m.group(1), int(m.group(2))
            if "showing 60 splats" in line:
                break
        assert url is not None, "".join(seen)
        assert port != taken and f"port {taken} was taken" in "".join(seen)
        with urllib.request.urlopen(url, timeout=10) as page:
            assert b"<html" in page.read(2000).lower()  # viser's client is served there
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        blocker.close()


def _wait(condition, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_viewer_app_gui_changes_the_scene():
    from viewer.app import view

    viewer = open_viewer(port=0, verbose=False)
    try:
        app = view(viewer, splats=two_clusters(50), compressed=two_clusters(20, seed=1), scene=demo_scene())
        node = lambda: viewer.server.scene._handle_from_node_name["/splats"]  # noqa: E731
        assert app.shown_count == 100 and node().buffer.shape[0] == 100
        assert len(app.camera_handles) == 5 and all(h.visible for h in app.camera_handles)
        app.gui_version.value = "compressed"
        _wait(lambda: app.shown_count == 40 and node().buffer.shape[0] == 40, "the compressed version")
        app.gui_opacity.value = 0.5
        _wait(lambda: app.shown_count == 20, "the opacity threshold")
        app.gui_opacity.value = 0.0
        app.gui_budget.value = 7
        _wait(lambda: app.shown_count == 7 and node().buffer.shape[0] == 7, "the point budget")
        app.gui_cameras.value = False
        assert not any(h.visible for h in app.camera_handles)
        app.gui_axes.value = True
        assert viewer.server.scene.world_axes.visible
        app.close()
    finally:
        viewer.stop()


def test_nerf_run_is_rendered_on_the_server(tmp_path):
    """A NeRF run has no splats: `recon view` gets a render_fn built from the run's field."""

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from scene_fixtures import write_blender

    from scene_fixtures import train_run

    from reconstruct.config import NerfTrainConfig, OutputConfig
    from reconstruct.nerf.config import NerfConfig
    from reconstruct.nerf.method import field_from_state, render_image
    from viewer.loading import load_target

    scene_dir = tmp_path / "scene"
    write_blender(scene_dir, n_train=4, n_test=1, size=16)
    run = tmp_path / "run"
    tiny = NerfConfig(rays_per_batch=64, n_samples=16, log2_hashmap_size=8, n_levels=2, max_resolution=16,
                      grid_resolution=8)
    cfg = NerfTrainConfig(scene=scene_dir, views=None, iters=2, nerf=tiny, output=OutputConfig(eval_at_end=False))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny problem on a shared machine: one thread is faster
    try:
        train_run(cfg, run)
    finally:
        torch.set_num_threads(threads)
    target = load_target(run)
    assert target.splats is None and target.render_fn is not None and target.scene is not None
    s = target.scene
    i = s.test_ids[0]
    img = target.render_fn(s.T_world_cam[i], s.Ks[i], s.width, s.height)
    assert img.shape == (s.height, s.width, 3) and np.isfinite(img).all()
    state = torch.load(run / "checkpoint.pt", weights_only=True)["state"]
    field, grid = field_from_state(state, torch.device("cpu"))
    ref, _, _ = render_image(field, grid, s.Ks[i], s.T_world_cam[i], s.width, s.height, near=s.near, far=s.far,
                             background=s.background, n_samples=int(state["n_samples"]))
    np.testing.assert_allclose(img, ref.numpy(), atol=1e-5)
    depth = target.render_fn(s.T_world_cam[i], s.Ks[i], s.width, s.height, depth=True)
    assert depth.shape == (s.height, s.width)


def test_budget_slider_follows_the_shown_version():
    from viewer.app import view

    viewer = open_viewer(port=0, verbose=False)
    try:
        app = view(viewer, splats=two_clusters(50), compressed=two_clusters(20, seed=1), scene=demo_scene())
        assert int(app.gui_budget.max) == 100 and int(app.gui_budget.value) == 100
        app.gui_version.value = "compressed"
        _wait(lambda: app.shown_count == 40, "the compressed version")
        assert int(app.gui_budget.max) == 40 and int(app.gui_budget.value) == 40  # "all" stays "all"
        app.gui_version.value = "original"
        _wait(lambda: app.shown_count == 100, "the original version")
        assert int(app.gui_budget.max) == 100 and int(app.gui_budget.value) == 100
        app.gui_budget.value = 30  # a chosen budget is kept, capped by the new version's count
        _wait(lambda: app.shown_count == 30, "the budget")
        app.gui_version.value = "compressed"
        _wait(lambda: int(app.gui_budget.max) == 40 and app.shown_count == 30, "the compressed version at budget 30")
        app.close()
    finally:
        viewer.stop()


def test_show_splats_drops_non_finite_splats_and_sends_nothing_empty():
    viewer = open_viewer(port=0, verbose=False)
    try:
        s = two_clusters(10)
        means = s.means.copy()
        means[3] = np.nan
        bad = Splats(means, s.quats, s.log_scales, s.opacity_logits, s.sh0, s.shN)
        handle = show_splats(viewer.server, bad, name="/s")
        assert handle is not None and handle.buffer.shape[0] == 19
        assert show_splats(viewer.server, bad, name="/s", min_opacity=1.0) is None  # nothing left: node removed
        assert "/s" not in viewer.server.scene._handle_from_node_name
    finally:
        viewer.stop()


def test_start_view_is_level_with_the_gravity_up_and_frames_the_splats():
    from tests.scene_fixtures import leaning_rig_scene
    from viewer.app import ViewerConfig, view
    from viewer.server import splat_bounds

    # Blender-style: +z up, cameras looking down at the object from one side (their mean up leans)
    scene = leaning_rig_scene()
    base = random_splats(400, seed=3)
    splats = Splats(base.means * 0.4, base.quats, base.log_scales, base.opacity_logits, base.sh0, base.shN)  # inside the rig
    viewer = open_viewer(port=0, verbose=False)
    try:
        app = view(viewer, splats=splats, scene=scene, config=ViewerConfig(camera_images=False))
        cam = viewer.server.initial_camera
        eye, target, up = (np.asarray(v, np.float64) for v in (cam.position, cam.look_at, cam.up))
        fwd = (target - eye) / np.linalg.norm(target - eye)
        right = np.cross(fwd, up)
        assert abs(right @ [0, 0, 1]) < 1e-6, "the horizon is tilted"  # level: the image's x axis is horizontal
        assert up @ [0, 0, 1] > 0.5
        center, radius = splat_bounds(splats)
        assert np.allclose(target, center)
        # the bounding sphere fits in the vertical field of view
        assert radius / np.linalg.norm(target - eye) < np.sin(0.5 * cam.fov)
        # and the start camera is in front of the first camera's frustum, not behind its image
        assert np.linalg.norm(eye - center) < np.linalg.norm(scene.T_world_cam[0, :3, 3] - center)
        app.close()
    finally:
        viewer.stop()


@pytest.mark.parametrize("up", [None, (0.0, 0.0, 1.0)])
def test_a_splat_file_starts_level_with_the_ply_frame_up_or_the_one_given(up):
    from viewer.app import ViewerConfig, view
    from viewer.server import splat_bounds

    splats = random_splats(300, seed=5)
    viewer = open_viewer(port=0, verbose=False)
    try:
        app = view(viewer, splats=splats, config=ViewerConfig(up_world=up))
        cam = viewer.server.initial_camera
        eye, target, cam_up = (np.asarray(v, np.float64) for v in (cam.position, cam.look_at, cam.up))
        want = np.array([0.0, -1.0, 0.0]) if up is None else np.array(up)
        fwd = (target - eye) / np.linalg.norm(target - eye)
        assert abs(np.cross(fwd, cam_up) @ want) < 1e-6 and cam_up @ want > 0.5  # level, upright
        assert fwd @ want < 0  # looking a little down
        center, radius = splat_bounds(splats)
        assert np.allclose(target, center) and radius / np.linalg.norm(target - eye) < np.sin(0.5 * cam.fov)
        app.close()
    finally:
        viewer.stop()
