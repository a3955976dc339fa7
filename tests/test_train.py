"""End-to-end splat training on a tiny procedural scene: outputs, config round trip, resume after
SIGKILL, refusal to overwrite, the non-finite guard, and `recon eval`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from reconstruct.cli import main
from reconstruct.demo import write_demo_scene

FAST = ["--views", "4", "--init.kind", "random", "--init.n-random", "800", "--densify.refine-start-iter", "10",
        "--densify.refine-every", "10", "--output.log-every", "5", "--optim.sh-degree", "1", "--preset", "vanilla"]


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory) -> Path:
    return write_demo_scene(tmp_path_factory.mktemp("scene"), n_train=6, n_test=2, size=32)


@pytest.fixture(scope="module")
def trained_run(tiny_scene, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", str(tiny_scene), *FAST, "--iters", "60", "--out", str(out)]) == 0
    return out


def test_training_writes_every_output(trained_run):
    for name in ("config.json", "checkpoint.pt", "splats.ply", "metrics.json", "grid.png", "curves.png"):
        assert (trained_run / name).is_file(), name
    assert len(list((trained_run / "renders").glob("test_*.png"))) == 2
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["n_test"] == 2 and 5 < metrics["psnr"] < 60 and 0 < metrics["ssim"] <= 1
    history = [h for h in torch.load(trained_run / "checkpoint.pt", weights_only=False)["history"] if "loss" in h]
    assert history[-1]["loss"] < 0.7 * history[0]["loss"], "training did not reduce the loss"


def test_config_json_reproduces_the_run_config(trained_run, tmp_path):
    from reconstruct.run_train import parse_args
    from reconstruct.runs import load_config

    saved = load_config(trained_run)
    cfg, resume, overwrite = parse_args(["--config", str(trained_run / "config.json")])
    assert cfg == saved and resume is None and not overwrite
    cfg2, _, _ = parse_args(["--config", str(trained_run), "--iters", "7"])
    assert cfg2.optim.iters == 7 and cfg2.densify == saved.densify


def test_existing_output_is_not_overwritten(trained_run, tiny_scene, capsys):
    before = (trained_run / "splats.ply").stat().st_mtime_ns
    assert main(["train", str(tiny_scene), *FAST, "--iters", "5", "--out", str(trained_run)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0] and str(trained_run) in err[0]
    assert (trained_run / "splats.ply").stat().st_mtime_ns == before


def test_eval_json_keys(trained_run, capsys):
    assert main(["eval", str(trained_run), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("psnr", "ssim", "lpips", "n_test", "n_gaussians", "train_seconds", "render_fps", "ply_bytes"):
        assert key in out, key
    assert out["lpips"] is None or out["lpips"] >= 0
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert abs(out["psnr"] - metrics["psnr"]) < 1e-6


def _train_cmd(scene: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "reconstruct.cli", "train", str(scene), *FAST, "--iters", "40",
            "--output.checkpoint-every", "5", "--out", str(out), *extra]


def _final_psnr(run: Path) -> float:
    return json.loads((run / "metrics.json").read_text())["psnr"]


def test_resume_after_sigkill_matches_uninterrupted_run(tiny_scene, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    straight = tmp_path / "straight"
    subprocess.run(_train_cmd(tiny_scene, straight), check=True, env=env, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(tiny_scene, killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    step = 0
    while time.monotonic() < deadline and proc.poll() is None:
        ckpt = killed / "checkpoint.pt"
        if ckpt.is_file():
            try:
                step = torch.load(ckpt, weights_only=False)["step"]
            except Exception:  # noqa: BLE001 - never half-written (atomic rename), but be robust
                step = 0
            if step >= 15:
                break
        time.sleep(0.2)
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 15 <= step < 40 and not (killed / "metrics.json").exists()
    subprocess.run([sys.executable, "-m", "reconstruct.cli", "train", "--resume", str(killed)],
                   check=True, env=env, capture_output=True)
    assert abs(_final_psnr(killed) - _final_psnr(straight)) <= 0.1


def test_nonfinite_steps_are_rolled_back_then_the_run_stops(tiny_scene, tmp_path):
    from reconstruct.config import TrainConfig
    from reconstruct.train import Trainer
    from scenes import load_scene
    from scenes.errors import ReconError

    scene = load_scene(tiny_scene, views=4)

    class Poison:
        name, needs_depth = "poison", False

        def __init__(self, bad_steps):
            self.bad_steps = bad_steps

        def loss(self, trainer, view, renders, step):
            return renders.sum() * (float("nan") if step in self.bad_steps else 0.0)

    def make(out: Path, bad) -> Trainer:
        cfg = TrainConfig(scene=tiny_scene, views=4)
        cfg.optim.iters, cfg.densify.enabled = 12, False
        trainer = Trainer(cfg, scene, out, torch.device("cpu"))
        out.mkdir(parents=True, exist_ok=True)
        pts = np.random.default_rng(0).uniform(-1, 1, (300, 3))
        trainer.initialize(pts, np.full_like(pts, 0.5))
        trainer.save_checkpoint()
        trainer.regularizers.append(Poison(bad))
        return trainer

    ok = make(tmp_path / "a", {3, 7})
    ok.run([])
    assert ok.step == 12 and ok.failed_steps == [3, 7]
    assert all(torch.isfinite(p).all() for p in ok.params.values())
    doomed = make(tmp_path / "b", set(range(100)))
    with pytest.raises(ReconError, match="step"):
        doomed.run([])
    assert (tmp_path / "b" / "checkpoint.pt").is_file()


def test_training_with_learnable_masks_runs_in_the_real_trainer(tiny_scene, tmp_path):
    from pruning.formats import read_splats

    out = tmp_path / "masked"
    assert main(["train", str(tiny_scene), *FAST, "--iters", "25", "--masks", "--out", str(out)]) == 0
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    n = len(ckpt["params"]["means"])
    assert ckpt["params"]["masks"].shape[0] == n
    assert len(read_splats(out / "splats.ply")) == n
    assert any("mask" in h for h in ckpt["history"])


def test_live_viewer_binds_localhost_unless_told(monkeypatch):
    import types

    import viewer.live
    from reconstruct import hooks
    from reconstruct.config import TrainConfig

    seen = {}
    monkeypatch.setattr(viewer.live, "LiveViewerHook", lambda trainer, **kw: seen.update(kw))
    hooks.viewer_hook(types.SimpleNamespace(cfg=TrainConfig(scene=Path("s"))))
    assert seen == {"host": "127.0.0.1", "port": 8080}
    cfg = TrainConfig(scene=Path("s"), viewer_host="0.0.0.0", viewer_port=9001)
    hooks.viewer_hook(types.SimpleNamespace(cfg=cfg))
    assert seen == {"host": "0.0.0.0", "port": 9001}


def test_compress_then_eval_compressed_through_the_cli(trained_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)  # compress writes RUN/compressed/; keep the shared run untouched
    capsys.readouterr()
    assert main(["compress", str(run), "--mask-steps", "8", "--quantize-steps", "8", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("n_before", "n_after", "ply_bytes", "artifact_bytes", "psnr_before", "psnr_after", "ssim_before",
                "ssim_after"):
        assert key in report, key
    assert report["n_after"] <= report["n_before"] and report["artifact_bytes"] < report["ply_bytes"]
    assert (run / "compressed" / "report.json").is_file()
    assert main(["eval", str(run), "--compressed", "--json"]) == 0
    scored = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert abs(scored["psnr"] - report["psnr_after"]) < 1e-4
    assert scored["n_gaussians"] == report["n_after"] and scored["ply_bytes"] == report["artifact_bytes"]
    assert (run / "compressed" / "metrics.json").is_file()
    # The run's own metrics are left alone.
    assert json.loads((run / "metrics.json").read_text())["n_gaussians"] == report["n_before"]
