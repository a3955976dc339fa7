"""Tables the CLI prints (rich on stdout) for results the library returns as dicts."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

METRIC_KEYS = ("psnr", "ssim", "lpips", "n_test", "psnr_unaligned", "train_psnr", "train_ssim", "registered", "n_images",
               "rotation_error_deg", "rotation_error_deg_max", "position_error", "position_error_max", "relative_rotation_error_deg",
                "sfm_rotation_error_deg", "sfm_relative_rotation_error_deg",
                "sfm_position_error", "sfm_seconds",
               "n_gaussians", "n_params", "train_seconds", "render_fps", "ply_bytes", "orbit")


def print_metrics(result: dict, *, title: str, file: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for key in METRIC_KEYS:
        if key in result:
            value = result[key]
            text = ("n/a" if value is None else value if isinstance(value, str) else
                    f"{value:.4f}" if isinstance(value, float) else f"{value:,}")
            table.add_row(key, text)
    console = Console(file=file)
    console.print(table)
    if result.get("lpips") is None and result.get("lpips_reason"):
        console.print(f"lpips n/a: {result['lpips_reason']}", soft_wrap=True)
    for warning in result.get("warnings") or []:
        console.print(f"warning: {warning}; the scores above are not a reconstruction's", soft_wrap=True)


def print_compress_report(report: dict, *, json_out: bool) -> None:
    """One JSON object (the report's keys plus extras) or a rich table."""
    from pruning.compress import JSON_KEYS
    if report.get("method") == "nerf":
        keys = ("psnr_before", "psnr_after", "ssim_before", "ssim_after", "cells_kept", "cells_total",
                "hash_params_run", "hash_params_total", "hash_params_in_use", "hash_params_droppable",
                "fraction_in_use", "n_params_run", "n_params_after")
        if json_out:
            print(json.dumps({k: report[k] for k in keys}))
        else:
            from rich.console import Console
            from rich.table import Table

            table = Table(title=f"recon compress --admm {report.get('run', '')}")
            table.add_column("")
            table.add_column("value", justify="right")
            for k in keys:
                v = report[k]
                table.add_row(k, f"{v:.4f}" if isinstance(v, float) else f"{v:,}")
            Console(file=sys.stdout).print(table)
        return
    if json_out:
        wanted = [*JSON_KEYS, "compressed_ply_bytes", "sog_bytes", "psnr_sog", "ratio", "sog_ratio", "sog_trained"]
        print(json.dumps({k: report.get(k) for k in wanted if k in report or k in JSON_KEYS}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"recon compress {report.get('run', '')}")
    table.add_column("")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_row("Gaussians", f"{report['n_before']:,}", f"{report['n_after']:,}")
    table.add_row("bytes", f"{report['ply_bytes']:,} (.ply)", f"{report['artifact_bytes']:,} (artifact)")
    if report.get("sog_bytes"):
        how = "fine-tuned" if report.get("sog_trained") else "converted"
        table.add_row("scene.sog", how, f"{report['sog_bytes']:,} ({report['sog_bytes_per_splat']:.1f} B/splat, "
                                        f"{report['psnr_sog']:.3f} dB)")
    if report.get("compressed_ply_bytes"):
        table.add_row("compressed .ply", "", f"{report['compressed_ply_bytes']:,}")
    def score(key: str, spec: str) -> str:  # a run without test views (a photo folder) has no scores
        return "n/a" if report.get(key) is None else format(report[key], spec)

    table.add_row("PSNR (dB)", score("psnr_before", ".3f"), score("psnr_after", ".3f"))
    table.add_row("SSIM", score("ssim_before", ".4f"), score("ssim_after", ".4f"))
    table.caption = f"{report['ratio']:.1f}x smaller than the standard .ply; {report['n_test']} test views"
    Console(file=sys.stdout).print(table)


def print_export_report(report, *, json_out: bool = False) -> None:
    if json_out:
        print(json.dumps(asdict(report), indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"recon export -> {report.out}", show_header=False)
    table.add_row("source", f"{report.source} ({report.source_kind})")
    table.add_row("format", f"{report.format}, SH degree {report.sh_degree}")
    table.add_row("splats", f"{report.n_splats:,}")
    table.add_row("file size", f"{report.bytes:,} bytes ({report.bytes / 2**20:.2f} MiB)")
    table.add_row("bytes per splat", f"{report.bytes_per_splat:.2f}")
    table.add_row("vs float .ply", f"{report.ply_bytes / report.bytes:.2f}x smaller")
    table.add_row("upright", f"{report.up}; turned {report.turn_deg:.1f} deg")
    if report.psnr_vs_trained is not None:
        table.add_row("PSNR vs trained renders", f"{report.psnr_vs_trained:.2f} dB ({report.n_views} test views)")
        table.add_row("PSNR vs photos", f"exported {report.psnr_export_gt:.2f} dB, trained "
                                         f"{report.psnr_trained_gt:.2f} dB "
                                         f"(delta {report.psnr_export_gt - report.psnr_trained_gt:+.2f} dB)")
    else:
        table.add_row("PSNR", report.psnr_note or "not measured")
    Console().print(table)


def _ids(ids: tuple[int, ...], limit: int = 24) -> str:
    shown = ", ".join(str(i) for i in ids[:limit])
    return f"[{shown}{', ...' if len(ids) > limit else ''}]"


def _print_table(lines: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        print(f"{k:<{width}}  {v}")


def _print_photos(path: Path, summary: dict) -> None:
    _print_table([
        ("scene", str(path)),
        ("format", "photos (no camera poses: they are estimated from the photos)"),
        ("photos", str(summary["n_frames"])),
        ("one camera", "yes" if summary["one_camera"] else "no"),
    ])
    for p in summary["photos"]:
        focal = "no EXIF focal"
        if p["focal_px"] is not None:
            parts = [f"{p['focal_px']:.1f} px"]
            if p["focal_35mm"] is not None:
                parts.append(f"{p['focal_35mm']:g} mm (35 mm equiv.)")
            elif p["focal_mm"] is not None:
                parts.append(f"{p['focal_mm']:g} mm")
            focal = ", ".join(parts)
        elif p["focal_mm"] is not None:
            focal = f"{p['focal_mm']:g} mm (sensor size unknown)"
        print(f"  {Path(p['path']).name}  {p['width']} x {p['height']}  {focal}")


def print_info(
    path: Path, *, views: int | None = None, downscale: float | None = None, resolution: int | None = None, as_json: bool = False
) -> int:
    """Load ``path`` (headers only) and print its summary; returns the exit code."""
    from scenes.info import photos_summary, scene_summary
    from scenes.load import detect_format, load_scene

    if detect_format(path) == "photos":
        summary = photos_summary(Path(path))
        if as_json:
            sys.stdout.write(json.dumps(summary) + "\n")
        else:
            _print_photos(Path(path), summary)
        return 0
    scene = load_scene(path, views=views, downscale=downscale, resolution=resolution)
    if as_json:
        sys.stdout.write(json.dumps(scene_summary(scene)) + "\n")
        return 0
    lines = [
        ("scene", str(scene.root)),
        ("format", scene.format),
        ("frames", str(scene.n_frames)),
        ("image size", f"{scene.width} x {scene.height} (downscale {scene.downscale:g})"),
        ("camera", scene.camera_model + (" (undistorted on load)" if scene.distortion is not None else "")),
        (f"train ({len(scene.train_ids)})", _ids(scene.train_ids)),
        (f"test ({len(scene.test_ids)})", _ids(scene.test_ids)),
        ("near / far", f"{scene.near:.3g} / {scene.far:.3g}"),
        ("sparse points", f"yes ({len(scene.points)})" if scene.points is not None else "no"),
    ]
    if scene.has_masks:
        lines.append(("object masks", "yes (metrics are masked)"))
    _print_table(lines)
    return 0


def print_batch_table(rows: list[dict], *, title: str, file: TextIO | None = None) -> None:
    """One line per scene of `recon batch` (what DIR/batch.csv holds, in short); errors below it."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    def num(value, fmt: str) -> str:
        return "" if value is None else format(value, fmt)

    def size(value) -> str:
        return "" if value is None else (f"{value / 1e6:.1f} MB" if value >= 1e6 else f"{value / 1e3:.0f} kB")

    compressed = any(r.get("compressed_bytes") is not None for r in rows)
    exported = any(r.get("export_bytes") is not None for r in rows)
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("scene", overflow="fold")
    for col in ("status", "PSNR", "SSIM", "Gaussians", ".ply", *(("PSNR c.", "compr.") if compressed else ()),
                *(("export",) if exported else ()), "train s", "task s"):
        table.add_column(col, no_wrap=True, justify="left" if col == "status" else "right")
    for r in rows:
        cells = [r["scene"], r["status"], num(r.get("psnr"), ".2f"), num(r.get("ssim"), ".3f"), num(r.get("gaussians"), ","),
                 size(r.get("ply_bytes"))]
        if compressed:
            cells += [num(r.get("psnr_compressed"), ".2f"), size(r.get("compressed_bytes"))]
        if exported:
            cells += [size(r.get("export_bytes"))]
        cells += [num(r.get("train_seconds"), ".1f"), num(r.get("seconds"), ".1f")]
        table.add_row(*cells)
    out = file or sys.stdout
    console = Console(file=out, width=None if out.isatty() else 132)  # a file or a pipe is not 80 columns wide
    console.print(table)
    for r in rows:
        if r.get("error"):
            console.print(f"{r['scene']}: {r['error']}", markup=False, highlight=False, soft_wrap=True)
