"""One scene of ``recon batch``: the task a Ray worker runs (``run_scene``), and its progress record.

The steps are the single-scene commands. Training is a ``python -m recon.cli train`` subprocess that
dies with the worker (PR_SET_PDEATHSIG on Linux), so a killed worker takes its training with it and
Ray's retry continues the run with ``--resume`` from its last checkpoint. eval, compress and export
are the commands' own dataclasses (recon/commands.py), parsed by the driver and run here with
``--json``. What each step did is recorded in ``DIR/.batch/<name>.json`` after the step, so a retried
task, or the same batch run again after the driver died, redoes only what is not done; a step
whose options changed is redone, and so is every step after it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconstruct.run import Run
from scenes.errors import ReconError
from scenes.fileio import atomic_write_text

STEPS = ("train", "eval", "compress", "export")
"""Every step, in the order they run."""

STATE_DIR = ".batch"
"""DIR/.batch/ holds each scene's record (<name>.json) and training log (<name>.log)."""


@dataclass(frozen=True)
class SceneJob:
    """Everything a task needs for one scene (plain data and command objects; Ray pickles it)."""

    name: str
    """Folder name under the batch's output folder."""
    scene: str
    """The scene folder (absolute)."""
    out: str
    """The batch's output folder (absolute); the run folder is out/name."""
    steps: tuple[str, ...]
    """Steps to run, a subset of STEPS in STEPS order."""
    train_args: tuple[str, ...] = ()
    """Train options, as on the `recon train` command line after the scene."""
    commands: dict[str, Any] = field(default_factory=dict)
    """eval / compress / export: the command dataclass (with run_dir and json set) each step runs."""
    fingerprints: dict[str, list[str]] = field(default_factory=dict)
    """Per step, the options it was asked for: a step recorded with the same ones is not redone."""
    threads: int = 1
    """CPU threads for the step (torch, numba, OpenMP)."""

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.name

    @property
    def record_path(self) -> Path:
        return Path(self.out) / STATE_DIR / f"{self.name}.json"

    @property
    def log_path(self) -> Path:
        return Path(self.out) / STATE_DIR / f"{self.name}.log"


# ---------------------------------------------------------------------------------- the record
def read_record(job: SceneJob) -> dict:
    """The scene's record ({} before its first task); an unreadable one is started afresh."""
    try:
        data = json.loads(job.record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_record(job: SceneJob, record: dict) -> None:
    atomic_write_text(job.record_path, json.dumps(record, indent=1))


def foreign_scene(job: SceneJob, record: dict) -> str | None:
    """The error when DIR/<name> was made from another scene (None when it is this scene's)."""
    if record.get("scene") not in (None, job.scene):
        return f"{job.run_dir}: made from {record['scene']}, not {job.scene}; use another --out"
    return None


def step_done(job: SceneJob, record: dict, step: str) -> bool:
    entry = record.get("steps", {}).get(step)
    return bool(entry) and entry.get("args") == job.fingerprints.get(step, []) and Run.is_run(job.run_dir)


def all_done(job: SceneJob, record: dict) -> bool:
    return foreign_scene(job, record) is None and all(step_done(job, record, s) for s in job.steps)


# ---------------------------------------------------------------------------------- the task
def run_scene(job: SceneJob) -> dict:
    """Run the scene's steps that are not done yet; returns its results row. Bad input and failed
    steps become the row's one-line error (never an exception: Ray retries only dead workers)."""
    started = time.time()
    record = read_record(job)
    error = foreign_scene(job, record)
    if error is not None:
        return summarize(job, record, status="error", error=error, started=started)
    record.update(name=job.name, scene=job.scene, attempts=int(record.get("attempts", 0)) + 1, pid=os.getpid(),
                  host=socket.gethostname())
    record.setdefault("steps", {})
    try:
        _write_record(job, record)
        redo = False
        for step in job.steps:
            if not redo and step_done(job, record, step):
                continue
            redo = True  # every later step sees this step's new outputs
            for later in STEPS[STEPS.index(step):]:
                record["steps"].pop(later, None)
            t0 = time.perf_counter()
            result = _train(job, record) if step == "train" else _command(job, step)
            record["steps"][step] = {"args": job.fingerprints.get(step, []), "result": result,
                                     "seconds": round(time.perf_counter() - t0, 3)}
            _write_record(job, record)
    except ReconError as err:
        return summarize(job, record, status="error", error=str(err), started=started)
    except Exception as err:  # noqa: BLE001 - a bug in one scene is that scene's error, not the batch's
        return summarize(job, record, status="error", error=f"{job.run_dir}: {_one_line(err)}", started=started)
    return summarize(job, record, status="ok", started=started)


def _train(job: SceneJob, record: dict) -> dict:
    """`recon train` in a subprocess: fresh, or ``--resume`` from the run's last checkpoint."""
    run_dir = job.run_dir
    resumed_from = None
    if Run.is_run(run_dir) and Run(run_dir).has_checkpoint():
        resumed_from = int(Run.open(run_dir).checkpoint()["step"])
        argv = ["train", "--resume", str(run_dir), job.scene, *job.train_args]
    else:
        if run_dir.is_dir() and any(run_dir.iterdir()) and not Run.is_run(run_dir):
            raise ReconError(run_dir, "exists and is not a run folder; remove it or use another --out")
        # A run folder without a checkpoint was killed before its first step: start it again.
        argv = ["train", job.scene, *job.train_args, "--out", str(run_dir), "--overwrite"]
    cmd = [sys.executable, "-m", "recon.cli", *argv]
    threads = str(max(1, job.threads))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "NUMBA_NUM_THREADS": threads,
           "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}
    job.log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(job.log_path, "a", encoding="utf-8") as log:
        start = log.tell()
        log.write(f"--- attempt {record.get('attempts')} (pid {os.getpid()}): python -m recon.cli {' '.join(argv)}\n")
        log.flush()
        code = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                              preexec_fn=_die_with_parent(os.getpid())).returncode
    wall = time.perf_counter() - t0
    if code != 0:
        raise ReconError(None, f"{_last_error(job.log_path, start) or f'{run_dir}: train exited with {_describe(code)}'}"
                               f" (log: {job.log_path})")
    run = Run.open(run_dir)
    return {"iters": int(run.checkpoint()["step"]), "train_seconds": run.train_seconds(), "resumed_from": resumed_from,
            "wall": round(wall, 3)}


def _command(job: SceneJob, step: str) -> dict:
    """Run the step's command dataclass here, its one JSON object captured from stdout."""
    import torch

    torch.set_num_threads(max(1, job.threads))
    command = job.commands[step]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        command.run()
    text = buf.getvalue().strip()
    try:
        return json.loads(text)
    except ValueError:
        return json.loads(text.splitlines()[-1]) if text else {}


def _die_with_parent(parent: int):
    """preexec_fn for the training subprocess: SIGKILL it when the worker that started it dies
    (Linux prctl PR_SET_PDEATHSIG; elsewhere the subprocess outlives a killed worker)."""
    def arm() -> None:
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:  # the worker died before prctl took effect
            os._exit(137)

    return arm if sys.platform.startswith("linux") else None


def _last_error(log: Path, start: int) -> str | None:
    """The last 'recon: error: ...' line (else the last line) this attempt wrote to the log."""
    try:
        with open(log, encoding="utf-8", errors="replace") as f:
            f.seek(start)
            lines = [ln.strip() for ln in f.read().splitlines()[1:] if ln.strip()]
    except OSError:
        return None
    for line in reversed(lines):
        if line.startswith("recon: error: "):
            return line[len("recon: error: "):]
    return lines[-1][:300] if lines else None


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300]}" if text else type(err).__name__


# ---------------------------------------------------------------------------------- the results row
COLUMNS = ("scene", "status", "psnr", "ssim", "gaussians", "ply_bytes", "psnr_compressed", "gaussians_compressed",
           "compressed_bytes", "export_format", "export_bytes", "iters", "train_seconds", "seconds", "resumed_from",
           "attempts", "error", "path", "run_dir")
"""The columns of DIR/batch.csv (batch.json rows have these and the timing fields)."""


def summarize(job: SceneJob, record: dict, *, status: str, error: str | None = None,
              started: float | None = None) -> dict:
    """The scene's results row from its record (the steps' results) and this task's outcome."""
    steps = record.get("steps", {})
    res = {step: (steps.get(step) or {}).get("result") or {} for step in STEPS}
    train, ev, comp, exp = res["train"], res["eval"], res["compress"], res["export"]
    now = time.time()
    return {
        "scene": job.name, "status": status, "psnr": ev.get("psnr"), "ssim": ev.get("ssim"),
        "gaussians": ev.get("n_gaussians"), "ply_bytes": ev.get("ply_bytes"),
        "psnr_compressed": comp.get("psnr_after"), "gaussians_compressed": comp.get("n_after"),
        "compressed_bytes": comp.get("artifact_bytes"), "export_format": exp.get("format"), "export_bytes": exp.get("bytes"),
        "iters": train.get("iters"), "train_seconds": _round(train.get("train_seconds")),
        "seconds": None if started is None else round(now - started, 3), "resumed_from": train.get("resumed_from"),
        "attempts": record.get("attempts"), "error": error, "path": job.scene, "run_dir": str(job.run_dir),
        "started": started, "finished": None if started is None else now, "train_wall": train.get("wall"),
        "step_seconds": {step: (steps.get(step) or {}).get("seconds") for step in job.steps},
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)
