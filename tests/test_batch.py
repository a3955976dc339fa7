"""`recon batch` on a local Ray with 2 CPUs: tiny scenes finish, a bad one is reported without
stopping the others, a worker killed mid-training is retried and resumes from its checkpoint, and
the same command run again does no work."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from recon.cli import main
from reconstruct.demo import write_demo_scene

# find_spec, not importorskip: Ray must not be imported before start_local_ray asks it for 127.0.0.1.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                reason="recon batch needs Ray (pip install -e '.[cluster]')")

FAST = ["--views", "4", "--init.kind", "random", "--init.n-random", "800", "--densify.refine-start-iter", "10",
        "--densify.refine-every", "10", "--output.log-every", "5", "--optim.sh-degree", "1", "--preset", "vanilla"]


@pytest.fixture(scope="module")
def ray_local():
    """One Ray for the module (recon batch joins a Ray this process already started)."""
    from recon.batch import import_ray, start_local_ray

    start_local_ray(num_cpus=2)
    yield
    import_ray().shutdown()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("scenes")
    good = [write_demo_scene(root / name / "scene", n_train=6, n_test=2, size=32, seed=k)
            for k, name in enumerate(("a", "b", "c"))]
    bad = root / "broken"
    bad.mkdir()
    (bad / "transforms_train.json").write_text("{not json")
    (bad / "transforms_test.json").write_text("{}")
    return [*good, bad]


def _batch(scenes: list[Path], out: Path, *extra: str) -> list[str]:
    return ["batch", *map(str, scenes), "--out", str(out), *FAST, "--output.checkpoint-every", "5", *extra]


def _rows(out: Path) -> dict[str, dict]:
    return {r["scene"]: r for r in json.loads((out / "batch.json").read_text())["scenes"]}


@pytest.fixture(scope="module")
def first_batch(ray_local, scenes, tmp_path_factory) -> tuple[Path, int]:
    out = tmp_path_factory.mktemp("batch") / "runs"
    return out, main(_batch(scenes, out, *FIRST))


FIRST = ("--iters", "30", "--steps", "train,eval,compress,export", "--compress.mask-steps", "5",
         "--compress.quantize-steps", "5", "--compress.color-entries", "64", "--export.format", "spz")


def test_scenes_finish_and_a_bad_one_is_reported_without_stopping_the_others(first_batch, capsys):
    out, code = first_batch
    assert code == 1  # a scene failed
    rows = _rows(out)
    assert list(rows) == ["scene", "scene-2", "scene-3", "broken"]  # equal folder names told apart, in order
    for name in ("scene", "scene-2", "scene-3"):
        r = rows[name]
        assert r["status"] == "ok" and r["iters"] == 30 and 5 < r["psnr"] < 60 and 0 < r["ssim"] <= 1, r
        assert r["gaussians"] > 0 and r["ply_bytes"] > 0 and r["error"] is None
        assert (out / name / "metrics.json").is_file() and (out / name / "splats.ply").is_file()
        assert r["compressed_bytes"] < r["ply_bytes"] and r["psnr_compressed"] > 5 and r["export_format"] == "spz"
        assert (out / name / "export" / "splats.spz").stat().st_size == r["export_bytes"]
    bad = rows["broken"]
    assert bad["status"] == "error" and "\n" not in bad["error"]
    assert "transforms_train.json" in bad["error"] and "not valid JSON" in bad["error"], bad["error"]
    csv_lines = (out / "batch.csv").read_text().splitlines()
    assert csv_lines[0].startswith("scene,status,psnr,ssim,gaussians") and len(csv_lines) == 5
    assert not list(out.rglob("*.tmp")), "every results file is written atomically"


def test_the_same_command_again_does_no_work(first_batch, scenes):
    out, _ = first_batch
    good = ("scene", "scene-2", "scene-3")
    before = {name: (out / name / "checkpoint.pt").stat().st_mtime_ns for name in good}
    assert main(_batch(scenes, out, *FIRST)) == 1
    rows = _rows(out)
    assert [rows[n]["status"] for n in good] == ["skipped"] * 3  # no task: their results come from the records
    assert all(rows[n]["attempts"] == 1 and rows[n]["psnr"] is not None for n in good)
    assert before == {name: (out / name / "checkpoint.pt").stat().st_mtime_ns for name in good}
    assert rows["broken"]["status"] == "error" and rows["broken"]["attempts"] == 2  # a failed scene is tried again


def test_embedded_ray_listens_on_loopback_only(ray_local):
    from recon.batch import import_ray

    ray = import_ray()
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    assert ray.cluster_resources()["CPU"] == 2


def test_manifest_and_equal_names(scenes, tmp_path):
    from recon.batch import parse_batch
    from recon.commands import EvalCommand

    manifest = tmp_path / "list" / "scenes.txt"
    manifest.parent.mkdir()
    manifest.write_text(f"# two more\n{os.path.relpath(scenes[1], manifest.parent)}\n\n{scenes[2]}  # same name\n")
    req = parse_batch([str(scenes[0]), "--out", str(tmp_path / "runs"), "--manifest", str(manifest), "--iters", "7"],
                      commands={"eval": EvalCommand})
    assert [(n, p) for n, p in req.scenes] == [("scene", scenes[0]), ("scene-2", scenes[1]), ("scene-3", scenes[2])]
    assert req.steps == ("train", "eval") and "--iters" in req.train_args
    assert req.commands["eval"].json and req.commands["eval"].run_dir == (tmp_path / "runs" / "scene").resolve()


def _alive_with(text: str) -> list[int]:
    """Processes whose command line mentions ``text`` (Linux /proc)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the training subprocess dies with its worker on Linux")
def test_after_the_driver_is_killed_the_same_command_continues(ray_local, scenes, tmp_path):
    out, iters = tmp_path / "runs", 150
    args = _batch(scenes[:1], out, "--iters", str(iters), "--steps", "train")
    driver = subprocess.Popen([sys.executable, "-m", "recon.cli", *args], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    ckpt, step = out / "scene" / "checkpoint.pt", 0
    deadline = time.monotonic() + 300  # a loaded machine takes minutes to start Ray and the run
    while time.monotonic() < deadline and driver.poll() is None and step < 10:
        try:
            step = torch.load(ckpt, weights_only=True)["step"] if ckpt.is_file() else 0
        except Exception:  # noqa: BLE001 - never half-written, but be robust
            step = 0
        time.sleep(0.05)
    assert driver.poll() is None and step >= 10, "training ended before the driver could be killed"
    # Freeze the training first: Ray takes about 2 s to reap a dead driver's workers, time in which a
    # fast machine would finish these steps. A stopped process still dies of its parent-death SIGKILL.
    training = _alive_with(str(out / "scene"))
    assert training, "no training subprocess found"
    for pid in training:
        os.kill(pid, signal.SIGSTOP)
    driver.kill()
    driver.wait()
    deadline = time.monotonic() + 30
    while _alive_with(str(out / "scene")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive_with(str(out / "scene")), "the training subprocess outlived its driver"
    left = torch.load(ckpt, weights_only=True)["step"]
    assert step <= left < iters, (step, left)
    assert main(args) == 0
    row = _rows(out)["scene"]
    assert row["status"] == "ok" and row["iters"] == iters and row["resumed_from"] == left, row


def test_bad_options_are_refused_in_one_line_before_any_work(scenes, tmp_path, capsys):
    for args, needle in ((["--iters", "-5"], "--iters -5"), (["--steps", "train,fit"], "--steps"),
                         (["--compress.mask-steps", "3"], "has no compress"), (["--resume", "x"], "--resume"),
                         (["--steps", "train,export", "--export.format", "tiff"], "tiff")):
        assert main(["batch", str(scenes[0]), "--out", str(tmp_path / "never"), *args]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], (args, err)
    assert not (tmp_path / "never").exists()


def test_a_second_driver_on_the_same_folder_is_refused(scenes, tmp_path, capsys):
    import fcntl

    lock = tmp_path / "runs" / ".batch" / "driver.lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running driver holds it
        assert main(["batch", str(scenes[0]), "--out", str(tmp_path / "runs"), "--iters", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "another recon batch is running" in err[-1] and str(tmp_path / "runs") in err[-1]
    assert not (tmp_path / "runs" / "scene").exists()


def test_without_ray_the_command_says_how_to_install_it(scenes, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # find_spec("ray") -> None, as when it is not installed
    assert main(["batch", str(scenes[0]), "--out", str(tmp_path / "runs"), "--iters", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install -e '.[cluster]'" in err[0]


def test_a_killed_worker_is_retried_and_resumes_from_its_checkpoint(ray_local, scenes, tmp_path):
    out, iters = tmp_path / "runs", 150
    record, ckpt = out / ".batch" / "scene.json", out / "scene" / "checkpoint.pt"
    killed: dict = {}

    def kill_mid_training() -> None:
        deadline = time.monotonic() + 300  # a loaded machine takes minutes to start Ray and the run
        while time.monotonic() < deadline:
            try:
                step = torch.load(ckpt, weights_only=True)["step"] if ckpt.is_file() else 0
                pid = json.loads(record.read_text())["pid"]
            except Exception:  # noqa: BLE001 - not written yet
                step = 0
            if step >= 10:
                os.kill(pid, signal.SIGKILL)  # the Ray worker; its training subprocess dies with it
                killed.update(step=step, pid=pid)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_mid_training, daemon=True)
    killer.start()
    assert main(_batch(scenes[:1], out, "--iters", str(iters), "--steps", "train")) == 0
    killer.join()
    assert killed and 10 <= killed["step"] < iters, killed
    row = _rows(out)["scene"]
    assert row["status"] == "ok" and row["attempts"] == 2 and row["iters"] == iters
    # The retry continued the run: it resumed from a checkpoint at or after the one seen before the kill.
    assert killed["step"] <= row["resumed_from"] < iters, row
    log = (out / ".batch" / "scene.log").read_text()
    attempts = [ln for ln in log.splitlines() if ln.startswith("--- attempt")]
    assert len(attempts) == 2 and "--resume" not in attempts[0] and f"--resume {out / 'scene'}" in attempts[1]
    steps = [h["step"] for h in torch.load(ckpt, weights_only=True)["history"] if "loss" in h]
    assert steps == sorted(set(steps)) and steps[-1] == iters - 1, "one step sequence, no second start from 0"
