"""`recon bench compress`: a rate-distortion sweep (mask lambda x color codebook size) on one run.

Source run: ``--splat-run`` when given, else a short splat run on the bundled demo scene (data/demo),
trained once into outputs/bench/compress-base and reused. For each mask lambda the mask phase runs
once (lambda 0: the same number of plain fine-tuning steps, the control); for each color codebook
size the codebook phase runs on the masked splats; every point is the decoded artifact scored on
the test views. A float16 artifact (no codebooks) is the reference point per lambda.

Output: outputs/bench/compress_rd.json and compress_rd.png (PSNR vs artifact MB, one line per
lambda, the standard .ply as a marker). The NeRF half (ADMM grid pruning) is recon/bench/compress_nerf.py.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

from recon.bench.common import cached_run, demo_scene, save_png

OUT = Path("outputs") / "bench"


def base_run(bench) -> Path:
    """The run ``bench.splat_run`` names, else a short vanilla splat run on the demo scene, trained once."""
    from reconstruct.run import Run

    if bench.splat_run is not None:
        return Path(bench.splat_run)
    return cached_run(OUT / "compress-base", [str(demo_scene()), "--iters", str(bench.base_iters), "--preset", "vanilla"],
                      marker=Run.SPLATS)


def sweep(run_dir: Path, *, lambdas: list[float], entries: list[int], steps: int, progress: bool) -> dict:
    """Every (lambda, entries) point plus a float16 point per lambda; returns the results dict."""
    import tempfile

    from pruning.artifact import CompactSplats, artifact_bytes, load_artifact, save_artifact
    from pruning.compress import CompressConfig, _score, mask_phase, plain_phase, quantize_phase
    from pruning.quantize import QuantizeConfig
    from reconstruct.run import Run, resolve_device

    run = Run.open(run_dir)
    train_cfg, scene, splats = run.splat_config, run.scene(), run.splats()
    device = resolve_device("auto")
    base = _score(splats, scene, device)
    ply_bytes = run.splats_path.stat().st_size
    kw = dict(optim=train_cfg.optim, loss=train_cfg.loss, device=device)
    points = []
    with tempfile.TemporaryDirectory() as tmp:
        for lam in lambdas:
            cfg = CompressConfig(mask_lambda=lam, mask_steps=steps, quantize_steps=steps, progress=progress)
            t0 = time.perf_counter()
            if lam > 0:
                masked, _ = mask_phase(splats, scene, cfg, **kw)
            else:  # control: the same number of fine-tuning steps without masks
                masked, _ = plain_phase(splats, scene, cfg, steps, **kw)
            mask_seconds = time.perf_counter() - t0
            n_after = len(masked)
            variants = [("float16", None)] + [(f"codebook {e}", e) for e in entries]
            for label, e in variants:
                t0 = time.perf_counter()
                if e is None:
                    compact = CompactSplats.from_splats(masked)
                else:
                    c = copy.deepcopy(cfg)
                    c.quant = QuantizeConfig(sh0_entries=int(e), shN_entries=int(e))
                    compact, _, _ = quantize_phase(masked, scene, c, **kw)
                folder = Path(tmp) / f"{lam}-{label}"
                save_artifact(folder, compact)
                score = _score(load_artifact(folder), scene, device)
                points.append({"lambda": lam, "variant": label, "entries": e, "n_after": n_after,
                               "artifact_bytes": artifact_bytes(folder), "psnr": score["psnr"], "ssim": score["ssim"],
                               "seconds": time.perf_counter() - t0 + mask_seconds})
                print(json.dumps(points[-1]), file=sys.stderr)
    return {"run": str(run_dir), "n_before": len(splats), "ply_bytes": ply_bytes, "psnr_before": base["psnr"],
            "ssim_before": base["ssim"], "n_test": base["n_test"], "steps": steps, "points": points}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for lam in sorted({p["lambda"] for p in results["points"]}):
        pts = sorted((p for p in results["points"] if p["lambda"] == lam), key=lambda p: p["artifact_bytes"])
        ax.plot([p["artifact_bytes"] / 1e6 for p in pts], [p["psnr"] for p in pts], "o-",
                label=f"masks lambda={lam:g}" if lam > 0 else "no masks")
    ax.plot([results["ply_bytes"] / 1e6], [results["psnr_before"]], "k*", markersize=12, label="standard .ply")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set(xlabel="size (MB, log)", ylabel="test PSNR (dB)",
           title=f"rate-distortion ({results['n_test']} test views, {results['steps']} steps a phase)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    save_png(fig, path)


def run_bench(bench) -> int:
    """The parts ``bench.parts`` names: the splat rate-distortion sweep, scene.sog against
    splat-transform's SOG (recon/bench/compress_sog.py) and the NeRF ADMM sweep."""
    from recon.bench import compress_nerf

    out = {}
    if "splats" in bench.parts:
        out["splats"] = _splat_bench(bench)
    if "sog" in bench.parts:
        from recon.bench.compress_sog import run_sog_bench

        out["sog"] = run_sog_bench(bench, base_run(bench))
    if "nerf" in bench.parts:
        out["nerf"] = compress_nerf.run_nerf_bench(bench)
        if not bench.json:
            compress_nerf.print_table(out["nerf"])
            print(f"wrote {OUT / 'compress_nerf.png'} and {OUT / 'compress_nerf.json'}")
    if bench.json:
        print(json.dumps(out))
    return 0


def _splat_bench(bench) -> dict:
    from scenes.fileio import atomic_write_text

    run_dir = base_run(bench)
    results = sweep(run_dir, lambdas=list(bench.lambdas), entries=list(bench.entries), steps=bench.steps,
                    progress=not bench.json)
    atomic_write_text(OUT / "compress_rd.json", json.dumps(results, indent=2))
    plot(results, OUT / "compress_rd.png")
    if bench.json:
        return results
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"recon bench compress: {run_dir} ({results['n_before']:,} Gaussians, "
                        f".ply {results['ply_bytes'] / 1e6:.2f} MB, {results['psnr_before']:.2f} dB)")
    for col in ("lambda", "variant", "Gaussians", "MB", "ratio", "PSNR", "dPSNR", "SSIM"):
        table.add_column(col, justify="right")
    for p in results["points"]:
        table.add_row(f"{p['lambda']:g}", p["variant"], f"{p['n_after']:,}", f"{p['artifact_bytes'] / 1e6:.3f}",
                      f"{results['ply_bytes'] / p['artifact_bytes']:.1f}x", f"{p['psnr']:.2f}",
                      f"{p['psnr'] - results['psnr_before']:+.2f}", f"{p['ssim']:.4f}")
    Console().print(table)
    print(f"wrote {OUT / 'compress_rd.png'} and {OUT / 'compress_rd.json'}")
    return results
