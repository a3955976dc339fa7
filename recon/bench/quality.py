"""`recon bench quality`: the standard sparse-view protocols, vanilla vs the sparse preset, next to the papers.

``--protocol quick`` runs lego 8 views and fern 3 views at reduced resolution and a short schedule
(minutes on a CPU). ``--protocol paper`` runs every scene folder of ../shared/data at the papers'
protocol (LLFF: images_8 504x378, 3 views, test every 8th image; Blender: 400x400, 8 views, all 200
test views; DTU: 400x300, the RegNeRF 3-view split, object-masked metrics) with DropGaussian's 10k-step
schedule. Both go through `recon train` and write outputs/bench/quality[-paper].{md,json}; each run is
its own run folder, so the paper protocol resumes where it stopped (a finished run is reused, an
interrupted one continues from its checkpoint). ``--record DIR`` keeps the small files of every
finished run (config, metrics, history, the commit that trained it) in DIR and restores them from
there, so a benchmark longer than one machine's life goes on where it stopped once DIR is committed.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from scenes.fileio import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    from recon.bench import QualityBench

#: Published averages (PSNR, SSIM, LPIPS) from DESIGN.md, per protocol.
PUBLISHED: dict[str, list[tuple[str, float | str, float | None, float | None]]] = {
    "llff-3": [("3DGS", "15.5-19.2", None, None), ("FSGS", 20.43, None, None), ("CoR-GS", 20.45, None, None),
               ("DropGaussian", 20.76, 0.713, 0.200), ("Binocular3DGS (weights)", 21.44, None, None),
               ("Binocular3DGS + dropout (weights)", 22.12, 0.777, 0.154)],
    "blender-8": [("DNGaussian", 24.31, None, None), ("FSGS", 24.64, None, None),
                  ("DropGaussian", 25.42, 0.888, 0.089)],
    "dtu-3": [],
}


@dataclass(frozen=True)
class Protocol:
    name: str
    """Protocol key of PUBLISHED (llff-3, blender-8, dtu-3)."""
    scene: Path
    args: tuple[str, ...]
    """`recon train` options of the protocol (views, resolution, test split)."""
    note: str


#: Switches an ablation preset may toggle: its train flag and the flag's values for +name / -name.
TOGGLES: dict[str, tuple[str, str, str]] = {
    **{name: (f"--priors.{name.replace('_', '-')}.enabled", "True", "False") for name in
       ("dropout", "binocular", "pseudo_views", "sfm_depth", "mono_depth", "diffusion", "needles")},
    "prune_near": ("--densify.prune-near", "True", "False"),
    "prune_unseen": ("--densify.prune-unseen", "True", "False"),
    "dense_init": ("--init.kind", "dense", "sfm"),
    "regrow": ("--densify.regrow-at-budget", "True", "False"),
}


def preset_args(preset: str) -> list[str]:
    """`recon train` options of a preset name: vanilla, sparse, or one of them followed by +name / -name
    switches (``sparse-dropout``: the sparse preset without dropout)."""
    from scenes.errors import ReconError

    match = re.fullmatch(r"(vanilla|sparse)((?:[+-][a-z_]+)*)", preset)
    if match is None:
        raise ReconError(None, f"--presets {preset}: expected vanilla or sparse, then +name / -name switches")
    args = ["--preset", match[1]]
    for sign, name in re.findall(r"([+-])([a-z_]+)", match[2]):
        if name not in TOGGLES:
            raise ReconError(None, f"--presets {preset}: no switch {name!r} (one of {', '.join(TOGGLES)})")
        flag, on, off = TOGGLES[name]
        args += [flag, on if sign == "+" else off]
    return args


def scene_protocol(scene: Path) -> Protocol | None:
    """The papers' protocol for a scene folder, from its layout (None: not a known layout)."""
    if (scene / "transforms_train.json").is_file():
        return Protocol("blender-8", scene, ("--views", "8", "--resolution", "400", "--data.test-every", "1"),
                        "400x400, 8 views, all 200 test views")
    if (scene / "poses_bounds.npy").is_file():
        return Protocol("llff-3", scene, ("--views", "3", "--downscale", "8"),
                        "images_8 (504x378), 3 views, test = every 8th image")
    if (scene / "cameras_sphere.npz").is_file():
        return Protocol("dtu-3", scene, ("--views", "3"), "400x300, views 25/22/28, masked metrics")
    return None


def quick_protocols(root: Path, fern_width: int, lego_width: int) -> list[Protocol]:
    return [
        Protocol("llff-3", root / "llff_fern", ("--views", "3", "--resolution", str(fern_width)),
                 f"fern, {fern_width} px wide (papers: images_8, 504x378), test = images 0, 8, 16"),
        Protocol("blender-8", root / "blender_lego",
                 ("--views", "8", "--resolution", str(lego_width), "--data.test-every", "8"),
                 f"lego, {lego_width}x{lego_width} (papers: 400x400), 25 test views"),
    ]


def finished_metrics(run_dir: Path, iters: int) -> dict | None:
    """metrics.json of ``run_dir`` when it finished ``iters`` steps, else None."""
    from reconstruct.run import Run

    if not Run.is_run(run_dir) or not Run(run_dir).metrics_path().is_file():
        return None
    metrics = json.loads(Run(run_dir).metrics_path().read_text())
    return metrics if metrics.get("iters") == iters else None


def train_or_resume(run_dir: Path, args: list[str], iters: int) -> dict:
    """metrics.json of ``run_dir`` trained with ``recon train <args>``: reused when the run there
    finished ``iters`` steps, continued from its checkpoint when it was interrupted."""
    from recon.train import parse_train, train
    from reconstruct.run import Run
    from scenes.errors import ReconError

    done = finished_metrics(run_dir, iters)
    if done is not None:
        return done
    if Run.is_run(run_dir):
        run = Run(run_dir)
        if not run.metrics_path().is_file() and run.has_checkpoint():
            code = train(parse_train(["--resume", str(run_dir)]))
            if code != 0:
                raise ReconError(run_dir, f"resuming the run failed (exit {code})")
            return json.loads(run.metrics_path().read_text())
    code = train(parse_train([*args, "--out", str(run_dir), "--overwrite"]))
    if code != 0:
        raise ReconError(run_dir, f"training failed (exit {code})")
    return json.loads(Run(run_dir).metrics_path().read_text())


RECORD_FILES = ("config.json", "metrics.json", "history.json", "trained.json")
"""What ``--record`` keeps of a finished run (no splats, checkpoint or renders)."""


def restore_record(record: Path, run_dir: Path, iters: int) -> bool:
    """Copy a finished run's record into ``run_dir`` unless ``run_dir`` finished already; True when copied."""
    if finished_metrics(run_dir, iters) is not None or finished_metrics(record, iters) is None:
        return False
    for name in RECORD_FILES:
        if (record / name).is_file():
            atomic_write_bytes(run_dir / name, (record / name).read_bytes())
    return True


def save_record(run_dir: Path, record: Path, device: str) -> None:
    """Keep ``run_dir``'s small files in ``record``, with trained.json (the commit and device that
    trained it) written first when the run has none."""
    if not (run_dir / "trained.json").is_file():
        atomic_write_text(run_dir / "trained.json", json.dumps({"commit": code_commit(), "device": device}) + "\n")
    for name in RECORD_FILES:
        if (run_dir / name).is_file():
            atomic_write_bytes(record / name, (run_dir / name).read_bytes())


def code_commit() -> str | None:
    """Commit of the checkout this code runs from (with ``+changes`` when its tree differs), or None."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=10", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+changes" if dirty else "") if head else None


def run_bench(cfg: "QualityBench") -> int:
    from recon.bench.common import shared_data_root
    from scenes.errors import ReconError

    root = cfg.data or shared_data_root()
    if root is None or not root.is_dir():
        print("recon: bench quality needs ../shared/data beside the repository", file=sys.stderr)
        return 1
    paper = cfg.protocol == "paper"
    iters = cfg.iters or (10_000 if paper else 1000)
    if paper:
        missing = [name for name in cfg.scenes if not (root / name).is_dir()]
        if missing:
            raise ReconError(root / missing[0], "no such scene folder (--scenes names folders of the data root)")
        folders = [p for p in sorted(root.iterdir()) if p.is_dir() and (not cfg.scenes or p.name in cfg.scenes)]
        protos = [p for p in map(scene_protocol, folders) if p is not None]
        extra = ["--output.eval-every", str(cfg.eval_every)]
    else:
        protos = quick_protocols(root, cfg.fern_width, cfg.lego_width)
        extra = []
    device = _device_name()
    rows: list[dict] = []
    pending: list[str] = []
    for proto in protos:
        for preset in cfg.presets:
            name = f"{proto.scene.name}-{preset}"
            run_dir = cfg.out / ("paper" if paper else "quick") / name
            record = None if cfg.record is None else cfg.record / ("paper" if paper else "quick") / name
            if record is not None:
                restore_record(record, run_dir, iters)
            args = [str(proto.scene), *proto.args, *preset_args(preset), "--iters", str(iters), *extra]
            if not cfg.train:
                m = finished_metrics(run_dir, iters)
                if m is None:
                    pending.append(f"{proto.scene.name} {preset}")
                    continue
            else:
                m = train_or_resume(run_dir, args, iters)
                if record is not None:
                    save_record(run_dir, record, device)
            start = start_count(run_dir)
            trained = json.loads((run_dir / "trained.json").read_text()) if (run_dir / "trained.json").is_file() else {}
            rows.append({
                "protocol": proto.name, "scene": proto.scene.name, "preset": preset, "iters": iters,
                "note": proto.note, "psnr": m["psnr"], "ssim": m["ssim"], "lpips": m["lpips"],
                "lpips_reason": m.get("lpips_reason"), "n_gaussians": m["n_gaussians"], "n_start": start,
                "train_seconds": m["train_seconds"], "warnings": m.get("warnings", []),
                "device": trained.get("device", device), "commit": trained.get("commit"), "run": str(run_dir),
            })
    report = {"protocol": cfg.protocol, "rows": rows, "means": means(rows), "published": PUBLISHED,
              "not_finished": pending}
    stem = "quality-paper" if paper else "quality"
    atomic_write_text(cfg.out / f"{stem}.json", json.dumps(report, indent=2))
    text = to_markdown(rows) + "".join(f"- not finished yet: {p}\n" for p in pending)
    atomic_write_text(cfg.out / f"{stem}.md", text)
    print(json.dumps(report) if cfg.json else text)
    return 0


def start_count(run_dir: Path) -> int | None:
    """Gaussians the run started with (its initialization record in history.json)."""
    from reconstruct.run import Run

    path = Run(run_dir).history_path
    history = json.loads(path.read_text()) if path.is_file() else []
    return next((h["n_points"] for h in history if "n_points" in h), None)


def means(rows: list[dict]) -> list[dict]:
    """Mean PSNR / SSIM per (protocol, preset) over the scenes run."""
    out = []
    for key in dict.fromkeys((r["protocol"], r["preset"]) for r in rows):
        group = [r for r in rows if (r["protocol"], r["preset"]) == key]
        out.append({"protocol": key[0], "preset": key[1], "scenes": [r["scene"] for r in group],
                    "psnr": sum(r["psnr"] for r in group) / len(group),
                    "ssim": sum(r["ssim"] for r in group) / len(group)})
    return out


def _fmt(v: object, spec: str) -> str:
    return "" if v is None else (v if isinstance(v, str) else format(v, spec))


def to_markdown(rows: list[dict]) -> str:
    lines = ["| protocol | scene | preset | steps | PSNR | SSIM | LPIPS | Gaussians (start -> end) | train s | device "
             "| commit |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        start = "?" if r.get("n_start") is None else f"{r['n_start']:,}"
        lines.append(f"| {r['protocol']} | {r['scene']} | {r['preset']} | {r['iters']} | {r['psnr']:.2f} | "
                     f"{r['ssim']:.3f} | {_fmt(r['lpips'], '.3f') or 'n/a'} | {start} -> {r['n_gaussians']:,} | "
                     f"{r['train_seconds']:.0f} | {r['device']} | {r.get('commit') or ''} |")
    lines += ["", "| protocol | method | scenes | PSNR | SSIM | LPIPS |", "|---|---|---|---|---|---|"]
    for proto in dict.fromkeys(r["protocol"] for r in rows):
        for m in means(rows):
            if m["protocol"] == proto:
                lines.append(f"| {proto} | recon {m['preset']} (mean) | {', '.join(m['scenes'])} | {m['psnr']:.2f} | "
                             f"{m['ssim']:.3f} | |")
        for name, p, s, lp in PUBLISHED[proto]:
            lines.append(f"| {proto} | {name} (published) | the papers' set | {_fmt(p, '.2f')} | {_fmt(s, '.3f')} | "
                         f"{_fmt(lp, '.3f')} |")
    notes = [f"- {proto}: {note}" for proto, note in dict.fromkeys((r["protocol"], r["note"]) for r in rows)]
    notes += [f"- {r['scene']} {r['preset']}: {w}" for r in rows for w in r["warnings"]]
    reason = next((r["lpips_reason"] for r in rows if r["lpips"] is None and r.get("lpips_reason")), None)
    if reason:
        notes.append(f"- LPIPS: {reason}")
    return "\n".join(lines + [""] + notes) + "\n"


def _device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU {platform.machine()}, {torch.get_num_threads()} threads"
