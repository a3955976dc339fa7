"""`recon bench raster`: forward+backward time of the CPU kernel vs the torch reference.

Fixed random scenes (seeded): N Gaussians in a unit-radius ball seen from a camera 3 units
away, SH degree 3 colors, background, RGB+ED render, loss = weighted sum of every output so
all gradients are exercised. Each backend: two warm-ups, then the median of `repeats` timed
steps. `max_rel_err` compares the kernel's image and every gradient with a float64 run of the
reference (max |a - b| / max |b| over all outputs). gsplat joins the table when CUDA is present.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import dataclass

import numba
import torch

from reconstruct.raster import Backend, rasterize


@dataclass(frozen=True)
class BenchCase:
    """One benchmark scene."""

    n_gaussians: int
    """Number of Gaussians."""
    width: int
    """Image width in pixels (height = width)."""


CASES = (BenchCase(10_000, 128), BenchCase(20_000, 128), BenchCase(50_000, 256))


def make_scene(
    n: int, size: int, *, seed: int = 0, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> dict:
    """A reproducible scene: params (leaf tensors) plus camera, shaped for `rasterize`."""
    device = device or torch.device("cpu")
    g = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    radius = torch.rand(n, 1, generator=g) ** (1 / 3)
    params = {
        "means": direction * radius,
        "quats": torch.randn(n, 4, generator=g),
        # Typical trained-scene sizes: a few pixels to a few tiles across at this distance.
        "scales": torch.exp(torch.randn(n, 3, generator=g) * 0.5 + math.log(0.012 * 128 / size * 2)),
        "opacities": torch.rand(n, generator=g) * 0.9 + 0.05,
        "colors": torch.randn(n, 16, 3, generator=g) * 0.3,
        "backgrounds": torch.rand(1, 3, generator=g),
    }
    params = {k: v.to(device, dtype).requires_grad_(True) for k, v in params.items()}
    viewmat = torch.eye(4)
    viewmat[2, 3] = 3.0
    f = 1.1 * size
    K = torch.tensor([[f, 0.0, size / 2], [0.0, f, size / 2], [0.0, 0.0, 1.0]])
    weights = torch.randn(1, size, size, 4, generator=g)
    return {
        "params": params,
        "viewmats": viewmat[None].to(device, dtype),
        "Ks": K[None].to(device, dtype),
        "size": size,
        "weights": weights.to(device, dtype),
    }


def step(scene: dict, backend: Backend) -> tuple[torch.Tensor, ...]:
    """One forward+backward; returns the image followed by every gradient."""
    p = scene["params"]
    for t in p.values():
        t.grad = None
    size = scene["size"]
    images, alphas, info = rasterize(
        p["means"], p["quats"], p["scales"], p["opacities"], p["colors"],
        scene["viewmats"], scene["Ks"], size, size, backgrounds=p["backgrounds"],
        render_mode="RGB+ED", backend=backend,
    )
    info["means2d"].retain_grad()
    loss = (images * scene["weights"]).sum() + alphas.square().sum()
    loss.backward()
    return (images.detach(), *(t.grad for t in p.values()), info["means2d"].grad)


def time_backend(scene: dict, backend: Backend, repeats: int) -> tuple[float, tuple[torch.Tensor, ...]]:
    """Median milliseconds of `repeats` steps after two warm-ups, and the warm-up's outputs."""
    outputs = step(scene, backend)
    step(scene, backend)
    times = []
    for _ in range(repeats):
        if scene["viewmats"].device.type != "cpu":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step(scene, backend)
        if scene["viewmats"].device.type != "cpu":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), outputs


def max_rel_err(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> float:
    """max over outputs of max|a - b| / max|b|."""
    worst = 0.0
    for x, y in zip(a, b):
        x, y = x.detach().double().cpu(), y.detach().double().cpu()
        worst = max(worst, float((x - y).abs().max() / y.abs().max().clamp_min(1e-12)))
    return worst


def run_bench(json_out: bool, repeats: int = 5) -> int:
    """Run every case; print one JSON object or a table. Returns the exit code."""
    from rich.console import Console
    from rich.table import Table

    cases: dict[str, dict] = {}
    results: dict = {
        "threads": torch.get_num_threads(),
        "note": "wall-clock on a shared machine; ratios measured in the same run",
        "load_avg_1min_start": round(os.getloadavg()[0], 2),
        # OpenMP workers spin between parallel regions unless this is PASSIVE; on a loaded
        # machine that spinning costs the kernel (and everyone else) a lot of CPU.
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        "numba_threads": numba.get_num_threads(),
        "cases": cases,
    }
    console = Console(stderr=True)
    for case in CASES:
        name = f"{case.n_gaussians // 1000}k_{case.width}x{case.width}"
        console.log(f"bench raster {name}")
        scene = make_scene(case.n_gaussians, case.width)
        kernel_ms, kernel_out = time_backend(scene, "cpu", repeats)
        reference_ms, reference_out = time_backend(scene, "reference", repeats)
        exact_out = step(make_scene(case.n_gaussians, case.width, dtype=torch.float64), "reference")
        entry = {
            "n_gaussians": case.n_gaussians,
            "width": case.width,
            "height": case.width,
            "kernel_ms": round(kernel_ms, 2),
            "reference_ms": round(reference_ms, 2),
            "speedup": round(reference_ms / kernel_ms, 2),
            # Both float32 runs against one untimed float64 reference run: the kernel's own
            # error, and how far the float32 reference itself drifts.
            "max_rel_err": max_rel_err(kernel_out, exact_out),
            "reference_fp32_max_rel_err": max_rel_err(reference_out, exact_out),
        }
        if torch.cuda.is_available():
            gpu_scene = make_scene(case.n_gaussians, case.width, device=torch.device(torch.cuda.current_device()))
            gsplat_ms, gsplat_out = time_backend(gpu_scene, "gsplat", repeats)
            entry["gsplat_ms"] = round(gsplat_ms, 3)
            entry["gsplat_vs_kernel_max_rel_err"] = max_rel_err(gsplat_out, kernel_out)
        results["cases"][name] = entry
        console.log(f"bench raster {name}: {json.dumps(entry)}")
    results["load_avg_1min_end"] = round(os.getloadavg()[0], 2)

    if json_out:
        print(json.dumps(results))
        return 0
    table = Table(
        title=f"raster forward+backward, median of {repeats} (threads={results['threads']}, "
        f"load average {results['load_avg_1min_start']} -> {results['load_avg_1min_end']})"
    )
    for col in ("case", "kernel ms", "reference ms", "speedup", "max rel err"):
        table.add_column(col, justify="right")
    for name, e in results["cases"].items():
        table.add_row(name, f"{e['kernel_ms']:.1f}", f"{e['reference_ms']:.1f}", f"{e['speedup']:.1f}x",
                      f"{e['max_rel_err']:.1e}")
    Console().print(table)
    return 0
