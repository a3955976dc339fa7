"""`recon batch`: many scenes, one Ray task each, into DIR/<scene-name>/.

    recon batch data/a data/b --out runs --iters 300 --views 8          # Ray embedded on this machine
    recon batch --manifest scenes.txt --out runs --steps train,eval,compress,export --export.format spz
    recon batch --manifest scenes.txt --out /shared/runs --address auto --per-scene-gpus 1   # a cluster

Each task runs the single-scene commands (recon/batch_task.py). Options ``recon batch`` does not
define are train options; ``--compress.X`` and ``--export.X`` go to those steps. All of them are
parsed here, before Ray starts, so a bad one is a one-line error and no work. DIR/batch.json and
DIR/batch.csv are rewritten (atomically) as each scene ends; a table goes to stdout at the end.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import tyro

from recon.batch_task import COLUMNS, STATE_DIR, STEPS, SceneJob, all_done, foreign_scene, read_record, summarize
from scenes.errors import ReconError

log = logging.getLogger(__name__)

RAY_PIN = "ray==2.60.0"
"""The Ray release the tests run against (the `cluster` extra in pyproject.toml)."""

INSTALL_HINT = f"recon batch needs Ray: pip install -e '.[cluster]' (or pip install '{RAY_PIN}')"

TRAIN_ONLY_BATCH = ("--out", "--output.out", "--resume", "--overwrite", "--viewer", "--output.eval-at-end",
                    "--output.no-eval-at-end")
"""Train options the batch sets itself (the run folder, resuming, evaluation as a step) or refuses (the live viewer)."""


@dataclass
class BatchOptions:
    """Train (then evaluate, compress, export) many scenes as Ray tasks, one run folder each:
    `recon batch SCENES... --out DIR [train options] [--compress.X ...] [--export.X ...]`. Scenes come
    first; any option not listed here is a `recon train` option (`--iters 300 --views 8`), and
    `--compress.X` / `--export.X` are `recon compress` / `recon export` options. A scene that is done is
    skipped; one that was interrupted resumes from its last checkpoint."""

    out: Path
    """Output folder: DIR/<scene-name>/ per scene, DIR/batch.json and DIR/batch.csv."""
    scenes: tyro.conf.Positional[tuple[Path, ...]] = ()
    """Scene folders (posed datasets or photo folders); they come before the options."""
    manifest: Path | None = None
    """Text file with one scene path a line (relative to the file; '#' starts a comment), added after SCENES."""
    address: str | None = None
    """Ray cluster to join: auto (the one `ray start` made on this machine) or HOST:PORT. Unset: start
    Ray on this machine for this command only (its servers listen on 127.0.0.1)."""
    num_cpus: int | None = None
    """CPUs the embedded Ray may use (default: the CPUs this process may run on); not with --address."""
    per_scene_cpus: float = 1.0
    """CPUs Ray reserves for each scene (scenes at a time = CPUs / this); also its torch/numba thread count."""
    per_scene_gpus: float = 0.0
    """GPUs Ray reserves for each scene (1 = a GPU each; training then picks CUDA with --device auto)."""
    steps: str = "train,eval"
    """Comma-separated steps out of train,eval,compress,export (run in that order)."""
    max_retries: int = 3
    """Times Ray reruns a scene whose worker died (the rerun resumes training from its checkpoint)."""


@dataclass(frozen=True)
class BatchRequest:
    """A parsed, validated `recon batch` command line (nothing run yet)."""

    options: BatchOptions
    scenes: tuple[tuple[str, Path], ...]
    """(name under --out, scene path), in the order given."""
    steps: tuple[str, ...]
    train_args: tuple[str, ...] = ()
    commands: dict[str, Any] = field(default_factory=dict)
    """eval / compress / export: the command parsed for the first scene (copied per scene)."""
    fingerprints: dict[str, list[str]] = field(default_factory=dict)


# ---------------------------------------------------------------------------------- parsing
def _groups(tokens: list[str]) -> list[list[str]]:
    """``--flag value...`` groups: a flag and the tokens up to the next ``--`` flag."""
    groups: list[list[str]] = []
    for tok in tokens:
        if tok.startswith("--") or not groups:
            groups.append([tok])
        else:
            groups[-1].append(tok)
    return groups


def parse_batch(args: list[str], *, commands: Mapping[str, type]) -> BatchRequest:
    """The `recon batch` command line as a request; every option checked before anything runs.
    ``commands`` maps eval / compress / export to the command dataclasses those steps run."""
    from recon.options import flag_names, given_flags, parse_or_exit

    lead = 0
    while lead < len(args) and not args[lead].startswith("-"):
        lead += 1
    own_flags = flag_names(BatchOptions) | {"--help", "-h"}
    own, train, per_step = list(args[:lead]), [], {"compress": [], "export": []}  # type: ignore[var-annotated]
    for group in _groups(args[lead:]):
        flag = group[0].split("=", 1)[0]
        step = next((s for s in per_step if flag.startswith(f"--{s}.")), None)
        if flag in own_flags:
            own += group
        elif step is not None:
            per_step[step] += ["--" + group[0][len(step) + 3:], *group[1:]]
        else:
            train += group
    opts: BatchOptions = parse_or_exit(lambda: tyro.cli(BatchOptions, args=own, prog="recon batch"))
    steps = _parse_steps(opts.steps)
    _check_numbers(opts)
    for step, tokens in per_step.items():
        if tokens and step not in steps:
            raise ReconError(None, f"--{step}.* options given, but --steps {opts.steps} has no {step}")
    scenes = list(opts.scenes) + (_read_manifest(opts.manifest) if opts.manifest else [])
    if not scenes:
        raise ReconError(None, "recon batch needs scenes: recon batch SCENES... --out DIR (or --manifest FILE)")
    out = opts.out.expanduser().resolve()
    named = _names([Path(s).expanduser().resolve() for s in scenes])
    first_run = out / named[0][0]
    fingerprints: dict[str, list[str]] = {}
    if "train" in steps:
        for flag in given_flags(train):
            if flag in TRAIN_ONLY_BATCH:
                raise ReconError(None, f"{flag} is set by recon batch (DIR/<scene>/ per scene, evaluation is a "
                                       "--steps entry) and cannot be given")
        from recon.train import parse_train

        train = [*train, "--output.no-eval-at-end"]
        existing = next((p for _, p in named if p.exists()), named[0][1])
        parse_train([str(existing), *train, "--out", str(first_run)])  # one-line error for a bad option
        fingerprints["train"] = train
    elif train:
        raise ReconError(None, f"train options ({' '.join(given_flags(train))}) given, but --steps has no train")
    parsed: dict[str, Any] = {}
    for step in ("eval", "compress", "export"):
        if step not in steps:
            continue
        tokens = per_step.get(step, [])
        if step == "export" and "--out" in given_flags(tokens):
            raise ReconError(None, "--export.out is set by recon batch (the export goes into each run folder)")
        cls = commands[step]
        parsed[step] = parse_or_exit(lambda: tyro.cli(cls, args=[str(first_run), *tokens, "--json"],
                                                      prog=f"recon batch --{step}."))
        fingerprints[step] = tokens
    return BatchRequest(options=opts, scenes=tuple(named), steps=steps, train_args=tuple(train), commands=parsed,
                        fingerprints=fingerprints)


def _parse_steps(text: str) -> tuple[str, ...]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in STEPS]
    if bad or not names:
        raise ReconError(None, f"--steps {text!r}: choose among {','.join(STEPS)} (comma-separated)")
    return tuple(s for s in STEPS if s in names)


def _check_numbers(opts: BatchOptions) -> None:
    if opts.per_scene_cpus <= 0 or opts.per_scene_gpus < 0:
        raise ReconError(None, f"--per-scene-cpus must be > 0 and --per-scene-gpus >= 0 (got {opts.per_scene_cpus}, "
                               f"{opts.per_scene_gpus})")
    if opts.max_retries < 0:
        raise ReconError(None, f"--max-retries must be >= 0, got {opts.max_retries}")
    if opts.num_cpus is not None and (opts.num_cpus < 1 or opts.address is not None):
        raise ReconError(None, "--num-cpus must be at least 1, and is for the embedded Ray only (not with --address)")


def _read_manifest(path: Path) -> list[Path]:
    """Scene paths from a manifest: one a line, relative to the manifest's folder, '#' comments."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ReconError(path, f"cannot read the manifest ({type(err).__name__})") from None
    lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    return [(Path(path).parent / ln) for ln in lines if ln]


def _names(paths: list[Path]) -> list[tuple[str, Path]]:
    """Folder name per scene (a transforms file: its folder's); equal names get -2, -3, ... in order."""
    seen: set[str] = set()
    out = []
    for p in paths:
        base = (p.parent.name if p.suffix == ".json" else p.name) or "scene"
        name, k = base, 1
        while name in seen or name == STATE_DIR:
            k += 1
            name = f"{base}-{k}"
        seen.add(name)
        out.append((name, p))
    return out


# ---------------------------------------------------------------------------------- running
def jobs_of(req: BatchRequest) -> list[SceneJob]:
    out = req.options.out.expanduser().resolve()
    jobs = []
    for name, scene in req.scenes:
        run_dir = out / name
        commands = {step: dataclasses.replace(cmd, run_dir=run_dir) for step, cmd in req.commands.items()}
        jobs.append(SceneJob(name=name, scene=str(scene), out=str(out), steps=req.steps, train_args=req.train_args,
                             commands=commands, fingerprints=req.fingerprints,
                             threads=max(1, round(req.options.per_scene_cpus))))
    return jobs


def machine_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def start_local_ray(*, num_cpus: int | None = None) -> None:
    """Start Ray on this machine for this process: the CPUs given (default: this machine's), no
    dashboard, no usage reporting, every server on 127.0.0.1 (single-node mode)."""
    import sys

    if "ray" in sys.modules and os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") != "0":
        log.warning("batch: Ray was imported before it could be told to stay on 127.0.0.1; its servers may listen "
                    "on every interface")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # read at import: a node address of 127.0.0.1
    ray = import_ray()
    ray.init(address="local", num_cpus=num_cpus or machine_cpus(), include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING, namespace="recon-batch")


def import_ray():
    try:
        import ray
    except ImportError:
        raise ReconError(None, INSTALL_HINT) from None
    return ray


def run_batch(req: BatchRequest) -> int:
    """Run every scene that is not done; write DIR/batch.json and DIR/batch.csv; print the table.
    Exit code 1 when a scene failed (the others still ran)."""
    import importlib.util

    from recon.report import print_batch_table

    if importlib.util.find_spec("ray") is None:
        raise ReconError(None, INSTALL_HINT)
    opts = req.options
    jobs = jobs_of(req)
    out = Path(jobs[0].out)
    t_start = time.time()
    with _driver_lock(out):
        rows: dict[str, dict] = {}
        todo = []
        for job in jobs:
            record = read_record(job)
            if all_done(job, record):
                rows[job.name] = summarize(job, record, status="skipped")
            elif (error := foreign_scene(job, record)) is not None:
                rows[job.name] = summarize(job, record, status="error", error=error)
            else:
                todo.append(job)
        meta: dict[str, Any] = {"out": str(out), "steps": list(req.steps), "started": t_start, "address": opts.address,
                                "per_scene_cpus": opts.per_scene_cpus, "per_scene_gpus": opts.per_scene_gpus}
        log.info("batch: %d scenes, %d to run (%d done)", len(jobs), len(todo), len(jobs) - len(todo))
        try:
            if todo:
                _run_tasks(opts, jobs=jobs, todo=todo, rows=rows, meta=meta, t_start=t_start)
        finally:
            _write_results(out, meta, [rows[j.name] for j in jobs if j.name in rows], t_start)
    ordered = [rows[j.name] for j in jobs]
    print_batch_table(ordered, title=f"recon batch -> {out} ({time.time() - t_start:.1f} s)")
    return 1 if any(r["status"] == "error" for r in ordered) else 0


def _run_tasks(opts: BatchOptions, *, jobs: list[SceneJob], todo: list[SceneJob], rows: dict[str, dict], meta: dict,
               t_start: float) -> None:
    """Submit one Ray task per scene in ``todo``; fill ``rows`` (and rewrite the results) as they end."""
    from recon.batch_task import run_scene
    from scenes.progress import progress

    out = Path(jobs[0].out)
    t0 = time.perf_counter()
    ray = _connect(opts)
    started_here = ray is not None
    ray = ray or import_ray()
    meta["ray_init_seconds"] = round(time.perf_counter() - t0, 3)
    try:
        meta["cluster"] = _check_resources(ray, opts)
        task = ray.remote(run_scene)
        pending: dict[Any, tuple[SceneJob, float]] = {}
        for job in todo:
            ref = task.options(num_cpus=opts.per_scene_cpus, num_gpus=opts.per_scene_gpus, max_retries=opts.max_retries,
                               retry_exceptions=False, name=f"recon-batch:{job.name}").remote(job)
            pending[ref] = (job, time.time())
        with progress("batch", total=len(jobs), completed=len(jobs) - len(todo)) as bar:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    job, submitted = pending.pop(ref)
                    try:
                        row = ray.get(ref)
                    except ray.exceptions.RayError as err:
                        row = summarize(job, read_record(job), status="error",
                                        error=_task_error(ray, err, job, opts.max_retries))
                    row.update(submitted=submitted, received=time.time())
                    rows[job.name] = row
                    _write_results(out, meta, [rows[j.name] for j in jobs if j.name in rows], t_start)
                    failed = sum(r["status"] == "error" for r in rows.values())
                    bar.advance(1, f"{job.name} {row['status']}  ({failed} failed)")
    finally:
        if started_here:
            ray.shutdown()


@contextmanager
def _driver_lock(out: Path) -> Iterator[None]:
    """One driver per output folder at a time (an flock on DIR/.batch/driver.lock; the kernel
    drops it when the driver dies, so a crashed batch never blocks the next)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    import socket

    path = out / STATE_DIR / "driver.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+", encoding="utf-8")
    except OSError as err:
        from scenes.fileio import describe_os_error

        raise ReconError(out, f"cannot create the output folder: {describe_os_error(err)}") from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            raise ReconError(out, f"another recon batch is running on this folder ({f.read().strip() or 'unknown'}); "
                                  "wait for it or use another --out") from None
        f.truncate(0)
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        yield


def _connect(opts: BatchOptions):
    """Join the cluster at --address, or start Ray here; None when this process is already
    connected (a caller that started Ray itself, as the tests do, keeps it)."""
    import sys

    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        return None
    if opts.address is None:
        start_local_ray(num_cpus=opts.num_cpus)
        return import_ray()
    _reachable(opts.address)
    ray = import_ray()
    try:
        ray.init(address=opts.address, log_to_driver=False, logging_level=logging.WARNING, namespace="recon-batch")
    except (ConnectionError, ValueError, RuntimeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ReconError(None, f"--address {opts.address}: cannot join the Ray cluster ({first})") from None
    return ray


def _reachable(address: str, timeout: float = 5.0) -> None:
    """A one-line error now for a HOST:PORT nothing answers on (Ray itself retries for minutes)."""
    given = address
    import socket
    import tempfile

    if address == "auto":  # where ray.init looks: $RAY_ADDRESS, then the last `ray start` on this machine
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        address = os.environ.get("RAY_ADDRESS") or (current.read_text().strip() if current.is_file() else "")
    if not address or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except (OSError, ValueError) as err:
        raise ReconError(None, f"--address {given}: no Ray cluster answers at {address} ({type(err).__name__}: {err}); "
                               "start one with `ray start --head`") from None


def _task_error(ray, err: Exception, job: SceneJob, retries: int) -> str:
    """One line for a task Ray could not run: its worker kept dying, or it could not start there."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(getattr(err, "cause", None) or err))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    last = lines[-1][:300] if lines else type(err).__name__
    died = tuple(getattr(ray.exceptions, n) for n in ("WorkerCrashedError", "NodeDiedError", "OutOfMemoryError")
                 if hasattr(ray.exceptions, n))
    if isinstance(err, died):
        return f"{job.run_dir}: its Ray worker died {retries + 1} times ({last})"
    if "failed to import on the worker" in text or "ModuleNotFoundError" in text:
        return f"{job.run_dir}: the task could not start on its worker ({last}; is recon installed on every node?)"
    return f"{job.run_dir}: the Ray task failed ({last})"


def _check_resources(ray, opts: BatchOptions) -> dict:
    """The cluster's CPUs/GPUs; a scene that could never be scheduled is an error (a warning on a
    cluster, which may grow)."""
    res = ray.cluster_resources()
    cpus, gpus = float(res.get("CPU", 0)), float(res.get("GPU", 0))
    at_once = int(min(cpus / opts.per_scene_cpus, gpus / opts.per_scene_gpus if opts.per_scene_gpus else float("inf")))
    if at_once < 1:
        problem = (f"--per-scene-cpus {opts.per_scene_cpus} / --per-scene-gpus {opts.per_scene_gpus}: the Ray cluster has "
                   f"{cpus:g} CPUs and {gpus:g} GPUs, not enough for one scene")
        if opts.address is None:
            raise ReconError(None, problem)
        log.warning("%s (waiting for the cluster to grow)", problem)
    log.info("batch: Ray has %g CPUs, %g GPUs: %d scenes at a time (%g CPUs, %g GPUs each)", cpus, gpus, at_once,
             opts.per_scene_cpus, opts.per_scene_gpus)
    return {"cpus": cpus, "gpus": gpus, "nodes": len(ray.nodes()), "scenes_at_once": at_once}


def _peak_parallel(rows: list[dict]) -> int:
    """Most tasks that ran at the same time (from the rows' start and end times)."""
    events = sorted([(r["started"], 1) for r in rows if r.get("started") and r.get("finished")]
                    + [(r["finished"], -1) for r in rows if r.get("started") and r.get("finished")])
    peak = cur = 0
    for _, d in events:
        cur += d
        peak = max(peak, cur)
    return peak


def _write_results(out: Path, meta: dict, rows: list[dict], t_start: float) -> None:
    """DIR/batch.json (meta + every row) and DIR/batch.csv (COLUMNS), each written atomically."""
    from scenes.fileio import atomic_write_text

    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "skipped", "error")}
    data = {**meta, "seconds": round(time.time() - t_start, 3), "peak_parallel": _peak_parallel(rows), **counts,
            "scenes": rows}
    atomic_write_text(out / "batch.json", json.dumps(data, indent=1))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "batch.csv", buf.getvalue())
