"""Bad input and faults, as a demanding user would cause them: every case ends in one line on
stderr, a non-zero exit and nothing half-written, or survives (kill -9, Ctrl-C, a second writer)."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from recon.cli import main
from reconstruct.demo import write_demo_scene

FAST = ["--views", "4", "--init.kind", "random", "--init.n-random", "500", "--densify.refine-start-iter", "10",
        "--densify.refine-every", "10", "--output.log-every", "5", "--optim.sh-degree", "1", "--preset", "vanilla"]


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory) -> Path:
    return write_demo_scene(tmp_path_factory.mktemp("scene"), n_train=6, n_test=2, size=32)


@pytest.fixture(scope="module")
def trained(tiny_scene, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", str(tiny_scene), *FAST, "--iters", "20", "--out", str(out)]) == 0
    return out


def _copy(run: Path, tmp_path: Path, name: str = "copy") -> Path:
    dst = tmp_path / name
    shutil.copytree(run, dst)
    return dst


def _one_line(capsys, *needles: str) -> str:
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.strip()]
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    for n in needles:
        assert n in err[0], (n, err[0])
    return err[0]


def _snapshot(folder: Path) -> dict[str, int]:
    """Every file and its modification time, the run folder's lock file aside (its content is the holder)."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and p.name != ".lock"}


# ---------------------------------------------------------------------------------- checkpoints
class _Payload:
    """Unpickling this runs code: it writes a file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


def test_crafted_checkpoint_runs_no_code(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    marker = tmp_path / "ran"
    with open(run / "checkpoint.pt", "wb") as f:
        pickle.dump({"format": "recon.checkpoint", "x": _Payload(str(marker))}, f)
    assert main(["train", "--resume", str(run)]) == 1
    _one_line(capsys, "checkpoint.pt", "unreadable checkpoint")
    assert main(["eval", str(run), "--json"]) == 0  # eval needs only splats.ply: it scores, reports no train time
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["train_seconds"] is None
    assert not marker.exists(), "unpickling the checkpoint ran code"


@pytest.mark.parametrize("damage", ["missing_key", "wrong_version", "truncated", "state_mismatch"])
def test_damaged_checkpoint_is_refused_in_one_line(trained, tmp_path, capsys, damage):
    run = _copy(trained, tmp_path)
    path = run / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)
    if damage == "missing_key":
        del ckpt["history"]
        torch.save(ckpt, path)
    elif damage == "wrong_version":
        ckpt["version"] = 1
        torch.save(ckpt, path)
    elif damage == "state_mismatch":
        del ckpt["state"]["optimizers"]["means"]
        torch.save(ckpt, path)
    else:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    before = _snapshot(run)
    assert main(["train", "--resume", str(run)]) == 1
    _one_line(capsys, "checkpoint")
    assert _snapshot(run) == before


# ---------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("edit,needle", [
    (lambda c: c.update(method="voxels"), "method"),
    (lambda c: c["priors"]["dropout"].update(enabled="no"), "priors.dropout.enabled"),
    (lambda c: c.update(iters="many"), "iters"),
    (lambda c: c["optim"].update(lr_sh0=[1]), "optim.lr_sh0"),
    (lambda c: c.update(surprise=1), "surprise"),
    (lambda c: c.update(iters=-3), "--iters -3"),
])
def test_invalid_config_json_is_refused_before_work(trained, tiny_scene, tmp_path, capsys, edit, needle):
    cfg = json.loads((trained / "config.json").read_text())
    edit(cfg)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    out = tmp_path / "never"
    assert main(["train", "--config", str(path), "--out", str(out)]) == 1
    _one_line(capsys, needle)
    assert not out.exists()


@pytest.mark.parametrize("command", [["eval"], ["view", "--port", "0"], ["export", "--format", "ply"], ["compress"],
                                     ["train", "--resume"]])
def test_garbage_config_json_is_one_line_in_every_command(trained, tmp_path, capsys, command):
    run = _copy(trained, tmp_path)
    (run / "config.json").write_bytes(os.urandom(300))
    before = _snapshot(run)
    assert main([command[0], *command[1:], str(run)] if command[0] != "train" else ["train", "--resume", str(run)]) == 1
    _one_line(capsys, "config.json")
    assert _snapshot(run) == before


def test_resume_refuses_options_that_contradict_the_run(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    before = (run / "config.json").read_text()
    assert main(["train", "--resume", str(run), "--views", "3"]) == 1
    _one_line(capsys, "--views 3", "contradicts")
    assert (run / "config.json").read_text() == before


# ---------------------------------------------------------------------------------- options
@pytest.mark.parametrize("args,needle", [
    (["view", "X", "--port", "70000"], "--port 70000"),
    (["view", "X", "--port", "-1"], "--port -1"),
    (["view", "X", "--host", "999.1.1.1"], "999.1.1.1"),
    (["compress", "X", "--mask-steps", "0"], "--mask-steps"),
    (["train", "S", "--downscale", "0.0001"], "--downscale"),
    (["train", "S", "--output.log-every", "0"], "--output.log-every"),
    (["train", "S", "--optim.sh-degree-interval", "0"], "--optim.sh-degree-interval"),
    (["train", "S", "--viewer", "--viewer-host", "example.invalid"], "example.invalid"),
])
def test_nonsense_options_are_refused_before_any_work(trained, tiny_scene, capsys, args, needle):
    args = [str(trained) if a == "X" else str(tiny_scene) if a == "S" else a for a in args]
    t0 = time.monotonic()
    assert main(args) != 0
    _one_line(capsys, needle)
    assert time.monotonic() - t0 < 20


# ---------------------------------------------------------------------------------- scene content
def _edit_poses(scene: Path, tmp_path: Path, fn) -> Path:
    dst = tmp_path / "scene"
    shutil.copytree(scene, dst)
    meta = json.loads((dst / "transforms_train.json").read_text())
    fn(meta["frames"][1])
    (dst / "transforms_train.json").write_text(json.dumps(meta))
    return dst


@pytest.mark.parametrize("fn,needle", [
    (lambda f: f.update(transform_matrix=np.zeros((4, 4)).tolist()), "frame 1"),
    (lambda f: f.update(transform_matrix=(np.eye(4) * 2).tolist()), "not a proper rotation"),
    (lambda f: f.update(transform_matrix=np.diag([1.0, 1.0, -1.0, 1.0]).tolist()), "not a proper rotation"),
])
def test_bad_poses_are_one_line_errors(tiny_scene, tmp_path, capsys, fn, needle):
    bad = _edit_poses(tiny_scene, tmp_path, fn)
    out = tmp_path / "never"
    assert main(["train", str(bad), *FAST, "--iters", "3", "--out", str(out)]) == 1
    _one_line(capsys, needle)
    assert not out.exists()


def test_truncated_image_is_refused_before_training(tiny_scene, tmp_path, capsys):
    bad = tmp_path / "scene"
    shutil.copytree(tiny_scene, bad)
    victim = sorted((bad / "test").glob("*.png"))[0]  # a test view: the old code failed only when scoring
    victim.write_bytes(victim.read_bytes()[:200])
    out = tmp_path / "never"
    assert main(["train", str(bad), *FAST, "--iters", "3", "--out", str(out)]) == 1
    _one_line(capsys, victim.name)
    assert not out.exists()


def test_tiny_images_train_and_score(tmp_path, capsys):
    for size in (9, 4):  # smaller than the 11x11 SSIM window: the window shrinks to fit
        scene = write_demo_scene(tmp_path / f"tiny{size}", n_train=6, n_test=2, size=size)
        assert main(["train", str(scene), *FAST, "--iters", "3", "--out", str(tmp_path / f"run{size}")]) == 0
        metrics = json.loads((tmp_path / f"run{size}" / "metrics.json").read_text())
        assert -1 <= metrics["ssim"] <= 1 and np.isfinite(metrics["psnr"])


# ---------------------------------------------------------------------------------- writes
def test_disk_full_is_one_line_and_leaves_no_temp_files(trained, tmp_path, capsys, monkeypatch):
    import scenes.fileio as fileio

    run = _copy(trained, tmp_path)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", full)
    assert main(["eval", str(run)]) == 1
    _one_line(capsys, "disk full")
    assert not list(run.rglob("*.tmp"))


def test_out_under_a_file_is_one_line(tiny_scene, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["train", str(tiny_scene), *FAST, "--iters", "3", "--out", str(blocker / "run")]) == 1
    _one_line(capsys, "not a folder")
    assert main(["train", str(tiny_scene), *FAST, "--iters", "3", "--out", str(blocker)]) == 1
    _one_line(capsys, "is a file")


def test_outputs_respect_the_umask(trained):
    for name in ("config.json", "checkpoint.pt", "splats.ply", "metrics.json"):
        mode = (trained / name).stat().st_mode & 0o777
        assert mode == 0o666 & ~_umask(), (name, oct(mode))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_compress_swaps_the_whole_folder_and_sweep_restores_an_interrupted_swap(trained, tmp_path):
    from reconstruct.run import Run

    run = Run(_copy(trained, tmp_path))
    assert main(["compress", str(run.root), "--mask-steps", "4", "--quantize-steps", "4", "--json"]) == 0
    first = (run.compressed_dir / "artifact.json").read_text()
    run.compressed_dir.rename(run.root / ".compressed.old")  # a kill between the swap's two renames
    (run.root / ".compressed.new").mkdir()
    (run.root / ".compressed.new" / "artifact.bin").write_bytes(b"half")
    run.sweep()
    assert (run.compressed_dir / "artifact.json").read_text() == first
    assert not (run.root / ".compressed.new").exists() and not (run.root / ".compressed.old").exists()


# ---------------------------------------------------------------------------------- run folders
def test_a_second_writer_is_refused_and_a_dead_owners_lock_is_taken_over(trained, tmp_path, capsys):
    from reconstruct.run import Run

    run = Run(_copy(trained, tmp_path))
    with run.lock("test"):
        assert main(["train", "--resume", str(run.root)]) == 1
        _one_line(capsys, "in use by another recon process", "test")
        assert main(["compress", str(run.root)]) == 1
        _one_line(capsys, "in use")
    (run.root / ".lock").write_text("pid 999999999, train\n")  # left by a process that died
    assert main(["eval", str(run.root), "--json"]) == 0


def test_two_train_processes_on_one_out(tiny_scene, tmp_path):
    out = tmp_path / "shared"
    cmd = [sys.executable, "-m", "recon.cli", "train", str(tiny_scene), *FAST, "--iters", "100000",
           "--output.checkpoint-every", "100000", "--out", str(out)]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (out / "checkpoint.pt").is_file():
            time.sleep(0.1)
        second = subprocess.run([*cmd, "--overwrite"], capture_output=True, text=True, timeout=120)
        assert second.returncode == 1 and "in use by another recon process" in second.stderr, second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        assert first.poll() is None and (out / "config.json").is_file()
    finally:
        first.kill()
        first.wait()


def test_run_folder_works_from_any_current_folder(tiny_scene, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tiny_scene.parent)
    assert main(["train", tiny_scene.name, *FAST, "--iters", "5", "--out", str(tmp_path / "run")]) == 0
    assert Path(json.loads((tmp_path / "run" / "config.json").read_text())["scene"]).is_absolute()
    monkeypatch.chdir(tmp_path)
    assert main(["export", "run", "--format", "splat", "--json"]) == 0
    moved = tmp_path / "moved"
    shutil.move(str(tiny_scene), moved)
    try:
        capsys.readouterr()
        assert main(["export", "run", "--format", "ply", "--json"]) == 0  # the file needs no scene
        report = json.loads(capsys.readouterr().out)
        assert "no longer exists" in report["psnr_note"]
        assert main(["eval", "run"]) == 1
        _one_line(capsys, "no longer exists")
    finally:
        shutil.move(str(moved), tiny_scene)


def test_resume_is_bit_exact_with_the_uninterrupted_run(tiny_scene, tmp_path):
    """Sparse preset (dropout, binocular, pseudo views, SfM depth): stop at 8 of 16 steps, resume."""
    import scenes
    from recon.train import parse_train, train
    from reconstruct.loop import LoopState, checkpoint_payload, train_loop
    from reconstruct.run import Run
    from reconstruct.training import build_method

    args = [str(tiny_scene), "--views", "4", "--preset", "sparse", "--iters", "16", "--init.kind", "random",
            "--init.n-random", "400", "--priors.binocular.schedule.start", "2", "--priors.pseudo-views.schedule.start", "3",
            "--densify.refine-start-iter", "4", "--densify.refine-every", "4"]
    straight = tmp_path / "straight"
    assert train(parse_train([*args, "--out", str(straight)])) == 0
    req = parse_train([*args, "--out", str(tmp_path / "split")])
    cfg = req.cfg
    run = Run.create(tmp_path / "split", overwrite=False)
    run.save_config(cfg)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    scene = scenes.load_scene(cfg.scene, views=cfg.views)
    method = build_method(cfg, scene, torch.device("cpu"), cache_dir=run.priors_dir)
    state = LoopState(history=[{"step": 0, **method.init_record}])
    run.save_checkpoint(checkpoint_payload(method, state))
    train_loop(method, state, until=8, save=run.save_checkpoint, show_progress=False)
    del method
    assert train(parse_train(["--resume", str(run.root)])) == 0
    a = torch.load(straight / "checkpoint.pt", weights_only=True)
    b = torch.load(run.checkpoint_path, weights_only=True)
    assert a["step"] == b["step"] == 16
    for k, v in a["state"]["params"].items():
        assert torch.equal(v, b["state"]["params"][k]), k


# ---------------------------------------------------------------------------------- kill -9
def _kill_at_random(cmd: list[str], rng: np.random.Generator, *, max_delay: float) -> int:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(float(rng.uniform(0.5, max_delay)))
    proc.kill()
    return proc.wait()


@pytest.mark.slow
def test_kill_9_campaign_leaves_no_temp_files_and_keeps_the_last_good_artifact(trained, tiny_scene, tmp_path):
    """30 kills at random moments of train, compress and export; after each, the next start sweeps
    what the kill left, every file that exists is whole, and the previous artifact survives."""
    from pruning.artifact import load_artifact
    from reconstruct.run import Run

    rng = np.random.default_rng(0)
    py = [sys.executable, "-m", "recon.cli"]
    run = Run(_copy(trained, tmp_path, "killed"))
    assert main(["compress", str(run.root), "--mask-steps", "4", "--quantize-steps", "4", "--json"]) == 0
    kills = 0
    for _ in range(12):  # training (resumed each time) interrupted at random
        _kill_at_random([*py, "train", "--resume", str(run.root), "--iters", "400", "--output.checkpoint-every", "3"],
                        rng, max_delay=6.0)
        kills += 1
        run.sweep()
        assert not list(run.root.rglob("*.tmp"))
        Run(run.root).checkpoint()  # whole: the previous one or the new one, never half
    for _ in range(10):
        _kill_at_random([*py, "compress", str(run.root), "--mask-steps", "30", "--quantize-steps", "30"], rng,
                        max_delay=6.0)
        kills += 1
        run.sweep()
        assert not list(run.root.rglob("*.tmp"))
        assert len(load_artifact(run.compressed_dir)) > 0  # the last good artifact is always there
    for _ in range(8):
        _kill_at_random([*py, "export", str(run.root), "--format", "spz", "--source", "trained"], rng, max_delay=4.0)
        kills += 1
        run.sweep()
        assert not list(run.root.rglob("*.tmp"))
        spz = run.export_dir / "splats.spz"
        if spz.exists():
            from pruning.formats import read_splats

            assert len(read_splats(spz)) > 0
    assert kills >= 30
