"""`recon bench poses`: dataset poses against estimated ones, one budget, one seed.

- fern3: LLFF fern, 3 training views (images 1, 10, 19 of images_8), tested on 0, 8, 16; trained
  once on the dataset's poses and once with ``--poses estimate`` (SfM on the 3 training images only,
  camera refinement while training, similarity alignment and test-time pose alignment when scoring).
- lego6: a folder of photos copied from Blender lego's training images r_26 and its nearest views
  r_0, r_41, r_42, r_67, r_75 (the six scenes/sfm's tests found register), trained as a bare photo
  folder; scored on its training photos; its cameras compared with the dataset's after alignment.

Printed per case: images registered, pose errors after a similarity alignment (rotation in degrees,
position as a fraction of the dataset cameras' extent; SfM alone and after refinement), PSNR / SSIM,
SfM seconds and training seconds. Runs, results.json and table.md go to ``--out``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

LEGO_PHOTOS = ("r_26", "r_0", "r_41", "r_42", "r_67", "r_75")
FERN_VIEWS = 3

PosesBenchConfig = Any
"""recon.bench.PosesBench (the flags)."""


def _data_root(cfg: PosesBenchConfig) -> Path:
    from recon.bench.common import REPO
    from scenes.errors import ReconError

    root = Path(cfg.data) if cfg.data else REPO.parent / "shared" / "data"
    if not root.is_dir():
        raise ReconError(root, "data folder not found (pass --data FOLDER holding llff_fern and blender_lego)")
    return root


def _train(args: list[str]) -> dict:
    from recon.train import parse_train, train

    req = parse_train(args)
    train(req)
    out = req.cfg.output.out
    assert out is not None
    return json.loads((Path(out) / "metrics.json").read_text())


def _row(case: str, poses: str, metrics: dict, n_images: int) -> dict:
    keys = ("registered", "rotation_error_deg", "position_error", "sfm_rotation_error_deg", "sfm_position_error",
            "psnr", "ssim", "train_psnr", "sfm_seconds", "train_seconds", "n_test", "scored_on")
    row = {"case": case, "poses": poses, "n_images": n_images, **{k: metrics.get(k) for k in keys}}
    if poses == "dataset":
        row["registered"] = None
    return row


def fern3(cfg: PosesBenchConfig, out: Path) -> list[dict]:
    fern = _data_root(cfg) / "llff_fern"
    common = [str(fern), "--views", str(FERN_VIEWS), "--resolution", str(cfg.fern_resolution), "--iters", str(cfg.iters),
              "--overwrite"]
    rows = []
    for poses in ("dataset", "estimate"):
        m = _train([*common, "--poses", poses, "--out", str(out / f"fern3-{poses}")])
        rows.append(_row("fern3", poses, m, FERN_VIEWS))
    return rows


def lego6(cfg: PosesBenchConfig, out: Path) -> list[dict]:
    """The lego photo folder: copies of six training images, trained with no poses at all."""
    import numpy as np

    import scenes
    from reconstruct.posefree import pose_errors, training_cameras_from_checkpoint
    from reconstruct.run import Run

    lego = _data_root(cfg) / "blender_lego"
    photos = out / "lego6-photos"
    photos.mkdir(parents=True, exist_ok=True)
    for name in LEGO_PHOTOS:
        shutil.copyfile(lego / "train" / f"{name}.png", photos / f"{name}.png")
    run_dir = out / "lego6-estimate"
    m = _train([str(photos), "--resolution", str(cfg.lego_resolution), "--iters", str(cfg.iters), "--overwrite",
                "--out", str(run_dir)])
    run = Run.open(run_dir)
    scene = run.scene()
    truth = scenes.load_scene(lego, views=None, downscale=None, resolution=cfg.lego_resolution)
    index = {Path(p).resolve(): i for i, p in enumerate(truth.image_paths)}
    ids = list(scene.train_ids)
    gt = np.asarray(truth.T_world_cam)[[index[(lego / "train" / f"{Path(scene.image_paths[i]).stem}.png").resolve()]
                                        for i in ids]]
    sfm = pose_errors(np.asarray(scene.T_world_cam)[ids], gt)
    refined = pose_errors(training_cameras_from_checkpoint(run, scene), gt)
    m.update(rotation_error_deg=refined["rotation_error_deg"], position_error=refined["position_error"],
             sfm_rotation_error_deg=sfm["rotation_error_deg"], sfm_position_error=sfm["position_error"])
    return [_row("lego6", "photos", m, len(LEGO_PHOTOS))]


CASES = {"fern3": fern3, "lego6": lego6}


def table(rows: list[dict]) -> str:
    def f(v, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    lines = ["| case | poses | registered | rot err (deg) SfM / refined | pos err (extent) SfM / refined | PSNR | SSIM "
             "| scored on | SfM s | train s |", "|" + " --- |" * 10]
    for r in rows:
        reg = "-" if r["registered"] is None else f"{r['registered']} of {r['n_images']}"
        lines.append(
            f"| {r['case']} | {r['poses']} | {reg} | {f(r['sfm_rotation_error_deg'], '.3f')} / {f(r['rotation_error_deg'], '.3f')} "
            f"| {f(r['sfm_position_error'], '.4f')} / {f(r['position_error'], '.4f')} | {f(r['psnr'], '.2f')} "
            f"| {f(r['ssim'], '.3f')} | {r.get('scored_on') or 'test views'} | {f(r['sfm_seconds'], '.1f')} "
            f"| {f(r['train_seconds'], '.0f')} |")
    return "\n".join(lines)


def run_bench(cfg: PosesBenchConfig) -> int:
    from scenes.errors import ReconError
    from scenes.fileio import atomic_write_text

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(cfg.cases) - set(CASES))
    if unknown:
        raise ReconError(None, f"recon bench poses: unknown case {unknown[0]!r} (choose from {', '.join(CASES)})")
    rows: list[dict] = []
    for case in cfg.cases:
        rows += CASES[case](cfg, out)
    text = table(rows)
    atomic_write_text(out / "results.json", json.dumps(rows, indent=2, default=str))
    atomic_write_text(out / "table.md", text + "\n")
    print(json.dumps(rows, default=str) if cfg.json else text)
    return 0
