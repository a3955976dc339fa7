"""`recon bench nerf [--json]`: hash-encoding speed and sparse-view training quality on CPU/GPU.

1. Encoding: forward + backward of N = 2**16 points through the 16-level grid (F = 2,
   2**19 entries per level), median of ``REPEATS`` runs, for each implementation available on the
   device, all in the same process: plain autograd (reference), the own torch Function, the numba
   kernel (CPU), tiny-cuda-nn (CUDA, when built). Speedups are relative to plain autograd.
2. Quality: ``recon train --method nerf`` equivalents at a reduced budget (see ``SETUPS``):
   lego, 8 views (the standard split), 100x100, test = every 8th test frame (25 views);
   fern, 3 views (images 1, 10, 19), 1/16 resolution (252x189), test = images 0, 8, 16.
   Sparse-view regularizers on (frequency + occlusion + S3IM); 12 levels up to 1024, 2**17 entries per
   level, occupancy 48^3 with EMA decay 0.8 (short run). Needs ../shared/data; skipped
   with a message otherwise.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPEATS = 3
N_POINTS = 2**16
SETUPS = {
    "lego-8v": dict(scene="blender_lego", views=8, resolution=100, downscale=None, test_every=8, iters=1500,
                    rays=256, samples=64),
    "fern-3v": dict(scene="llff_fern", views=3, resolution=None, downscale=16.0, test_every=1, iters=1500,
                    rays=256, samples=64),
}
# The same runs without the sparse-view regularizers (ablation; `run_bench(setups=[...])`).
SETUPS.update({f"{k}-noreg": dict(v, regularize="off") for k, v in list(SETUPS.items())})
DEFAULT_SETUPS = ["lego-8v", "fern-3v"]


def data_root() -> Path:
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def bench_encoding(device: torch.device, *, log2_hashmap_size: int = 19) -> dict:
    from reconstruct.nerf.config import EncodingImpl
    from reconstruct.nerf.hash_encoding import HashEncoding, HashGridConfig, n_params, tcnn_available

    cfg = HashGridConfig(log2_hashmap_size=log2_hashmap_size)
    impls: list[EncodingImpl] = ["reference", "torch"]
    if device.type == "cpu":
        impls.append("numba")
    if device.type != "cpu" and tcnn_available():
        impls.append("tcnn")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(N_POINTS, 3, generator=g).to(device)
    up = torch.randn(N_POINTS, cfg.n_levels * cfg.features_per_level, generator=g).to(device)
    times = {}
    for impl in impls:
        enc = HashEncoding(cfg, implementation=impl).to(device)
        runs = []
        for _ in range(REPEATS + 1):  # first run warms up (numba compile / CUDA context)
            if device.type != "cpu":
                torch.accelerator.synchronize()
            t0 = time.perf_counter()
            enc.params.grad = None
            (enc(x) * up).sum().backward()
            if device.type != "cpu":
                torch.accelerator.synchronize()
            runs.append(time.perf_counter() - t0)
        times[impl] = statistics.median(runs[1:])
    ref = times["reference"]
    return {"device": str(device), "n_points": N_POINTS, "n_params": n_params(cfg),
            "log2_hashmap_size": log2_hashmap_size,
            "seconds_fwd_bwd": times, "speedup_vs_autograd": {k: ref / v for k, v in times.items()}}


def bench_training(name: str, setup: dict, device: torch.device) -> dict:
    import scenes
    from recon.bench.common import train_config
    from reconstruct.config import DataConfig, NerfTrainConfig, OutputConfig, resolve
    from reconstruct.nerf.config import NerfConfig
    from reconstruct.nerf.method import evaluate_nerf

    root = data_root() / setup["scene"]
    if not root.is_dir():
        return {"skipped": f"{root} not found"}
    scene = scenes.load_scene(root, views=setup["views"], downscale=setup["downscale"],
                              resolution=setup["resolution"], test_every=setup["test_every"])
    ncfg = NerfConfig(rays_per_batch=setup["rays"], n_samples=setup["samples"], log2_hashmap_size=17,
                      n_levels=12, max_resolution=1024, regularize=setup.get("regularize", "on"), grid_decay=0.8)
    cfg = NerfTrainConfig(scene=root, views=setup["views"], iters=setup["iters"], device=device.type,  # type: ignore[arg-type]
                          data=DataConfig(downscale=setup["downscale"], resolution=setup["resolution"],
                                          test_every=setup["test_every"]),
                          output=OutputConfig(checkpoint_every=10**9), nerf=ncfg)
    method, state = train_config(resolve(cfg, device_type=device.type), scene=scene, progress=sys.stderr.isatty())
    method.field.eval()
    t0 = time.perf_counter()
    res = evaluate_nerf(method.field, method.grid, scene, n_samples=method.n_samples)
    return {
        "views": setup["views"], "width": scene.width, "height": scene.height, "iters": state.step,
        "rays_per_batch": setup["rays"], "n_samples": setup["samples"], "psnr": res["psnr"], "ssim": res["ssim"],
        "lpips": res["lpips"], "n_test": res["n_test"], "train_seconds": state.seconds,
        "eval_seconds": time.perf_counter() - t0, "n_params": method.n_params(),
        "regularized": method.regularize, "final_train_psnr": state.history[-1]["psnr"] if state.history else None,
        "occupancy": method.grid.occupancy_fraction(),
    }


def run_bench(json_out: bool = False, *, setups: list[str] | None = None) -> int:
    from reconstruct.run import resolve_device

    device = resolve_device("auto")
    result = {"encoding": bench_encoding(device), "training": {}}
    if not json_out:
        _print_encoding(result["encoding"])
    for name in DEFAULT_SETUPS if setups is None else setups:
        result["training"][name] = r = bench_training(name, SETUPS[name], device)
        if not json_out:
            print(f"{name}: " + json.dumps(r))
    if json_out:
        print(json.dumps(result, indent=2))
    return 0


def _print_encoding(enc: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"hash encoding fwd+bwd, {enc['n_points']:,} points, {enc['n_params']:,} params, {enc['device']}")
    t.add_column("implementation")
    t.add_column("ms")
    t.add_column("speedup vs autograd")
    for k, v in enc["seconds_fwd_bwd"].items():
        t.add_row(k, f"{1000 * v:.1f}", f"{enc['speedup_vs_autograd'][k]:.2f}x")
    Console().print(t)
