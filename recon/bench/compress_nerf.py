"""The NeRF half of `recon bench compress`: ADMM grid pruning against same-length controls.

On one hash-grid NeRF run, each variant fine-tunes for the same number of steps from the run's
checkpoint and is scored on the test views:

- ``fine-tune``: the run's table, no gate (what the extra steps alone buy);
- ``gate+ADMM``: the run's table behind the saliency gate with the ADMM pruner;
- ``fine-tune, table/2^k``: the table folded to 2^k times fewer entries, no gate (control);
- ``gate+ADMM, table/2^k``: the same smaller table behind the gate (HollowNeRF's recipe).

Source run: ``--nerf-run`` when given, else a short NeRF run on the bundled demo scene trained once
into outputs/bench/compress-nerf-base; ``--nerf-steps`` and ``--nerf-shrinks`` set the sweep. Output:
outputs/bench/compress_nerf.json and compress_nerf.png (PSNR vs hash parameters in use).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

OUT = Path("outputs") / "bench"


def base_run(bench) -> Path:
    """The NeRF run ``bench.nerf_run`` names, else a short NeRF run on the demo scene, trained once."""
    from recon.bench.common import cached_run, demo_scene
    from reconstruct.run import Run

    if bench.nerf_run is not None:
        return Path(bench.nerf_run)
    return cached_run(OUT / "compress-nerf-base", [
        str(demo_scene()), "--views", "8", "--method", "nerf", "--iters", "1500", "--nerf.rays-per-batch", "256",
        "--nerf.n-levels", "12", "--nerf.max-resolution", "1024", "--nerf.log2-hashmap-size", "17",
        "--nerf.grid-decay", "0.8"], marker=Run.CHECKPOINT)


def sweep(run_dir: Path, *, steps: int, shrinks: list[int], progress: bool) -> dict:
    """One row per (table shrink, gate on/off); every row fine-tunes ``steps`` from the run."""
    from pruning.admm_nerf import AdmmNerfConfig, compress_nerf_run
    from reconstruct.run import Run

    run = Run.open(run_dir)
    rows = []
    for shrink in shrinks:
        for gate in (False, True):
            cfg = dataclasses.replace(AdmmNerfConfig(), steps=steps, table_shrink=shrink, gate=gate)
            r = compress_nerf_run(run, progress=progress, cfg=cfg)
            label = ("gate+ADMM" if gate else "fine-tune") + (f", table/{2 ** shrink}" if shrink else "")
            keep = ("psnr_before", "psnr_after", "ssim_after", "hash_params_run", "hash_params_total",
                    "hash_params_in_use", "fraction_in_use", "cells_kept", "n_params_after", "finetune_seconds")
            rows.append({"variant": label, "table_shrink": shrink, "gate": gate, **{k: r[k] for k in keep}})
            print(json.dumps(rows[-1]), file=sys.stderr)
    return {"run": str(run_dir), "steps": steps, "psnr_run": rows[0]["psnr_before"],
            "hash_params_run": rows[0]["hash_params_run"], "rows": rows}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recon.bench.common import save_png

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for gate, style, name in ((False, "s--", "fine-tune (control)"), (True, "o-", "gate + ADMM")):
        pts = sorted((r for r in results["rows"] if r["gate"] == gate), key=lambda r: r["hash_params_in_use"])
        ax.plot([r["hash_params_in_use"] / 1e6 for r in pts], [r["psnr_after"] for r in pts], style, label=name)
        for r in pts:
            ax.annotate(f"/{2 ** r['table_shrink']}", (r["hash_params_in_use"] / 1e6, r["psnr_after"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    ax.plot([results["hash_params_run"] / 1e6], [results["psnr_run"]], "k*", markersize=12, label="trained run")
    ax.axvline(0.3 * results["hash_params_run"] / 1e6, color="gray", lw=0.8, ls=":", label="30% of the run's table")
    ax.set(xlabel="hash parameters in use (M)", ylabel="test PSNR (dB)",
           title=f"NeRF hash-grid pruning ({results['steps']} fine-tuning steps each; /k = table size)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    save_png(fig, path)


def run_nerf_bench(bench) -> dict:
    from scenes.fileio import atomic_write_text

    results = sweep(base_run(bench), steps=bench.nerf_steps, shrinks=list(bench.nerf_shrinks), progress=not bench.json)
    atomic_write_text(OUT / "compress_nerf.json", json.dumps(results, indent=2))
    plot(results, OUT / "compress_nerf.png")
    return results


def print_table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"recon bench compress (NeRF): {results['run']} ({results['psnr_run']:.2f} dB, "
                        f"{results['hash_params_run']:,} hash parameters)")
    for col in ("variant", "in use", "of run", "cells kept", "PSNR", "dPSNR", "SSIM", "seconds"):
        table.add_column(col, justify="right")
    for r in results["rows"]:
        table.add_row(r["variant"], f"{r['hash_params_in_use']:,}", f"{100 * r['fraction_in_use']:.1f}%",
                      f"{r['cells_kept']:,}", f"{r['psnr_after']:.2f}", f"{r['psnr_after'] - r['psnr_before']:+.2f}",
                      f"{r['ssim_after']:.4f}", f"{r['finetune_seconds']:.0f}")
    Console().print(table)
