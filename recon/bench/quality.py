"""`recon bench quality`: the standard sparse-view protocols that are available, next to the papers.

Runs lego 8 views (Blender, test = every 8th test frame, stated resolution) and fern 3 views (LLFF,
1/8 resolution) with the default preset for the view count, through the same code path as
`recon train` / `recon eval`, and writes outputs/bench/quality.{md,json} with PSNR, SSIM, LPIPS,
Gaussians, train time and device beside the published averages of DESIGN.md.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from scenes.fileio import atomic_write_text

#: Published averages (PSNR, SSIM, LPIPS) from DESIGN.md, per protocol.
PUBLISHED = {
    "llff-3": [("3DGS", "15.5-19.2", None, None), ("FSGS", 20.43, None, None), ("CoR-GS", 20.45, None, None),
               ("DropGaussian", 20.76, None, None), ("Binocular3DGS", 21.44, None, None),
               ("Binocular3DGS + dropout", 22.12, 0.777, 0.154)],
    "blender-8": [("DNGaussian", 24.31, None, None), ("FSGS", 24.64, None, None),
                  ("DropGaussian", 25.42, 0.888, 0.089)],
}


@dataclass(frozen=True)
class Protocol:
    name: str
    scene: str
    views: int
    args: tuple[str, ...]
    note: str


def protocols(data_root: Path, iters: int, fern_width: int, lego_width: int) -> list[Protocol]:
    return [
        Protocol("llff-3", str(data_root / "llff_fern"), 3, ("--iters", str(iters), "--resolution", str(fern_width)),
                 f"fern only (the papers average 8 LLFF scenes), {fern_width} px wide (papers: images_8, 504x378), "
                 "test = images 0, 8, 16"),
        Protocol("blender-8", str(data_root / "blender_lego"), 8,
                 ("--iters", str(iters), "--resolution", str(lego_width), "--data.test-every", "8"),
                 f"lego only (the papers average 8 scenes), {lego_width}x{lego_width} (papers: 400x400), 25 test views"),
    ]


def run_bench(json_out: bool = False, *, iters: int = 1000, fern_width: int = 252, lego_width: int = 100,
              out_dir: Path = Path("outputs/bench")) -> int:
    """Defaults fit a 2-core CPU (about 10 minutes each); on a GPU use --iters 7000 and the papers'
    resolutions (504 and 400 px wide)."""
    from recon.bench.common import shared_data_root
    from recon.train import parse_train, train
    from reconstruct.run import Run

    root = shared_data_root()
    if root is None:
        print("recon: bench quality needs ../shared/data (blender_lego, llff_fern) beside the repository",
              file=sys.stderr)
        return 1
    device = _device_name()
    rows = []
    for proto in protocols(root, iters, fern_width, lego_width):
        run_dir = out_dir / f"quality-{proto.name}"
        t0 = time.perf_counter()
        code = train(parse_train([proto.scene, "--views", str(proto.views), *proto.args, "--out", str(run_dir),
                                  "--overwrite"]))
        if code != 0:
            return code
        wall = time.perf_counter() - t0
        metrics = json.loads(Run(run_dir).metrics_path().read_text())
        rows.append({
            "protocol": proto.name, "scene": Path(proto.scene).name, "views": proto.views, "iters": iters,
            "note": proto.note, "psnr": metrics["psnr"], "ssim": metrics["ssim"], "lpips": metrics["lpips"],
            "lpips_reason": metrics.get("lpips_reason"), "n_gaussians": metrics["n_gaussians"],
            "train_seconds": metrics["train_seconds"], "wall_seconds": wall, "device": device,
            "run": str(run_dir), "published": PUBLISHED[proto.name],
        })
    report = {"rows": rows}
    atomic_write_text(out_dir / "quality.json", json.dumps(report, indent=2))
    atomic_write_text(out_dir / "quality.md", to_markdown(rows))
    print(json.dumps(report) if json_out else to_markdown(rows))
    return 0


def to_markdown(rows: list[dict]) -> str:
    lines = ["| protocol | method | PSNR | SSIM | LPIPS | Gaussians | train s | device |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lp = "n/a" if r["lpips"] is None else f"{r['lpips']:.3f}"
        lines.append(f"| {r['protocol']} ({r['scene']}, {r['iters']} steps) | recon | {r['psnr']:.2f} | "
                     f"{r['ssim']:.3f} | {lp} | {r['n_gaussians']:,} | {r['train_seconds']:.0f} | {r['device']} |")
        for name, p, s, l in r["published"]:
            fmt = lambda v, f: "" if v is None else (v if isinstance(v, str) else format(v, f))  # noqa: E731
            lines.append(f"| {r['protocol']} | {name} (published) | {fmt(p, '.2f')} | {fmt(s, '.3f')} | "
                         f"{fmt(l, '.3f')} | | | |")
    notes = [f"- {r['protocol']}: {r['note']}" for r in rows]
    reason = next((r["lpips_reason"] for r in rows if r["lpips"] is None and r.get("lpips_reason")), None)
    if reason:
        notes.append(f"- LPIPS: {reason}")
    return "\n".join(lines + [""] + notes) + "\n"


def _device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU {platform.machine()}, {torch.get_num_threads()} threads"
