"""`recon bench train`: where a whole training step's time goes, per phase, and what each variant
of the step costs, measured in one run.

For each scene (fern 3 views at 504x378 and lego 8 views at 400x400, the papers' resolutions, from
../shared/data; the demo scene when that is absent) a splat run is initialized once and trained
``warmup`` steps (numba compilation, densification settling); then each variant continues from a
copy of that state for ``steps`` steps with the phases of SplatMethod.train_step timed
(render = projection, binning, SH and compositing forward; loss; priors = their extra renders and
terms; backward = every backward pass, the rasterizer's and the losses'; optimizer; strategies =
densification statistics and refinement). Wall seconds per step and process CPU seconds per step
(all threads) are reported; variants: the torch D-SSIM against the fused numba D-SSIM.
"""

from __future__ import annotations

import copy
import cProfile
import json
import os
import pstats
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

PHASES = ("render", "loss", "priors", "backward", "optimizer", "strategies")

#: Kernel-level parts of a step, from a cProfile pass over the timed steps: (file suffix, function
#: names, "self" = the function's own time or "total" = with what it calls).
KERNELS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "projection fwd": ("_numba_project.py", ("project_forward",), "self"),
    "projection bwd": ("_numba_project.py", ("project_backward",), "self"),
    "SH fwd": ("_numba_project.py", ("sh_forward",), "self"),
    "SH bwd": ("_numba_project.py", ("sh_backward",), "self"),
    "binning": ("_numba.py", ("bin_tiles",), "self"),
    "compositing fwd": ("_numba.py", ("composite_forward",), "self"),
    "compositing bwd": ("_numba.py", ("composite_backward",), "self"),
    "D-SSIM (fused, fwd+bwd)": ("ssim_numba.py", ("_blur_rows", "_blur_cols", "_moments_rows", "_ssim_and_partials",
                                                  "_combine"), "self"),
    "Adam": ("", ("<built-in method torch._fused_adam_>",), "self"),
    "densification": ("default.py", ("step_post_backward", "step_pre_backward"), "total"),
    "dtype copies (float32<->float64)": ("", ("<method 'to' of 'torch._C.TensorBase' objects>",), "self"),
    "torch autograd (other ops' backward)": ("", ("<method 'run_backward' of 'torch._C._EngineBase' objects>",), "self"),
    "binocular (render + warp + loss, fwd)": ("binocular.py", ("loss",), "total"),
    "pseudo views (render + terms, fwd)": ("pseudo.py", ("loss",), "total"),
    "SfM depth (fwd)": ("depth.py", ("loss",), "total"),
}


def kernel_breakdown(stats, steps: int) -> dict[str, float]:
    """ms per step of each KERNELS entry present in ``stats`` (a pstats.Stats)."""
    out: dict[str, float] = {}
    for label, (suffix, names, kind) in KERNELS.items():
        total = 0.0
        for (path, _line, name), (_cc, _nc, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
            if name in names and path.endswith(suffix):
                total += tottime if kind == "self" else cumtime
        if total > 0:
            out[label] = 1000 * total / steps
    return out


class PhaseTimer:
    """``timer(phase)`` context manager accumulating wall seconds per phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, phase: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - t0


def scenes_for(data_root: Path | None, which: tuple[str, ...]) -> list[dict]:
    from recon.bench.common import demo_scene

    out = []
    if data_root is not None:
        if "fern" in which and (data_root / "llff_fern").is_dir():
            out.append({"name": "fern-3v-504", "scene": data_root / "llff_fern", "views": 3, "resolution": 504})
        if "lego" in which and (data_root / "blender_lego").is_dir():
            out.append({"name": "lego-8v-400", "scene": data_root / "blender_lego", "views": 8, "resolution": 400})
    if not out:
        out.append({"name": "demo-8v", "scene": demo_scene(), "views": 8, "resolution": None})
    return out


def measure(entry: dict, *, preset: str, warmup: int, steps: int, variants: tuple[str, ...]) -> dict:
    import dataclasses

    import numpy as np
    import torch

    from reconstruct.config import DataConfig, SplatTrainConfig, resolve
    from reconstruct.loop import LoopState, train_loop
    from reconstruct.splatting import SplatMethod
    from reconstruct.training import build_method
    from scenes import load_scene

    base_cfg = SplatTrainConfig(scene=entry["scene"], views=entry["views"], preset=preset,  # type: ignore[arg-type]
                                iters=warmup + steps, data=DataConfig(resolution=entry["resolution"]), device="cpu")
    cfg = resolve(base_cfg, device_type="cpu")
    assert isinstance(cfg, SplatTrainConfig)
    scene = load_scene(entry["scene"], views=cfg.views, resolution=cfg.data.resolution)
    torch.manual_seed(0)
    np.random.seed(0)
    method = build_method(cfg, scene, torch.device("cpu"), cache_dir=Path("outputs/bench/train-cache"))
    assert isinstance(method, SplatMethod)
    state = train_loop(method, LoopState(), until=warmup, label=f"{entry['name']} warm-up", show_progress=False)
    base = method.state_dict()
    rows = {}
    for variant in variants:
        loss = dataclasses.replace(cfg.loss, fused_ssim=variant == "fused-ssim")
        run = build_method(dataclasses.replace(cfg, loss=loss), scene, torch.device("cpu"),
                           cache_dir=Path("outputs/bench/train-cache"), resume_state=base)
        assert isinstance(run, SplatMethod)
        run.load_state_dict(copy.deepcopy(base))
        timer = PhaseTimer()
        run.timer = timer
        s = LoopState(step=state.step)
        t0, c0 = time.perf_counter(), time.process_time()
        train_loop(run, s, until=state.step + steps, label=f"{entry['name']} {variant}", show_progress=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        # the same steps again under cProfile (from the same start) for the kernel-level split,
        # with a timer of their own so the profiled steps do not add to the phase split above
        run.load_state_dict(copy.deepcopy(base))
        run.timer = PhaseTimer()
        profiler = cProfile.Profile()
        profiler.enable()
        train_loop(run, LoopState(step=state.step), until=state.step + steps, label="profile", show_progress=False)
        profiler.disable()
        kernels = kernel_breakdown(pstats.Stats(profiler), steps)
        rows[variant] = {
            "steps_per_s": steps / wall, "wall_s_per_step": wall / steps, "cpu_s_per_step": cpu / steps,
            "gaussians": len(run.model),
            "phase_ms": {p: 1000 * timer.seconds.get(p, 0.0) / steps for p in PHASES},
            "other_ms": 1000 * (wall - sum(timer.seconds.values())) / steps,
            "kernel_ms": kernels,
        }
    return {"scene": entry["name"], "width": scene.width, "height": scene.height, "views": len(scene.train_ids),
            "preset": preset, "warmup_steps": warmup, "steps": steps, "gaussians_after_warmup": len(method.model),
            "variants": rows}


def run_bench(bench) -> int:
    import numba
    import torch
    from rich.console import Console
    from rich.table import Table

    from recon.bench.common import shared_data_root
    from scenes.fileio import atomic_write_text

    if bench.threads:
        torch.set_num_threads(bench.threads)
        numba.set_num_threads(bench.threads)
    results: dict = {
        "load_avg_start": round(os.getloadavg()[0], 2), "torch_threads": torch.get_num_threads(),
        "numba_threads": numba.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        "scenes": [measure(e, preset=bench.preset, warmup=bench.warmup, steps=bench.steps, variants=tuple(bench.variants))
                   for e in scenes_for(shared_data_root(), tuple(bench.scenes))],
    }
    results["load_avg_end"] = round(os.getloadavg()[0], 2)
    out = Path(bench.out)
    atomic_write_text(out / "train_step.json", json.dumps(results, indent=2))
    if bench.json:
        print(json.dumps(results))
        return 0
    for sc in results["scenes"]:
        table = Table(title=f"{sc['scene']} {sc['width']}x{sc['height']}, {sc['views']} views, {sc['preset']} preset, "
                            f"{sc['steps']} steps after {sc['warmup_steps']} (load {results['load_avg_start']} -> "
                            f"{results['load_avg_end']})")
        table.add_column("variant")
        for col in ("steps/s", "CPU s/step", *PHASES, "other"):
            table.add_column(col, justify="right")
        for name, r in sc["variants"].items():
            table.add_row(name, f"{r['steps_per_s']:.2f}", f"{r['cpu_s_per_step']:.3f}",
                          *(f"{r['phase_ms'][p]:.0f}" for p in PHASES), f"{r['other_ms']:.0f}")
        Console().print(table)
        for name, r in sc["variants"].items():
            parts = Table(title=f"{sc['scene']} {name}: kernel-level split (ms per step, cProfile pass)")
            parts.add_column("part")
            parts.add_column("ms/step", justify="right")
            for part, ms in sorted(r["kernel_ms"].items(), key=lambda kv: -kv[1]):
                parts.add_row(part, f"{ms:.1f}")
            Console().print(parts)
    print(f"phases in ms per step; wrote {out / 'train_step.json'}")
    return 0
