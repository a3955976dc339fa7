"""`recon bench compress`: a rate-distortion sweep (mask lambda x color codebook size) on one run.

Source run: the run folder in ``RECON_BENCH_COMPRESS_RUN`` when set, else a short splat run on the
bundled demo scene (data/demo), trained once into outputs/bench/compress-base and reused.
For each mask lambda the mask phase runs once (lambda 0: the same number of plain fine-tuning
steps, the control); for each color codebook size the
codebook phase runs on the masked splats; every point is the decoded artifact scored on the test
views. A float16 artifact (no codebooks) is the reference point per lambda.

Output: outputs/bench/compress_rd.json and compress_rd.png (PSNR vs artifact MB, one line per
lambda, the standard .ply as a marker). The NeRF half (ADMM grid pruning) is pruning/bench_nerf.py;
RECON_BENCH_COMPRESS_PARTS [splats,nerf] runs one or both. Settings through the environment (defaults in brackets):
RECON_BENCH_COMPRESS_LAMBDAS [0,5e-3,2e-2], RECON_BENCH_COMPRESS_ENTRIES [256,1024,4096],
RECON_BENCH_COMPRESS_STEPS [200] (steps of each phase), RECON_BENCH_COMPRESS_BASE_ITERS [1500].
"""

from __future__ import annotations

import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

OUT = Path("outputs") / "bench"


def _floats(name: str, default: str) -> list[float]:
    return [float(v) for v in os.environ.get(name, default).split(",") if v.strip()]


def cached_run(env: str, run: Path, train_args: list[str], *, marker: str) -> Path:
    """The run folder named by the environment variable ``env``; else ``run``, trained once with
    ``recon train <train_args> --out run`` (reused while ``run/marker`` and its config exist)."""
    if os.environ.get(env):
        return Path(os.environ[env])
    if (run / marker).is_file() and (run / "config.json").is_file():
        return run
    from reconstruct.run_train import main as train_main

    code = train_main([*train_args, "--out", str(run), "--overwrite"])
    if code != 0:
        raise SystemExit(code)
    return run


def demo_scene() -> Path:
    return Path(__file__).resolve().parents[1] / "data" / "demo"


def save_png(fig, path: Path) -> None:
    """Write a matplotlib figure as PNG, atomically, and close it."""
    import io

    import matplotlib.pyplot as plt

    from reconstruct.runs import atomic_write_bytes

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _base_run() -> Path:
    iters = os.environ.get("RECON_BENCH_COMPRESS_BASE_ITERS", "1500")
    return cached_run("RECON_BENCH_COMPRESS_RUN", OUT / "compress-base",
                      [str(demo_scene()), "--iters", iters, "--preset", "vanilla"], marker="splats.ply")


def sweep(run_dir: Path, *, lambdas: list[float], entries: list[int], steps: int, progress: bool) -> dict:
    """Every (lambda, entries) point plus a float16 point per lambda; returns the results dict."""
    import torch

    from pruning.artifact import CompactSplats, artifact_bytes, load_artifact, save_artifact
    from pruning.compress import CompressConfig, _params_from_splats, _score, mask_phase, plain_phase, quantize_phase
    from pruning.quantize import QuantizeConfig
    from reconstruct.runs import load_config, load_run_scene, load_run_splats, resolve_device
    from reconstruct.splats import Splats

    train_cfg = load_config(run_dir)
    scene = load_run_scene(run_dir, cfg=train_cfg)
    splats = load_run_splats(run_dir)
    device = resolve_device("auto")
    base = _score(splats, scene, device)
    ply_bytes = (run_dir / "splats.ply").stat().st_size
    kw = dict(optim_cfg=train_cfg.optim, sh_degree=splats.sh_degree, ssim_lambda=train_cfg.loss.ssim_lambda)
    points = []
    with tempfile.TemporaryDirectory() as tmp:
        for lam in lambdas:
            cfg = CompressConfig(mask_lambda=lam, mask_steps=steps, quantize_steps=steps, progress=progress)
            params = _params_from_splats(splats, device)
            t0 = time.perf_counter()
            if lam > 0:
                mask_phase(params, scene, cfg, **kw)
            else:  # control: the same number of fine-tuning steps without masks
                plain_phase(params, scene, cfg, steps, **kw)
            mask_seconds = time.perf_counter() - t0
            masked = {k: v.detach().clone() for k, v in params.items()}
            n_after = int(masked["means"].shape[0])
            variants = [("float16", None)] + [(f"codebook {e}", e) for e in entries]
            for label, e in variants:
                t0 = time.perf_counter()
                if e is None:
                    compact = CompactSplats.from_splats(Splats.from_params(masked))
                else:
                    p = torch.nn.ParameterDict({k: torch.nn.Parameter(v.clone()) for k, v in masked.items()})
                    c = copy.deepcopy(cfg)
                    c.quant = QuantizeConfig(sh0_entries=int(e), shN_entries=int(e))
                    compact, _, _ = quantize_phase(p, scene, c, **kw)
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


def run_bench(json_out: bool = False) -> int:
    """Both halves: the splat rate-distortion sweep and the NeRF ADMM sweep (pruning/bench_nerf.py);
    RECON_BENCH_COMPRESS_PARTS [splats,nerf] picks them."""
    from pruning import bench_nerf

    parts = [p.strip() for p in os.environ.get("RECON_BENCH_COMPRESS_PARTS", "splats,nerf").split(",") if p.strip()]
    unknown = set(parts) - {"splats", "nerf"}
    if unknown:
        raise SystemExit(f"RECON_BENCH_COMPRESS_PARTS: unknown part(s) {sorted(unknown)} (splats, nerf)")
    out = {}
    if "splats" in parts:
        out["splats"] = _splat_bench(json_out)
    if "nerf" in parts:
        out["nerf"] = bench_nerf.run_nerf_bench(progress=not json_out)
        if not json_out:
            bench_nerf.print_table(out["nerf"])
            print(f"wrote {OUT / 'compress_nerf.png'} and {OUT / 'compress_nerf.json'}")
    if json_out:
        print(json.dumps(out))
    return 0


def _splat_bench(json_out: bool) -> dict:
    from reconstruct.runs import atomic_write_text

    run_dir = _base_run()
    results = sweep(
        run_dir,
        lambdas=_floats("RECON_BENCH_COMPRESS_LAMBDAS", "0,5e-3,2e-2"),
        entries=[int(v) for v in _floats("RECON_BENCH_COMPRESS_ENTRIES", "256,1024,4096")],
        steps=int(os.environ.get("RECON_BENCH_COMPRESS_STEPS", "200")),
        progress=not json_out,
    )
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT / "compress_rd.json", json.dumps(results, indent=2))
    plot(results, OUT / "compress_rd.png")
    if json_out:
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
