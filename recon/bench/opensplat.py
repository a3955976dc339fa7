"""Our trainer against OpenSplat's CPU mode on the same input: CPU seconds per step and test PSNR.

    scripts/bench_opensplat.sh --opensplat PATH [--scene DIR] [--steps 1000] [--out DIR]
    (= python -m recon.bench.opensplat --opensplat PATH ...)

OpenSplat is not part of this project: PATH is a binary built apart (scripts/build_opensplat.sh builds
one from OpenSplat's public source, and bench_opensplat.sh calls it when no PATH is given), only run. The helper writes one input both trainers start from, runs each trainer as a
process of its own, scores both results with our renderer and prints a summary whose last line is
one JSON object.

The same for both trainers:
  * the training views and test views: those `recon train SCENE --views 3` picks (LLFF: every 8th
    frame held out), at the size it trains at (504x378 on fern: images_8);
  * the pixels: the images OpenSplat reads are written from what our loader serves, and its
    transforms.json carries our intrinsics at that size (OpenSplat --downscale-factor 1 and
    --num-downscales 0, so it trains at that size from its first step, as we do);
  * the initial points: our vanilla init (``reconstruct.init.initialize``: SIFT matches of the
    training views triangulated with their poses), computed once here. Ours starts from them with
    --init.kind ply (the Gaussians ``model_from_points`` makes of them, which is what the sfm init
    does with its points); OpenSplat reads them (xyz, 8-bit colors) through ``ply_file_path``;
  * steps, the D-SSIM weight (0.2) and the SH schedule (degree 3, one more every 1000 steps).

Each trainer's own (its recipe, left as it is): initial scales and rotations, learning rates,
the densification schedule and the background. OpenSplat densifies only at multiples of its
--refine-every (100) after its --warmup-length (500) and before steps / 2, so in up to 1200 steps
its default run never densifies; --peer-args passes extra options to its first pass (e.g.
"--warmup-length 250"). It trains against a fixed background
(0.613, 0.0101, 0.3984); its PSNR is scored on that background (psnr_peer) and on ours (black for
LLFF: psnr_peer_black_bg).

Frames: transforms.json is written in our scene's normalized world (``transform_matrix`` is the
OpenGL camera-to-world, ours times diag(1, -1, -1, 1)); OpenSplat recenters and rescales
internally and, with --keep-crs, writes its .ply back in the input's frame, so our renderer reads
it as it reads our own splats.ply.

Passes: 1. densification as each trainer has it; 2. densification off in both (ours
--densify.no-enabled; OpenSplat --warmup-length STEPS, which skips every split, duplicate, cull and
opacity reset), so both keep the initial Gaussian count.

CPU seconds: user + sys of each trainer's process tree (getrusage of the waited-for child), with
OMP_WAIT_POLICY=PASSIVE for both unless the environment sets it. cpu_s_per_step_* is the whole
process over the steps (start-up, loading and writing included); *_loop_* subtracts a 1-step run of
the same command: (CPU(N) - CPU(1)) / (N - 1).

Checks, each a one-line failure (the convention checks run first, before any timed run):
  * the run `recon train` wrote trained on the cameras and views written for OpenSplat;
  * scoring a .ply here reproduces `recon eval`'s PSNR on our own run's splats.ply;
  * conventions: short OpenSplat runs (--check-steps) withhold one test view and render it
    themselves (--val-render); our renderer draws the same view from each run's .ply and the two
    must agree to CONVENTION_MIN_PSNR, on inputs where the blending order cannot matter (see
    ``check_inputs``: small dots with their own colors, and the real init points in one color);
    half a pixel off and upside-down renders are the controls.

OpenSplat 1.1.5's CPU rasterizer (the one tested) does not blend in depth order: it sorts the
Gaussians on the raw pointer of a strided view of their depths. It trains and renders its own
views that way, while our renderer, like every splat viewer, sorts by depth; so psnr_peer is its
.ply as viewers show it, and peer_self_render_psnr (its own render of a test view against ours, on
the photo colors) says how far that is from what it trained against.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from recon.bench.common import REPO

OPENSPLAT_BACKGROUND = (0.6130, 0.0101, 0.3984)
"""The background OpenSplat trains against (model.hpp: nerfstudio's default), fixed."""

GL_FROM_CV = np.diag([1.0, -1.0, -1.0, 1.0])
"""Right-multiplying an OpenCV camera-to-world by this gives the OpenGL one, and back."""

CONVENTION_MIN_PSNR = 45.0
"""Our render of a check run's .ply against OpenSplat's own render of it (8-bit PNG, so at most about 55
dB): at least this, in dB (a half-pixel error gives about 44 dB on the dots of fern, a flip under 35)."""

POINTS_FILE = "points.ply"
TRANSFORMS_FILE = "transforms.json"


def frame_name(frame: int) -> str:
    return f"frame_{frame:05d}.png"


# ---------------------------------------------------------------------------------------- the input


def write_points_ply(path: Path, points: np.ndarray, colors: np.ndarray) -> None:
    """ASCII .ply of ``points`` [P, 3] (written as float32, exactly) and ``colors`` [P, 3] uint8: the
    layout OpenSplat's reader takes (x y z, then contiguous red green blue)."""
    pts = np.asarray(points, dtype=np.float32)
    cols = np.asarray(colors)
    assert pts.ndim == 2 and pts.shape[1] == 3 and cols.shape == pts.shape and cols.dtype == np.uint8
    head = ["ply", "format ascii 1.0", f"element vertex {len(pts)}", "property float x", "property float y",
            "property float z", "property uchar red", "property uchar green", "property uchar blue", "end_header"]
    rows = [f"{x!r} {y!r} {z!r} {r} {g} {b}" for (x, y, z), (r, g, b) in
            zip(pts.astype(np.float64).tolist(), cols.astype(int).tolist())]
    path.write_text("\n".join(head + rows) + "\n")


def read_points_ply(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(points [P, 3] float32, colors [P, 3] uint8) of a file ``write_points_ply`` wrote."""
    lines = path.read_text().splitlines()
    end = lines.index("end_header")
    n = int(next(ln for ln in lines if ln.startswith("element vertex")).split()[2])
    table = np.array([ln.split() for ln in lines[end + 1:end + 1 + n]], dtype=np.float64).reshape(n, 6)
    return table[:, :3].astype(np.float32), table[:, 3:].astype(np.uint8)


def colors_to_u8(colors: np.ndarray) -> np.ndarray:
    """[P, 3] colors in [0, 1] (pixels of 8-bit images) as uint8."""
    return np.clip(np.round(np.asarray(colors, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def write_input(folder: Path, scene, frames: list[int], points: np.ndarray, colors: np.ndarray) -> list[str]:
    """A nerfstudio folder OpenSplat reads: images/ (the frames as our loader serves them, PNG),
    transforms.json (per-frame pinhole intrinsics, OpenGL camera-to-world in our normalized world,
    ``ply_file_path``) and the points. Returns the image names, in ``frames`` order."""
    from PIL import Image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    entries, names = [], []
    for i in frames:
        name = frame_name(i)
        pixels = np.clip(np.round(np.asarray(scene.image(i), dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / "images" / name)
        K = np.asarray(scene.Ks[i], dtype=np.float64)
        entries.append({
            "file_path": f"images/{name}", "w": int(scene.width), "h": int(scene.height),
            "fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2]),
            "k1": 0.0, "k2": 0.0, "k3": 0.0, "p1": 0.0, "p2": 0.0,
            "transform_matrix": (np.asarray(scene.T_world_cam[i], dtype=np.float64) @ GL_FROM_CV).tolist(),
        })
        names.append(name)
    write_points_ply(folder / POINTS_FILE, points, colors_to_u8(colors))
    meta = {"camera_model": "OPENCV", "ply_file_path": POINTS_FILE, "frames": entries}
    (folder / TRANSFORMS_FILE).write_text(json.dumps(meta, indent=1))
    return names


@dataclasses.dataclass
class InputCameras:
    """What a folder ``write_input`` wrote says, back in our conventions."""

    names: list[str]
    T_world_cam: np.ndarray
    """[F, 4, 4] OpenCV camera-to-world."""
    Ks: np.ndarray
    """[F, 3, 3]."""
    width: int
    height: int
    points: np.ndarray
    colors: np.ndarray


def read_input(folder: Path) -> InputCameras:
    meta = json.loads((folder / TRANSFORMS_FILE).read_text())
    frames = meta["frames"]
    Ks = np.zeros((len(frames), 3, 3))
    Ks[:, 0, 0] = [f["fl_x"] for f in frames]
    Ks[:, 1, 1] = [f["fl_y"] for f in frames]
    Ks[:, 0, 2] = [f["cx"] for f in frames]
    Ks[:, 1, 2] = [f["cy"] for f in frames]
    Ks[:, 2, 2] = 1.0
    T = np.array([f["transform_matrix"] for f in frames], dtype=np.float64) @ GL_FROM_CV
    sizes = {(f["w"], f["h"]) for f in frames}
    assert len(sizes) == 1, sizes
    (w, h), = sizes
    points, colors = read_points_ply(folder / meta["ply_file_path"])
    return InputCameras([Path(f["file_path"]).name for f in frames], T, Ks, int(w), int(h), points, colors)


def check_input(folder: Path, scene, frames: list[int]) -> None:
    """The cameras and images of the folder are the scene's ``frames`` (raises otherwise)."""
    from PIL import Image

    got = read_input(folder)
    if got.names != [frame_name(i) for i in frames]:
        raise BenchError(f"{folder}: frames {got.names}, expected {[frame_name(i) for i in frames]}")
    if (got.width, got.height) != (scene.width, scene.height):
        raise BenchError(f"{folder}: size {got.width}x{got.height}, scene {scene.width}x{scene.height}")
    if not np.allclose(got.T_world_cam, np.asarray(scene.T_world_cam)[frames], atol=1e-9):
        raise BenchError(f"{folder}: poses differ from the scene's")
    if not np.allclose(got.Ks, np.asarray(scene.Ks)[frames], atol=1e-9):
        raise BenchError(f"{folder}: intrinsics differ from the scene's")
    for name, i in zip(got.names, frames):
        img = np.asarray(Image.open(folder / "images" / name).convert("RGB"), dtype=np.float32) / 255.0
        if img.shape != (scene.height, scene.width, 3) or np.abs(img - scene.image(i)).max() > 1e-6:
            raise BenchError(f"{folder}/images/{name}: pixels differ from frame {i} as our loader serves it")


class BenchError(RuntimeError):
    """A check of the bench failed (one line)."""


# ---------------------------------------------------------------------------------------- running


def timed(cmd: list[str], log: Path, env: dict) -> dict:
    """Run ``cmd`` (stdout and stderr into ``log``); its CPU seconds (user + sys of the child and the
    children it waited for), wall seconds, peak RSS and the load average around it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open(log, "w") as f:
        f.write("$ " + shlex.join(cmd) + "\n")
        f.flush()
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if rc != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise BenchError(f"{cmd[0]} exited with {rc} (log {log}): {tail[0]}")
    user, sys_ = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    return {"cpu_s": user + sys_, "user_s": user, "sys_s": sys_, "wall_s": wall,
            "max_rss_mb": after.ru_maxrss / 1024.0, "load_before": load0, "load_after": os.getloadavg()[0]}


def last_json_line(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise BenchError(f"no JSON line in: {text[-300:]!r}")


# ---------------------------------------------------------------------------------------- scoring


def score_ply(path: Path, scene, *, background: tuple[float, float, float] | None = None) -> dict:
    """PSNR/SSIM of a 3DGS .ply on the scene's test views, through the code `recon eval` runs
    (``read_ply`` + ``reconstruct.evaluate.evaluate``); ``background`` replaces the scene's."""
    import torch

    from reconstruct.evaluate import evaluate
    from reconstruct.ply import read_ply

    if background is not None:
        scene = dataclasses.replace(scene, background=tuple(float(c) for c in background))
    splats = read_ply(path)
    r = evaluate(splats, scene, device=torch.device("cpu"), with_lpips=False)
    return {"psnr": r["psnr"], "ssim": r["ssim"], "n_gaussians": len(splats),
            "per_view": [round(v["psnr"], 3) for v in r["per_view"]]}


def convention_check(ply: Path, scene, frame: int, opensplat_render: Path) -> dict:
    """Our render of ``frame`` from ``ply`` (on OpenSplat's background) against OpenSplat's own render
    of it; the controls: ours with the principal point moved by half a pixel, and ours upside down."""
    import torch
    from PIL import Image

    from reconstruct.evaluate import render_splats
    from reconstruct.metrics import psnr
    from reconstruct.ply import read_ply

    scene = dataclasses.replace(scene, background=OPENSPLAT_BACKGROUND)
    splats = read_ply(ply)
    theirs = torch.as_tensor(np.asarray(Image.open(opensplat_render).convert("RGB"), dtype=np.float32) / 255.0)
    if theirs.shape != (scene.height, scene.width, 3):
        raise BenchError(f"{opensplat_render}: {tuple(theirs.shape)}, expected {(scene.height, scene.width, 3)}")
    ours, _ = render_splats(splats, scene, frame)
    K = np.array(scene.Ks[frame], dtype=np.float64)
    K[0, 2] += 0.5
    K[1, 2] += 0.5
    shifted, _ = render_splats(splats, scene, frame, K=K)
    flipped = torch.flip(ours, dims=(0,))
    gt = torch.as_tensor(scene.image(frame))
    return {"frame": frame, "psnr_vs_opensplat_render": psnr(ours, theirs),
            "control_half_pixel_shift": psnr(shifted, theirs), "control_upside_down": psnr(flipped, theirs),
            "opensplat_render_vs_photo": psnr(theirs, gt), "n_gaussians": len(splats)}


DOT_PX = 1.0
"""Spacing, in pixels of the checked view, of the four points of one dot of the dots check."""

CHECKS = ("dots", "cover", "photo")
"""The convention-check runs: see ``check_inputs``."""


def dot_clusters(points: np.ndarray, scene, frame: int, *, px: float = DOT_PX) -> np.ndarray:
    """[4P, 3]: each point and three more at ``px`` pixels' worth of distance (at its depth in
    ``frame``) along the world axes. A trainer that starts each Gaussian at the mean distance to its
    three nearest neighbours starts every dot about ``px`` pixels wide, and dots far apart do not
    overlap."""
    T_cam_world = np.linalg.inv(np.asarray(scene.T_world_cam[frame], dtype=np.float64))
    pts = np.asarray(points, dtype=np.float64)
    depth = pts @ T_cam_world[:3, :3].T[:, 2] + T_cam_world[2, 3]
    eps = (px * np.abs(depth) / float(scene.Ks[frame][0, 0]))[:, None]
    return np.concatenate([pts, pts + eps * [1.0, 0.0, 0.0], pts + eps * [0.0, 1.0, 0.0], pts + eps * [0.0, 0.0, 1.0]])


def check_inputs(scene, frame: int, points: np.ndarray, colors: np.ndarray, *, seed: int) -> dict:
    """Points and colors of the three convention checks (the same cameras plus ``frame``):

    dots: the init points as small dots (``dot_clusters``), one random color per dot. Dots barely
    overlap, so the blending order does not matter; small and sharp, they show a pixel-centre or
    principal-point error (the control moves ours by half a pixel) and wrong colors;
    cover: the init points, one color for all. Then the image is background + (1 - T)(color -
    background) in any blending order: the large, overlapping Gaussians of the real init check
    positions, scales and opacities;
    photo: the init points with their colors, as the bench trains them (reported, not checked:
    where colors differ, the blending order shows)."""
    rng = np.random.default_rng(seed)
    n = len(points)
    dot_colors = np.tile(np.round(rng.uniform(0.0, 1.0, (n, 3)) * 255.0) / 255.0, (4, 1))
    one = np.broadcast_to(colors_to_u8(colors).mean(0).round() / 255.0, np.shape(colors))
    return {"dots": (dot_clusters(points, scene, frame), dot_colors), "cover": (points, one),
            "photo": (points, colors)}


# ---------------------------------------------------------------------------------------- the bench


def ours_args(scene: Path, *, views: int, steps: int, downscale: str) -> list[str]:
    """`recon train` arguments both the init and the timed runs share."""
    return [str(scene), "--views", str(views), "--iters", str(steps), "--preset", "vanilla",
            "--downscale", downscale, "--device", "cpu"]


def prepare(out: Path, args: argparse.Namespace) -> dict:
    """The shared input: scene as `recon train` reads it, our vanilla init points, the folders."""
    from recon.train import parse_train
    from reconstruct.init import initialize
    from reconstruct.ply import write_ply
    from reconstruct.poses import estimated, training_scene
    from reconstruct.splatting import model_from_points

    import torch

    from reconstruct.config import SplatTrainConfig

    cfg = parse_train(ours_args(args.scene, views=args.views, steps=args.steps, downscale=args.downscale)).cfg
    assert isinstance(cfg, SplatTrainConfig), cfg
    if estimated(cfg):
        raise BenchError(f"{args.scene}: needs a posed dataset (recon train would estimate its poses)")
    scene = training_scene(cfg, workdir=out)
    if scene.distortion is not None and np.abs(scene.distortion).max() > 0:
        raise BenchError(f"{args.scene}: distorted images (the bench writes pinhole cameras)")
    warnings = []
    off = np.abs(np.asarray(scene.Ks)[:, :2, 2] - np.array([scene.width, scene.height]) / 2.0).max()
    if off > 1e-6:
        warnings.append(f"principal point {off:.2f} px off the image centre: OpenSplat's CPU rasterizer "
                        "places it at the centre")
    train = list(scene.train_ids)
    check_frame = int(scene.test_ids[len(scene.test_ids) // 2])
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    init = initialize(cfg.init, scene, seed=cfg.seed, cache_dir=None)
    if init.kind != "sfm":
        warnings.append(f"vanilla init fell back: {init.how}")
    model = model_from_points(init.points, init.colors, init=cfg.init, optim=cfg.optim, scene=scene,
                              device=torch.device("cpu"))
    init_ply = out / "init_ours.ply"
    write_ply(init_ply, model.splats())
    write_input(out / "input", scene, train, init.points, init.colors)
    check_input(out / "input", scene, train)
    for name, (points, colors) in check_inputs(scene, check_frame, init.points, init.colors, seed=cfg.seed).items():
        write_input(out / f"input_{name}", scene, [*train, check_frame], points, colors)
        check_input(out / f"input_{name}", scene, [*train, check_frame])
    return {"scene": scene, "train": train, "test": list(scene.test_ids), "check_frame": check_frame,
            "init_ply": init_ply, "init": init.how, "n_init": int(len(init.points)), "warnings": warnings,
            "size": [scene.width, scene.height]}


def check_same_scene(run_dir: Path, prep: dict):
    """The scene the run trained on (its config read back), checked against what OpenSplat got."""
    from reconstruct.run import Run

    rscene = Run.open(run_dir).scene()
    s = prep["scene"]
    same = (list(rscene.train_ids) == prep["train"] and list(rscene.test_ids) == prep["test"]
            and (rscene.width, rscene.height) == (s.width, s.height)
            and np.allclose(rscene.T_world_cam, s.T_world_cam, atol=1e-9) and np.allclose(rscene.Ks, s.Ks, atol=1e-9))
    if not same:
        raise BenchError(f"{run_dir}: recon train trained on other views or cameras than the ones written for OpenSplat")
    check_input(run_dir.parent / "input", rscene, list(rscene.train_ids))
    return rscene


def run_bench(args: argparse.Namespace) -> dict:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])  # recon = this checkout
    py = args.python
    peer = str(Path(args.opensplat).resolve())
    N = args.steps
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    version = subprocess.run([peer, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    say(f"[bench] OpenSplat {version or '(no --version output)'}: {peer}")
    say(f"[bench] preparing the shared input in {out}")
    prep = prepare(out, args)
    say(f"[bench] init: {prep['init']}; train views {prep['train']}, test views {prep['test']}, "
        f"{prep['size'][0]}x{prep['size'][1]}")
    base = ours_args(args.scene, views=args.views, steps=N, downscale=args.downscale)

    def ours_cmd(run: Path, extra: list[str], steps: int = N) -> list[str]:
        argv = [*base, "--init.kind", "ply", "--init.ply", str(prep["init_ply"]), "--output.no-eval-at-end",
                "--out", str(run), "--overwrite", *extra]
        argv[argv.index("--iters") + 1] = str(steps)
        return [py, "-m", "recon.cli", "train", *argv]

    def peer_cmd(folder: Path, ply: Path, extra: list[str], steps: int = N) -> list[str]:
        ply.parent.mkdir(parents=True, exist_ok=True)
        return [peer, str(folder), "--cpu", "-n", str(steps), "--downscale-factor", "1", "--num-downscales", "0",
                "--keep-crs", "-o", str(ply), *extra]

    check_steps = max(10, args.check_steps // 10 * 10)  # OpenSplat renders its validation view every 10 steps
    say(f"[bench] convention checks: OpenSplat renders test view {prep['check_frame']} after {check_steps} steps")
    for name in CHECKS:
        (out / f"check_{name}" / "val").mkdir(parents=True, exist_ok=True)
        timed(peer_cmd(out / f"input_{name}", out / f"check_{name}" / "splat.ply",
                       ["--val", "--val-image", frame_name(prep["check_frame"]), "--val-render",
                        str(out / f"check_{name}" / "val")], check_steps),
              out / "logs" / f"peer_check_{name}.log", env)

    conv = {name: convention_check(out / f"check_{name}" / "splat.ply", prep["scene"], prep["check_frame"],
                                   out / f"check_{name}" / "val" / f"{check_steps}.png") for name in CHECKS}
    for name in ("dots", "cover"):
        if conv[name]["psnr_vs_opensplat_render"] < CONVENTION_MIN_PSNR:
            raise BenchError(f"convention check ({name}): our render of OpenSplat's .ply differs from its own render "
                             f"of test view {prep['check_frame']} ({conv[name]['psnr_vs_opensplat_render']:.1f} dB < "
                             f"{CONVENTION_MIN_PSNR} dB): camera, axis or .ply conventions do not match")
    if conv["dots"]["psnr_vs_opensplat_render"] - conv["dots"]["control_half_pixel_shift"] < 3.0:
        prep["warnings"].append("the dots check hardly sees a half-pixel shift "
                                f"({conv['dots']['control_half_pixel_shift']:.1f} dB against "
                                f"{conv['dots']['psnr_vs_opensplat_render']:.1f} dB)")

    passes = {"densify": ([], shlex.split(args.peer_args)),
              "no_densify": (["--densify.no-enabled"], ["--warmup-length", str(N)])}
    cpu: dict = {}
    runs: dict = {}
    for name, (ours_extra, peer_extra) in passes.items():
        runs[f"ours_{name}"] = out / f"ours_{name}"
        say(f"[bench] ours, {name}: {N} steps")
        cpu[f"ours_{name}"] = timed(ours_cmd(runs[f"ours_{name}"], ours_extra), out / "logs" / f"ours_{name}.log", env)
        runs[f"peer_{name}"] = out / f"peer_{name}" / "splat.ply"
        say(f"[bench] OpenSplat, {name}: {N} steps")
        cpu[f"peer_{name}"] = timed(peer_cmd(out / "input", runs[f"peer_{name}"], peer_extra),
                                    out / "logs" / f"peer_{name}.log", env)
        if "Using CPU" not in (out / "logs" / f"peer_{name}.log").read_text(errors="replace"):
            raise BenchError(f"{peer} did not say 'Using CPU' (log {out / 'logs' / f'peer_{name}.log'})")
        (out / "timings.json").write_text(json.dumps(cpu, indent=1))  # kept if a later stage fails
    if N > 1:
        say("[bench] one-step runs of both (start-up cost)")
        cpu["ours_1step"] = timed(ours_cmd(out / "ours_1step", [], 1), out / "logs" / "ours_1step.log", env)
        cpu["peer_1step"] = timed(peer_cmd(out / "input", out / "peer_1step" / "splat.ply", [], 1),
                                  out / "logs" / "peer_1step.log", env)
    say("[bench] scoring")
    rscene = check_same_scene(runs["ours_densify"], prep)
    check_same_scene(runs["ours_no_densify"], prep)
    scores: dict = {}
    for name in passes:
        res = subprocess.run([py, "-m", "recon.cli", "eval", str(runs[f"ours_{name}"]), "--json"], env=env,
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise BenchError(f"recon eval {runs[f'ours_{name}']} failed: {(res.stderr or res.stdout).strip()[-300:]}")
        official = last_json_line(res.stdout)
        mine = score_ply(runs[f"ours_{name}"] / "splats.ply", rscene)
        if abs(mine["psnr"] - official["psnr"]) > 1e-4:
            raise BenchError(f"scoring a .ply here gives {mine['psnr']:.4f} dB on our {name} run, recon eval "
                             f"{official['psnr']:.4f} dB: the peer's figure would not be comparable")
        scores[f"ours_{name}"] = {**mine, "recon_eval_psnr": official["psnr"]}
        scores[f"peer_{name}"] = score_ply(runs[f"peer_{name}"], rscene, background=OPENSPLAT_BACKGROUND)
        scores[f"peer_{name}_black_bg"] = score_ply(runs[f"peer_{name}"], rscene)
    def per_step(key: str) -> float:
        return cpu[key]["cpu_s"] / N

    def loop(key: str) -> float | None:
        one = key.split("_")[0] + "_1step"
        return (cpu[key]["cpu_s"] - cpu[one]["cpu_s"]) / (N - 1) if one in cpu else None

    result = {
        "cpu_s_per_step_ours": per_step("ours_densify"),
        "cpu_s_per_step_peer": per_step("peer_densify"),
        "psnr_ours": scores["ours_densify"]["psnr"],
        "psnr_peer": scores["peer_densify"]["psnr"],
        "load_avg": load_start[0],
        "steps": N,
        "gaussians_ours": scores["ours_densify"]["n_gaussians"],
        "gaussians_peer": scores["peer_densify"]["n_gaussians"],
        "psnr_peer_black_bg": scores["peer_densify_black_bg"]["psnr"],
        "cpu_s_per_step_loop_ours": loop("ours_densify"),
        "cpu_s_per_step_loop_peer": loop("peer_densify"),
        "nodensify_cpu_s_per_step_ours": per_step("ours_no_densify"),
        "nodensify_cpu_s_per_step_peer": per_step("peer_no_densify"),
        "nodensify_cpu_s_per_step_loop_ours": loop("ours_no_densify"),
        "nodensify_cpu_s_per_step_loop_peer": loop("peer_no_densify"),
        "nodensify_psnr_ours": scores["ours_no_densify"]["psnr"],
        "nodensify_psnr_peer": scores["peer_no_densify"]["psnr"],
        "nodensify_psnr_peer_black_bg": scores["peer_no_densify_black_bg"]["psnr"],
        "nodensify_gaussians_ours": scores["ours_no_densify"]["n_gaussians"],
        "nodensify_gaussians_peer": scores["peer_no_densify"]["n_gaussians"],
        "init_points": prep["n_init"],
        "train_views": prep["train"],
        "test_views": prep["test"],
        "image_size": prep["size"],
        "convention_dots_psnr": conv["dots"]["psnr_vs_opensplat_render"],
        "convention_dots_half_pixel_shift_psnr": conv["dots"]["control_half_pixel_shift"],
        "convention_cover_psnr": conv["cover"]["psnr_vs_opensplat_render"],
        "peer_self_render_psnr": conv["photo"]["psnr_vs_opensplat_render"],
        "load_avg_1_5_15_start": list(load_start),
        "load_avg_end": list(os.getloadavg()),
        "omp_wait_policy": env.get("OMP_WAIT_POLICY"),
        "peer_args": args.peer_args,
        "peer_version": version,
        "warnings": prep["warnings"],
    }
    detail = {"result": result, "cpu": cpu, "scores": scores, "convention": conv, "init": prep["init"],
              "scene": str(Path(args.scene).resolve()), "opensplat": peer}
    (out / "bench.json").write_text(json.dumps(detail, indent=1))
    return detail


def summary(detail: dict) -> str:
    r, cpu, sc, conv = detail["result"], detail["cpu"], detail["scores"], detail["convention"]

    def f(x, spec=".3f"):
        return "-" if x is None else format(x, spec)

    lines = [
        f"scene {detail['scene']}  views {r['train_views']} (test {r['test_views']})  "
        f"{r['image_size'][0]}x{r['image_size'][1]}  {r['steps']} steps",
        f"same init for both: {detail['init']}",
        f"load average at start {r['load_avg']:.2f} (end {r['load_avg_end'][0]:.2f}); OMP_WAIT_POLICY={r['omp_wait_policy']}",
        "",
        f"{'':30}{'CPU s/step':>11}{'loop s/step':>12}{'wall s':>8}{'Gaussians':>10}{'PSNR':>8}{'PSNR black bg':>14}",
    ]
    for name, label in (("densify", "densify on"), ("no_densify", "densify off")):
        for who, title in (("ours", "ours (recon)"), ("peer", "OpenSplat --cpu")):
            key = f"{who}_{name}"
            c = cpu[key]
            one = f"{who}_1step"
            lp = (c["cpu_s"] - cpu[one]["cpu_s"]) / (r["steps"] - 1) if one in cpu else None
            black = sc[f"{key}_black_bg"]["psnr"] if who == "peer" else sc[key]["psnr"]
            lines.append(f"{(title + ', ' + label):30}{c['cpu_s'] / r['steps']:>11.3f}{f(lp):>12}{c['wall_s']:>8.1f}"
                         f"{sc[key]['n_gaussians']:>10}{sc[key]['psnr']:>8.2f}{black:>14.2f}")
    lines += [
        "",
        "PSNR: test views, our renderer; OpenSplat's .ply on the background it trained against "
        f"{OPENSPLAT_BACKGROUND} (PSNR black bg: on ours).",
        f"check: scoring a .ply here = recon eval on our own splats.ply ({sc['ours_densify']['psnr']:.4f} = "
        f"{sc['ours_densify']['recon_eval_psnr']:.4f} dB)",
        f"check: conventions, our render of OpenSplat's .ply against its own render of test view "
        f"{conv['dots']['frame']}: dots {conv['dots']['psnr_vs_opensplat_render']:.1f} dB (half a pixel off: "
        f"{conv['dots']['control_half_pixel_shift']:.1f} dB, upside down: {conv['dots']['control_upside_down']:.1f} dB), "
        f"one color {conv['cover']['psnr_vs_opensplat_render']:.1f} dB (upside down: "
        f"{conv['cover']['control_upside_down']:.1f} dB); need {CONVENTION_MIN_PSNR:.0f} dB",
    ]
    photo = conv["photo"]["psnr_vs_opensplat_render"]
    lines.append(f"with the photo colors the two renders agree to {photo:.1f} dB" + (
        ": the blending order differs (OpenSplat 1.1.5's CPU rasterizer does not sort by depth; our renderer and "
        "viewers do), so OpenSplat trained against other images than its .ply shows" if photo < CONVENTION_MIN_PSNR
        else ""))
    if r["gaussians_peer"] == r["init_points"] and not r["peer_args"]:
        lines.append(f"note: OpenSplat densifies only at multiples of --refine-every (100) after --warmup-length "
                     f"(500) and before steps/2: in {r['steps']} steps its default run did not "
                     "(--peer-args '--warmup-length K' moves the warm-up)")
    lines += [f"warning: {w}" for w in r["warnings"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench_opensplat.sh", description=__doc__.split("\n")[0])
    p.add_argument("--opensplat", required=True, help="the OpenSplat binary to run (scripts/build_opensplat.sh builds one)")
    p.add_argument("--scene", type=Path, default=REPO.parent / "shared" / "data" / "llff_fern")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "opensplat")
    p.add_argument("--views", type=int, default=3)
    p.add_argument("--downscale", default="8", help="recon train --downscale (LLFF: images_8 = 504x378 on fern)")
    p.add_argument("--check-steps", type=int, default=10, help="steps of the convention-check run (multiple of 10)")
    p.add_argument("--peer-args", default="", help="extra OpenSplat options for the densify pass (one string)")
    p.add_argument("--python", default=sys.executable, help="the interpreter that runs recon")
    args = p.parse_args(argv)
    args.scene, args.out = Path(args.scene).resolve(), Path(args.out).resolve()
    bin_path = Path(args.opensplat)
    if not (bin_path.is_file() and os.access(bin_path, os.X_OK)):
        print(f"error: OpenSplat binary {args.opensplat} not found or not executable", file=sys.stderr)
        return 2
    if args.steps < 1:
        print("error: --steps must be at least 1", file=sys.stderr)
        return 2
    if not Path(args.scene).is_dir():
        print(f"error: scene folder {args.scene} not found", file=sys.stderr)
        return 2
    from scenes.errors import ReconError

    try:
        detail = run_bench(args)
    except (BenchError, ReconError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(summary(detail))
    print(json.dumps(detail["result"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
