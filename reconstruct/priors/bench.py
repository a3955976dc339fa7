"""`recon bench priors`: vanilla vs the sparse preset vs each prior alone, same seeds and step budget.

Protocols: fern 3 views (train images 1, 10, 19; test 0, 8, 16) and lego 8 views (train frames
26, 86, 2, 55, 75, 93, 16, 73; every ``lego_test_every``-th test frame), read from ../shared/data.
The CPU budget is small, so images are reduced (``--fern-resolution`` / ``--lego-resolution``
pixels wide) and the step budget is short; the densification and prior schedules are scaled to
the budget. Outputs: a markdown table (stdout), results.json, table.md and bars.png in ``--out``.
``recon bench priors`` runs the defaults; ``python -m reconstruct.priors.bench --help`` lists the flags.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VARIANTS_ALONE = ("dropout", "binocular", "dense_init", "pseudo_views", "sfm_depth", "mono_depth", "diffusion")


@dataclass
class PriorsBenchConfig:
    """What `recon bench priors` measures."""

    data: Path | None = None
    """Folder holding blender_lego and llff_fern (default ../shared/data next to the repository)."""
    out: Path = Path("outputs/bench_priors")
    """Where results.json, table.md, bars.png and the shared prior cache go."""
    scenes: tuple[str, ...] = ("fern3", "lego8")
    """Protocols to run: fern3 (LLFF fern, 3 views), lego8 (Blender lego, 8 views)."""
    variants: tuple[str, ...] = ("vanilla", "sparse", *VARIANTS_ALONE)
    """vanilla, sparse, or a prior name (that prior alone on top of vanilla)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds (mean and standard deviation are reported)."""
    iters: int = 200
    """Training steps per run (densification and prior schedules are scaled to it)."""
    fern_resolution: int = 126
    """Fern image width in pixels (1/8 resolution is 504)."""
    lego_resolution: int = 100
    """Lego image width in pixels (the papers use 400)."""
    lego_test_every: int = 8
    """Every k-th of the 200 lego test frames (8 = the common 25-view subset)."""
    threads: int | None = None
    """CPU threads for torch and numba in this process (None = their defaults; 1 is faster on a
    machine already oversubscribed by other jobs)."""
    json: bool = False
    """Print one JSON object instead of the table."""


def _data_root(cfg: PriorsBenchConfig) -> Path:
    return Path(cfg.data) if cfg.data else Path(__file__).resolve().parents[2].parent / "shared" / "data"


def budget_config(cfg, iters: int):
    """Scale the densification and prior schedules of TrainConfig ``cfg`` to a short run of ``iters`` steps."""
    d = dataclasses.replace(cfg.densify, refine_start_iter=max(iters // 6, 1), refine_stop_iter=int(iters * 0.7),
                            refine_every=max(iters // 15, 5), reset_every=10 * iters)
    p = cfg.priors
    p = dataclasses.replace(
        p,
        binocular=dataclasses.replace(p.binocular, start=iters // 5),
        pseudo_views=dataclasses.replace(p.pseudo_views, start=iters // 4),
        diffusion=dataclasses.replace(p.diffusion, start=iters // 3, interval=max(iters // 3, 1)),
    )
    return dataclasses.replace(cfg, densify=d, priors=p,
                               optim=dataclasses.replace(cfg.optim, iters=iters),
                               output=dataclasses.replace(cfg.output, checkpoint_every=10 * iters, eval_at_end=False))


def variant_config(name: str, scene_path: Path, views: int, seed: int, bench: PriorsBenchConfig, cache: Path):
    from reconstruct.presets import preset_config
    from reconstruct.priors.presets import with_priors

    if name in ("vanilla", "sparse"):
        cfg = preset_config(name, scene_path, views)
    else:
        cfg = preset_config("vanilla", scene_path, views)
        cfg = dataclasses.replace(cfg, preset=f"vanilla+{name}", priors=with_priors(cfg.priors, [name]))
    cfg = dataclasses.replace(cfg, seed=seed, priors=dataclasses.replace(cfg.priors, cache_dir=cache))
    return budget_config(cfg, bench.iters)


def run_one(cfg, scene, run_dir: Path) -> dict:
    """Train one configuration and score its test views (no LPIPS: no weights here)."""
    import torch

    from reconstruct.evaluate import evaluate
    from reconstruct.gaussians import activate
    from reconstruct.run_train import train_splats

    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    trainer = train_splats(cfg, scene, run_dir, device=torch.device("cpu"), resume=False)
    wall = time.perf_counter() - t0
    with torch.no_grad():
        res = evaluate(activate(trainer.params), scene, device=torch.device("cpu"), with_lpips=False)
    return {"psnr": res["psnr"], "ssim": res["ssim"], "train_seconds": trainer.seconds, "wall_seconds": wall,
            "n_gaussians": len(trainer.params["means"]), "init": trainer.history[0].get("init") if trainer.history else None,
            "regularizers": [r.name for r in trainer.regularizers], "modifiers": len(trainer.modifiers)}


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
        numba.set_num_threads(min(bench.threads, numba.config.NUMBA_NUM_THREADS))
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

    from reconstruct.runs import atomic_write_bytes

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
    from reconstruct.runs import atomic_write_text

    text = markdown(results)
    atomic_write_text(Path(out) / "results.json", json.dumps(results, indent=2, default=str))
    atomic_write_text(Path(out) / "table.md", text + "\n")
    bar_chart(results, Path(out) / "bars.png")
    return text


def run_bench(json_out: bool, cfg: PriorsBenchConfig | None = None) -> int:
    cfg = cfg or PriorsBenchConfig()
    results = run(cfg)
    text = write_outputs(results, cfg.out)
    print(json.dumps(results, default=str) if (json_out or cfg.json) else text)
    return 0


if __name__ == "__main__":
    import tyro

    sys.exit(run_bench(False, tyro.cli(PriorsBenchConfig, prog="python -m reconstruct.priors.bench")))
