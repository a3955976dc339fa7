"""End-to-end splat training on a tiny procedural scene: outputs, config round trip, resume after
SIGKILL, refusal to overwrite, the non-finite guard, and `recon eval`."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from recon.cli import main
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
    history = [h for h in torch.load(trained_run / "checkpoint.pt", weights_only=True)["history"] if "loss" in h]
    assert history[-1]["loss"] < 0.7 * history[0]["loss"], "training did not reduce the loss"


def test_config_json_reproduces_the_run_config(trained_run, tmp_path):
    from recon.train import parse_train
    from reconstruct.run import Run

    saved = Run.open(trained_run).config
    req = parse_train(["--config", str(trained_run / "config.json")])
    assert req.cfg == saved and req.resume is None and not req.overwrite
    req2 = parse_train(["--config", str(trained_run), "--iters", "7"])
    assert req2.cfg.iters == 7 and req2.cfg.densify == saved.densify


def test_config_json_records_resolved_defaults(trained_run):
    data = json.loads((trained_run / "config.json").read_text())
    assert data["method"] == "splat" and data["preset"] == "vanilla" and data["device"] == "cpu"
    assert Path(data["scene"]).is_absolute()
    assert all(data["priors"][name]["enabled"] is False for name in ("dropout", "binocular", "pseudo_views"))
    assert data["init"]["kind"] == "random" and "resume" not in data and "config" not in data


def test_sparse_preset_is_the_default_for_few_views_and_flags_still_win(tiny_scene):
    from recon.train import parse_train

    cfg = parse_train([str(tiny_scene), "--views", "3"]).cfg
    assert cfg.preset == "sparse" and cfg.init.fallback == "dense" and cfg.priors.dropout.enabled
    cfg = parse_train([str(tiny_scene), "--views", "3", "--priors.dropout.enabled", "False"]).cfg
    assert cfg.preset == "sparse" and not cfg.priors.dropout.enabled and cfg.priors.sfm_depth.enabled
    assert parse_train([str(tiny_scene)]).cfg.preset == "vanilla"


def test_the_presets_densify_as_their_methods(tiny_scene):
    """vanilla: 3DGS's threshold, big-Gaussian prune, densification to 5k; sparse: DropGaussian's
    released settings (threshold 5e-4, opacity prune only, densification to the last step) and the
    prunes of what no training render draws and of what one draws in front of the near bound; once
    the Gaussian budget is reached, vanilla goes on regrowing into what pruning frees and sparse does not."""
    from recon.train import parse_train

    v = parse_train([str(tiny_scene), "--iters", "800"]).cfg.densify
    assert (v.grow_grad2d, v.prune_big, v.refine_stop_iter, v.prune_unseen, v.prune_near) == (2e-4, True, 5_000,
                                                                                            False, False)
    s = parse_train([str(tiny_scene), "--views", "3", "--iters", "800"]).cfg
    assert (s.densify.grow_grad2d, s.densify.prune_big, s.densify.refine_stop_iter) == (5e-4, False, 800)
    assert s.priors.dropout.rate == 0.2 and s.priors.dropout.progressive
    from reconstruct.densify import Densify

    sparse, vanilla = Densify(s.densify, near=1.5).inner, Densify(v, near=1.5).inner
    assert s.densify.prune_unseen and sparse.prune_unseen and not vanilla.prune_unseen
    assert s.densify.prune_near and sparse.near == 1.5 and vanilla.near is None
    assert vanilla.regrow_at_budget and not sparse.regrow_at_budget
    assert vanilla.prune_scale3d == 0.1 and sparse.prune_scale3d == float("inf")
    assert sparse.grow_grad2d == 5e-4
    s = parse_train([str(tiny_scene), "--views", "3", "--densify.grow-grad2d", "3e-4", "--densify.prune-big", "True"]).cfg
    assert s.densify.grow_grad2d == 3e-4 and s.densify.prune_big  # flags win over the preset


@pytest.mark.parametrize("args,needle", [
    (["--method", "nerf", "--masks"], "--masks is a splat option"),
    (["nerf", "--priors.dropout.enabled", "True"], "--priors.dropout.enabled is a splat option"),
    (["splat", "--nerf.lr", "0.1"], "--nerf.lr is a nerf option"),
    (["--iters", "-5"], "--iters -5"),
    (["--output.checkpoint-every", "0"], "--output.checkpoint-every"),
    (["--optim.sh-degree", "9"], "--optim.sh-degree 9"),
    (["--priors.dropout.rate", "1.0"], "--priors.dropout.rate"),
    (["--bogus-flag"], "--bogus-flag"),
])
def test_options_a_method_does_not_read_or_out_of_range_are_refused_in_one_line(tiny_scene, tmp_path, capsys, args,
                                                                              needle):
    out = tmp_path / "never"
    method, rest = (args[:1], args[1:]) if args[0] in ("nerf", "splat") else ([], args)
    code = main(["train", *method, str(tiny_scene), *rest, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and needle in err[0], err
    assert not out.exists()


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


def _train_cmd(scene: Path, out: Path, *extra: str, iters: int = 40) -> list[str]:
    return [sys.executable, "-m", "recon.cli", "train", str(scene), *FAST, "--iters", str(iters),
            "--output.checkpoint-every", "5", "--out", str(out), *extra]


def _final_psnr(run: Path) -> float:
    return json.loads((run / "metrics.json").read_text())["psnr"]


def test_resume_after_sigkill_matches_uninterrupted_run(tiny_scene, tmp_path):
    # 200 steps: on a quiet machine the tiny scene trains past 40 steps between two polls
    iters = 200
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    straight = tmp_path / "straight"
    subprocess.run(_train_cmd(tiny_scene, straight, iters=iters), check=True, env=env, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(tiny_scene, killed, iters=iters), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    step = 0
    while time.monotonic() < deadline and proc.poll() is None:
        ckpt = killed / "checkpoint.pt"
        if ckpt.is_file():
            try:
                step = torch.load(ckpt, weights_only=True)["step"]
            except Exception:  # noqa: BLE001 - never half-written (atomic rename), but be robust
                step = 0
            if step >= 15:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 15 <= step < iters and not (killed / "metrics.json").exists()
    subprocess.run([sys.executable, "-m", "recon.cli", "train", "--resume", str(killed)],
                   check=True, env=env, capture_output=True)
    assert abs(_final_psnr(killed) - _final_psnr(straight)) <= 0.1


def test_nonfinite_steps_are_rolled_back_then_the_run_stops(tiny_scene, tmp_path):
    from reconstruct.config import SplatTrainConfig, resolve
    from reconstruct.loop import LoopState, train_loop
    from reconstruct.training import build_method
    from scenes import load_scene
    from scenes.errors import ReconError

    scene = load_scene(tiny_scene, views=4)

    class Poison:
        name, needs_depth = "poison", False

        def __init__(self, bad_steps):
            self.bad_steps = bad_steps

        def loss(self, ctx, renders):
            return renders.sum() * (float("nan") if ctx.step in self.bad_steps else 0.0)

    def make(bad):
        cfg = SplatTrainConfig(scene=tiny_scene, views=4, iters=12, preset="vanilla")
        cfg.densify.enabled, cfg.init.kind, cfg.init.n_random = False, "random", 300
        method = build_method(resolve(cfg, device_type="cpu"), scene, torch.device("cpu"), cache_dir=tmp_path)
        method.regularizers.append(Poison(bad))
        return method

    ok = make({3, 7})
    state = train_loop(ok, LoopState(), until=12, show_progress=False)
    assert state.step == 12 and state.failed_steps == [3, 7]
    assert all(torch.isfinite(p).all() for p in ok.model.params.values())
    saved = []
    with pytest.raises(ReconError, match="step"):
        train_loop(make(set(range(100))), LoopState(), until=12, save=saved.append, checkpoint_every=2,
                   show_progress=False)
    assert not saved, "no checkpoint of a diverged state is written"


def test_sigint_finishes_the_step_writes_a_checkpoint_and_resume_continues(tiny_scene, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "interrupted"
    proc = subprocess.Popen(_train_cmd(tiny_scene, out, "--output.checkpoint-every", "100000", "--iters", "100000"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (out / "checkpoint.pt").is_file():
        time.sleep(0.1)
    time.sleep(3.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    if proc.returncode == 0:
        pytest.skip("training finished before the signal arrived")
    assert proc.returncode == 130, err
    line = [ln for ln in err.splitlines() if "interrupted at step" in ln][-1]
    step = int(line.split("interrupted at step ")[1].split()[0])
    assert f"recon train --resume {out}" in line
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == step
    subprocess.run([sys.executable, "-m", "recon.cli", "train", "--resume", str(out), "--iters", str(step + 5)],
                   check=True, env=env, capture_output=True)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == step + 5


def test_training_with_learnable_masks_runs_in_the_real_trainer(tiny_scene, tmp_path):
    from pruning.formats import read_splats

    out = tmp_path / "masked"
    assert main(["train", str(tiny_scene), *FAST, "--iters", "25", "--masks", "--out", str(out)]) == 0
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    n = len(ckpt["state"]["params"]["means"])
    assert ckpt["state"]["params"]["masks"].shape[0] == n
    assert len(read_splats(out / "splats.ply")) == n
    assert any("mask" in h for h in ckpt["history"])


def test_live_viewer_binds_localhost_unless_told(monkeypatch, tiny_scene):
    import viewer.live
    from recon.train import parse_train, train

    seen = {}

    class Hook:
        def __init__(self, method, **kw):
            seen.update({k: kw[k] for k in ("host", "port")})
            raise SystemExit(0)

    monkeypatch.setattr(viewer.live, "LiveViewerHook", Hook)
    for args, want in (([], {"host": "127.0.0.1", "port": 8080}),
                       (["--viewer-host", "0.0.0.0", "--viewer-port", "9001"], {"host": "0.0.0.0", "port": 9001})):
        seen.clear()
        with pytest.raises(SystemExit):
            train(parse_train([str(tiny_scene), *FAST, "--iters", "2", "--viewer", *args, "--out",
                               str(Path(tiny_scene).parent / "viewer-run"), "--overwrite"]))
        assert seen == want


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


def test_history_says_which_mechanism_added_or_removed_gaussians(trained_run):
    history = torch.load(trained_run / "checkpoint.pt", weights_only=True)["history"]
    refine = [h for h in history if "densify_pruned" in h]
    assert refine and all({"densify_duplicated", "densify_split"} <= set(h) for h in refine)
    assert [h["step"] for h in refine] == [s for s in range(11, 60) if s % 10 == 0]


def test_collapsed_or_flat_runs_say_so_instead_of_only_a_psnr():
    from reconstruct.loop import LoopState
    from reconstruct.training import health_warnings

    state = LoopState(history=[{"step": 0, "init": "dense", "n_points": 20_000},
                               {"step": 100, "densify_pruned": 15_000}, {"step": 200, "densify_pruned": 4_800}])
    flat = [{"render_std": 0.01, "gt_std": 0.2}] * 3
    warnings = health_warnings(state, {"n_gaussians": 151, "per_view": flat})
    assert len(warnings) == 2 and "collapsed" in warnings[0] and "densify_pruned: 19,800" in warnings[0]
    assert "flat" in warnings[1]
    assert health_warnings(state, {"n_gaussians": 18_000, "per_view": [{"render_std": 0.2, "gt_std": 0.2}]}) == []


def test_eval_every_adds_a_test_psnr_curve_without_changing_training(tiny_scene, tmp_path):
    runs = {}
    for every in (0, 10):
        out = tmp_path / f"every{every}"
        assert main(["train", str(tiny_scene), *FAST, "--iters", "30", "--output.eval-every", str(every),
                     "--out", str(out)]) == 0
        runs[every] = torch.load(out / "checkpoint.pt", weights_only=True)
    curve = [h for h in runs[10]["history"] if "test_psnr" in h]
    assert [h["step"] for h in curve] == [9, 19, 29] and all(math.isfinite(h["test_psnr"]) for h in curve)
    for k, v in runs[0]["state"]["params"].items():  # scoring renders only: the same model either way
        assert torch.equal(v, runs[10]["state"]["params"][k]), k
    assert (tmp_path / "every10" / "curves.png").stat().st_size > 5000


def test_bench_train_times_every_phase_of_both_variants_from_one_state(tmp_path, monkeypatch):
    from recon.bench.common import demo_scene
    from recon.bench.train import PHASES, measure

    monkeypatch.chdir(tmp_path)  # the bench's prior cache goes under outputs/
    entry = {"name": "demo", "scene": demo_scene(), "views": 8, "resolution": 48}
    r = measure(entry, preset="vanilla", warmup=3, steps=2, variants=("torch-ssim", "fused-ssim"))
    a, b = r["variants"]["torch-ssim"], r["variants"]["fused-ssim"]
    assert a["gaussians"] == b["gaussians"] == r["gaussians_after_warmup"]
    for v in (a, b):
        assert set(v["phase_ms"]) == set(PHASES) and v["phase_ms"]["render"] > 0 and v["phase_ms"]["backward"] > 0
        assert v["steps_per_s"] > 0 and v["cpu_s_per_step"] > 0
        # the phases are parts of the timed steps' wall time (the profiled pass is timed apart)
        assert sum(v["phase_ms"].values()) <= 1000 * v["wall_s_per_step"] * 1.001
        for part in ("projection fwd", "projection bwd", "compositing fwd", "compositing bwd", "binning", "Adam"):
            assert v["kernel_ms"][part] > 0, part
    assert "D-SSIM (fused, fwd+bwd)" in b["kernel_ms"] and "D-SSIM (fused, fwd+bwd)" not in a["kernel_ms"]
