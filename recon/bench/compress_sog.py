"""`recon bench compress --parts sog`: our scene.sog against splat-transform's SOG of the same splats.

On one splat run (``--splat-run``, else the bench's demo run), each row is a .sog decoded by our
reader and rendered by our rasterizer on the run's test views:

- ``recon compress`` (SOG codebooks in the loop, ``--steps`` steps) without masks and with learnable
  masks; time = the fine-tuning plus the write;
- ``splat-transform -g cpu -i ITER RUN/splats.ply out.sog`` (its CPU k-means; ``--st-iterations``
  bounds it); time = the conversion.

Bytes a splat are per splat of the trained run (what the file costs for the scene), ``x .ply`` the
standard .ply's size over the file's. Output: outputs/bench/compress_sog.json and a table.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path("outputs") / "bench"
ROOT = Path(__file__).resolve().parents[2]


def splat_transform(path: str | None) -> str | None:
    """The splat-transform executable: ``path``, else tools/node_modules/.bin, else the PATH."""
    if path:
        return path
    local = ROOT / "tools" / "node_modules" / ".bin" / "splat-transform"
    return str(local) if local.exists() else shutil.which("splat-transform")


def _row(label: str, path: Path, n_run: int, ply_bytes: int, seconds: float, splats, scene, device, base) -> dict:
    from pruning.compress import _score
    from pruning.formats import read_splats

    back = read_splats(path)
    score = _score(back, scene, device)
    size = path.stat().st_size
    return {"variant": label, "n_splats": len(back), "bytes": size, "bytes_per_splat": size / n_run,
            "bytes_per_kept_splat": size / max(len(back), 1), "x_ply": ply_bytes / size, "psnr": score["psnr"],
            "dpsnr": score["psnr"] - base["psnr"], "ssim": score["ssim"], "seconds": seconds}


def compare(run_dir: Path, *, steps: int, st_iterations: int, tool: str | None, progress: bool) -> dict:
    """Rows for ours (no masks, masks) and splat-transform's SOG of the run's splats."""
    from pruning.compress import SOG_FILE, CompressConfig, _score, compress_splats
    from pruning.orient import player_orientation, scene_in_player_frame
    from reconstruct.run import Run, resolve_device

    run = Run.open(run_dir)
    train_cfg, scene, splats = run.splat_config, run.scene(), run.splats()
    device = resolve_device("auto")
    base = _score(splats, scene, device)
    ply_bytes, n = run.splats_path.stat().st_size, len(splats)
    file_scene = scene_in_player_frame(scene, player_orientation("auto", scene=scene))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, masks in (("recon compress", False), ("recon compress, masks", True)):
            cfg = CompressConfig(masks=masks, quantize=True, mask_steps=steps, quantize_steps=steps, progress=progress,
                                 export_compressed_ply=False)
            out = Path(tmp) / label.replace(" ", "_").replace(",", "")
            report = compress_splats(splats, scene, out, cfg, optim=train_cfg.optim, loss=train_cfg.loss, before=base)
            t = report["timings"]  # fine-tuning and the write, not the scoring renders
            seconds = t.get("masks_seconds", 0.0) + t["quantize_seconds"] + t["sog_seconds"]
            # scene.sog stands upright (the file's frame): scored from the cameras turned the same way
            rows.append(_row(label, out / SOG_FILE, n, ply_bytes, seconds, splats, file_scene, device, base))
            print(json.dumps(rows[-1]), file=sys.stderr)
        exe = splat_transform(tool)
        st_note = None
        if exe is None:
            st_note = "splat-transform not found (tools/node_modules/.bin or PATH)"
        else:
            dst = Path(tmp) / "splat-transform.sog"
            cmd = [exe, "-g", "cpu", "-i", str(st_iterations), "-w", str(run.splats_path), str(dst)]
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True)
            except OSError as err:
                proc = subprocess.CompletedProcess(cmd, -1, "", f"{exe}: {err.strerror or err}")
            seconds = time.perf_counter() - t0
            if proc.returncode != 0 or not dst.exists():
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                st_note = f"splat-transform failed ({proc.returncode}): {tail[0]}"
            else:
                rows.append(_row(f"splat-transform -i {st_iterations}", dst, n, ply_bytes, seconds, splats, scene,
                                 device, base))
                print(json.dumps(rows[-1]), file=sys.stderr)
    return {"run": str(run_dir), "n_splats": n, "sh_degree": splats.sh_degree, "ply_bytes": ply_bytes,
            "psnr_before": base["psnr"], "ssim_before": base["ssim"], "n_test": base["n_test"], "steps": steps,
            "st_iterations": st_iterations, "st_note": st_note, "rows": rows}


def run_sog_bench(bench, run_dir: Path) -> dict:
    """The comparison on ``run_dir``, written to outputs/bench/compress_sog.json and printed as a table."""
    from scenes.fileio import atomic_write_text

    results = compare(run_dir, steps=bench.steps, st_iterations=bench.st_iterations, tool=bench.splat_transform,
                      progress=not bench.json)
    atomic_write_text(OUT / "compress_sog.json", json.dumps(results, indent=2))
    if not bench.json:
        print_table(results)
        print(f"wrote {OUT / 'compress_sog.json'}")
    return results


def print_table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"scene.sog vs splat-transform: {results['run']} ({results['n_splats']:,} splats, SH "
                        f"{results['sh_degree']}, .ply {results['ply_bytes'] / 1e6:.2f} MB, "
                        f"{results['psnr_before']:.2f} dB, SSIM {results['ssim_before']:.3f})")
    for col in ("variant", "splats", "bytes", "B/splat", "x .ply", "PSNR", "dPSNR", "SSIM", "seconds"):
        table.add_column(col, justify="right")
    for r in results["rows"]:
        table.add_row(r["variant"], f"{r['n_splats']:,}", f"{r['bytes']:,}", f"{r['bytes_per_splat']:.2f}",
                      f"{r['x_ply']:.1f}x", f"{r['psnr']:.3f}", f"{r['dpsnr']:+.3f}", f"{r['ssim']:.3f}",
                      f"{r['seconds']:.1f}")
    Console().print(table)
    if results.get("st_note"):
        print(results["st_note"])
