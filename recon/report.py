"""Tables the CLI prints (rich on stdout) for results the library returns as dicts."""

from __future__ import annotations

from typing import TextIO

METRIC_KEYS = ("psnr", "ssim", "lpips", "n_test", "n_gaussians", "n_params", "train_seconds", "render_fps", "ply_bytes")


def print_metrics(result: dict, *, title: str, file: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for key in METRIC_KEYS:
        if key in result:
            value = result[key]
            text = "n/a" if value is None else (f"{value:.4f}" if isinstance(value, float) else f"{value:,}")
            table.add_row(key, text)
    console = Console(file=file)
    console.print(table)
    if result.get("lpips") is None and result.get("lpips_reason"):
        console.print(f"lpips n/a: {result['lpips_reason']}", soft_wrap=True)
