"""`recon bench priors`: vanilla vs the sparse preset vs each prior alone, same seeds and step budget.

Protocols: fern 3 views (train images 1, 10, 19; test 0, 8, 16) and lego 8 views (train frames
26, 86, 2, 55, 75, 93, 16, 73; every ``lego_test_every``-th test frame), read from ../shared/data.
The CPU budget is small, so images are reduced (``--fern-resolution`` / ``--lego-resolution``
pixels wide) and the step budget is short; the densification and prior schedules are scaled to
the budget. Outputs: a markdown table (stdout), results.json, table.md and bars.png in ``--out``.
``recon bench priors --help`` lists the flags.
"""

from __future__ import annotations

import dataclasses
import typing
import json
import sys
import time
from typing import Any
from pathlib import Path

import numpy as np

VARIANTS_ALONE = ("dropout", "binocular", "dense_init", "pseudo_views", "sfm_depth", "mono_depth", "diffusion")


PriorsBenchConfig = Any
"""recon.bench.PriorsBench (the flags)."""


def _data_root(cfg: PriorsBenchConfig) -> Path:
    from recon.bench.common import REPO

    return Path(cfg.data) if cfg.data else REPO.parent / "shared" / "data"


def budget_config(cfg, iters: int):
    """Scale the densification and prior schedules of a SplatTrainConfig to a short run of ``iters`` steps."""
    d = dataclasses.replace(cfg.densify, refine_start_iter=max(iters // 6, 1), refine_stop_iter=int(iters * 0.7),
                            refine_every=max(iters // 15, 5), reset_every=10 * iters)
    p = cfg.priors

    def start(sub, at: int):
        return dataclasses.replace(sub, schedule=dataclasses.replace(sub.schedule, start=at))

    p = dataclasses.replace(
        p, binocular=start(p.binocular, iters // 5), pseudo_views=start(p.pseudo_views, iters // 4),
        diffusion=dataclasses.replace(start(p.diffusion, iters // 3), interval=max(iters // 3, 1)),
    )
    return dataclasses.replace(cfg, densify=d, priors=p, iters=iters,
                               output=dataclasses.replace(cfg.output, checkpoint_every=10 * iters, eval_at_end=False))


def variant_config(name: str, scene_path: Path, views: int, seed: int, bench: PriorsBenchConfig, cache: Path):
    """The resolved config of one variant: vanilla, sparse, one prior alone on top of vanilla, or
    ``sparse-a-b``: the sparse preset without priors a and b (``dense_init`` = the init kind)."""
    from reconstruct.config import SplatTrainConfig, resolve

    def toggle(cfg, prior: str, on: bool):
        if prior == "dense_init":
            return dataclasses.replace(cfg, init=dataclasses.replace(cfg.init, kind="dense" if on else "sfm",
                                                                     fallback="dense" if on else "random"))
        sub = dataclasses.replace(getattr(cfg.priors, prior), enabled=on)
        return dataclasses.replace(cfg, priors=dataclasses.replace(cfg.priors, **{prior: sub}))

    if name in ("vanilla", "sparse"):
        cfg = SplatTrainConfig(scene=scene_path, views=views, preset=name)  # type: ignore[arg-type]
    elif name.startswith("sparse-"):
        cfg = typing.cast(SplatTrainConfig, resolve(SplatTrainConfig(scene=scene_path, views=views, preset="sparse"),
                                                     device_type="cpu"))
        for prior in name.removeprefix("sparse-").split("-"):
            cfg = toggle(cfg, prior, False)
    else:
        cfg = toggle(SplatTrainConfig(scene=scene_path, views=views, preset="vanilla"), name, True)
    cfg = dataclasses.replace(cfg, seed=seed, device="cpu", priors=dataclasses.replace(cfg.priors, cache_dir=cache))
    cfg = typing.cast(SplatTrainConfig, resolve(cfg, device_type="cpu"))
    if bench.schedule == "full":
        return dataclasses.replace(cfg, iters=bench.iters, output=dataclasses.replace(
            cfg.output, checkpoint_every=10 * bench.iters, eval_at_end=False))
    return budget_config(cfg, bench.iters)


def run_one(cfg, scene, run_dir: Path) -> dict:
    """Train one configuration and score its test views (no LPIPS: no weights here)."""
    import torch

    from recon.bench.common import train_config
    from reconstruct.evaluate import evaluate
    from reconstruct.gaussians import activate

    t0 = time.perf_counter()
    method, state = train_config(cfg, scene=scene)
    wall = time.perf_counter() - t0
    with torch.no_grad():
        res = evaluate(activate(method.model.params), scene, device=torch.device("cpu"), with_lpips=False)
    return {"psnr": res["psnr"], "ssim": res["ssim"], "train_seconds": state.seconds, "wall_seconds": wall,
            "n_gaussians": len(method.model), "init": method.init_record.get("init"),
            "regularizers": [r.name for r in method.regularizers], "modifiers": len(method.modifiers)}


def _available(name: str, cfg) -> str | None:
    """None when the prior can run here, else why not (model priors without weights)."""
    if name == "mono_depth":
        try:
            from reconstruct.priors.depth import _load_model

            _load_model(cfg.priors.mono_depth.model)
        except Exception as err:  # noqa: BLE001 - any load failure means unavailable
            return f"no weights for {cfg.priors.mono_depth.model} ({type(err).__name__})"
    if name == "diffusion":
        try:
            from reconstruct.priors.diffusion import load_pipeline

            load_pipeline(cfg.priors.diffusion.model)
        except Exception as err:  # noqa: BLE001
            return f"no weights for {cfg.priors.diffusion.model} ({type(err).__name__})"
    return None


def run(bench: PriorsBenchConfig) -> dict:
    import scenes

    root = _data_root(bench)
    if bench.threads:
        import numba
        import torch

        torch.set_num_threads(bench.threads)
        numba.set_num_threads(min(bench.threads, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    protocols = {
        "fern3": (root / "llff_fern", 3, dict(resolution=bench.fern_resolution)),
        "lego8": (root / "blender_lego", 8, dict(resolution=bench.lego_resolution, test_every=bench.lego_test_every)),
    }
    out = Path(bench.out)
    cache = out / "cache"
    results: dict = {"config": json.loads(json.dumps(dataclasses.asdict(bench), default=str)), "scenes": {}}
    t_start = time.perf_counter()
    unavailable: dict[str, str | None] = {}  # model priors are probed once (a hub attempt can take minutes)
    for key in bench.scenes:
        path, views, kw = protocols[key]
        if not path.is_dir():
            results["scenes"][key] = {"skipped": f"{path} not found"}
            continue
        scene = scenes.load_scene(path, views=views, **kw)
        rows = {}
        for variant in bench.variants:
            probe = variant_config(variant, path, views, 0, bench, cache)
            if variant in ("mono_depth", "diffusion") and variant not in unavailable:
                unavailable[variant] = _available(variant, probe)
            why = unavailable.get(variant)
            if why is not None:
                rows[variant] = {"skipped": why}
                print(f"bench priors: {key} {variant}: skipped, {why}", file=sys.stderr)
                continue
            runs = []
            for seed in bench.seeds:
                cfg = variant_config(variant, path, views, seed, bench, cache)
                r = run_one(cfg, scene, out / "runs" / key / variant / f"seed{seed}")
                runs.append(r)
                print(f"bench priors: {key} {variant} seed {seed}: {r['psnr']:.2f} dB, {r['ssim']:.3f}, "
                      f"{r['train_seconds']:.0f} s, {r['n_gaussians']} Gaussians, init {r['init']}", file=sys.stderr, flush=True)
            rows[variant] = _summary(runs)
        results["scenes"][key] = {"views": views, "width": scene.width, "height": scene.height,
                                  "n_test": len(scene.test_ids), "variants": rows}
    results["total_seconds"] = time.perf_counter() - t_start
    return results


def _summary(runs: list[dict]) -> dict:
    def ms(k):
        v = np.array([r[k] for r in runs], dtype=float)
        return float(v.mean()), float(v.std())

    (p, ps), (s, ss), (t, ts) = ms("psnr"), ms("ssim"), ms("train_seconds")
    return {"psnr": p, "psnr_std": ps, "ssim": s, "ssim_std": ss, "train_seconds": t, "train_seconds_std": ts,
            "n_gaussians": float(np.mean([r["n_gaussians"] for r in runs])), "runs": runs}


def markdown(results: dict) -> str:
    c = results["config"]
    lines = [f"# recon bench priors: {c['iters']} steps, seeds {list(c['seeds'])}, fern width {c['fern_resolution']}, "
             f"lego width {c['lego_resolution']} (total {results['total_seconds'] / 60:.1f} min on this machine; "
             "CPU shared, timings noisy)", ""]
    for key, sc in results["scenes"].items():
        if "skipped" in sc:
            lines += [f"## {key}: skipped ({sc['skipped']})", ""]
            continue
        lines += [f"## {key} ({sc['views']} views, {sc['width']}x{sc['height']}, {sc['n_test']} test views)", "",
                  "| variant | PSNR (dB) | dPSNR vs vanilla | SSIM | train s | Gaussians |", "|---|---|---|---|---|---|"]
        base = sc["variants"].get("vanilla", {}).get("psnr")
        for name, v in sc["variants"].items():
            if "skipped" in v:
                lines.append(f"| {name} | skipped: {v['skipped']} | | | | |")
                continue
            d = f"{v['psnr'] - base:+.2f}" if base is not None else ""
            lines.append(f"| {name} | {v['psnr']:.2f} ± {v['psnr_std']:.2f} | {d} | {v['ssim']:.3f} ± {v['ssim_std']:.3f} "
                         f"| {v['train_seconds']:.0f} | {v['n_gaussians']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def bar_chart(results: dict, path: Path) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scenes.fileio import atomic_write_bytes

    keys = [k for k, v in results["scenes"].items() if "variants" in v]
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(6 * max(len(keys), 1), 4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        rows = {n: v for n, v in results["scenes"][key]["variants"].items() if "psnr" in v}
        names = list(rows)
        ax.bar(range(len(names)), [rows[n]["psnr"] for n in names], yerr=[rows[n]["psnr_std"] for n in names],
               color=["#888" if n == "vanilla" else "#c44" if n == "sparse" else "#48c" for n in names], capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right")
        lo = min(rows[n]["psnr"] - rows[n]["psnr_std"] for n in names) if names else 0
        ax.set_ylim(max(lo - 1, 0), None)
        ax.set(title=f"{key}: test PSNR (mean ± std over seeds)", ylabel="PSNR (dB)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def write_outputs(results: dict, out: Path) -> str:
    from scenes.fileio import atomic_write_text

    text = markdown(results)
    atomic_write_text(Path(out) / "results.json", json.dumps(results, indent=2, default=str))
    atomic_write_text(Path(out) / "table.md", text + "\n")
    bar_chart(results, Path(out) / "bars.png")
    return text


def run_bench(cfg) -> int:
    results = run(cfg)
    text = write_outputs(results, cfg.out)
    print(json.dumps(results, default=str) if cfg.json else text)
    return 0

