"""The run folder and its one owner, ``Run``: layout, config, checkpoint, scene, outputs.

RUN/
  config.json       the resolved training config (``recon train --config RUN/config.json``)
  checkpoint.pt     versioned checkpoint: method state, step, history, RNG states (tensors and plain
                    data only, loaded with ``weights_only=True``: a checkpoint cannot run code)
  splats.ply        standard 3DGS .ply (splat runs)
  history.json      loss / PSNR curves
  metrics.json      test-view scores
  renders/          test-view renders; grid.png (ground truth | render | depth), curves.png
  priors/           cached prior outputs (dense init points, monocular depth)
  poses.json        estimated cameras (nerfstudio layout; --poses estimate and photo folders), with
  sfm/              the COLMAP model and sparse_pc.ply (the SfM points) beside it (scenes.sfm writes them)
  renders/orbit.gif photo-folder runs: a turntable around the recovered cameras
  compressed/       what ``recon compress`` wrote (artifact, report.json, saliency.pt)
  export/           what ``recon export`` wrote

Every other module asks a ``Run`` for a path or an object instead of spelling a file name, and a
command opens a run once: the config, the checkpoint and the scene are read at most once per ``Run``.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from reconstruct.config import NerfTrainConfig, SplatTrainConfig, TrainConfig, from_dict, to_json
from scenes.errors import ReconError
from scenes.fileio import atomic_write_bytes, atomic_write_text, sweep_temp_files
from scenes.sfm import MODEL_DIR, POINTS_FILE, POSES_FILE

CHECKPOINT_FORMAT = "recon.checkpoint"
CHECKPOINT_VERSION = 2
"""Version 2: {format, version, method, step, seconds, history, rng, state}; tensors and plain data."""


class Run:
    """One run folder (see the module docstring for the layout)."""

    CONFIG = "config.json"
    CHECKPOINT = "checkpoint.pt"
    SPLATS = "splats.ply"
    HISTORY = "history.json"
    METRICS = "metrics.json"
    CURVES = "curves.png"
    GRID = "grid.png"
    RENDERS = "renders"
    PRIORS = "priors"
    COMPRESSED = "compressed"
    EXPORT = "export"
    REPORT = "report.json"
    SALIENCY = "saliency.pt"
    LOCK = ".lock"
    POSES = POSES_FILE
    SFM = MODEL_DIR
    SFM_POINTS = POINTS_FILE
    ORBIT = "orbit.gif"
    POSE_FILES = (POSES_FILE, MODEL_DIR, POINTS_FILE)
    """What pose estimation wrote: kept by ``create(overwrite=True)`` so a rerun reuses it when the
    images are the same (scenes.sfm checks that)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.created = False
        """True when ``create`` made the folder (``discard`` then removes it again)."""
        self._config: TrainConfig | None = None
        self._checkpoint: dict | None = None
        self._scene = None
        self._dataset_scene = None

    def __repr__(self) -> str:
        return f"Run({str(self.root)!r})"

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(cls, root: str | Path, *, overwrite: bool) -> "Run":
        """A new, empty run folder (an existing non-empty one only with ``overwrite``)."""
        root = Path(root)
        created = not root.exists()
        try:
            if root.exists() and not root.is_dir():
                raise ReconError(root, "output path exists and is a file, not a folder")
            if root.is_dir() and any(root.iterdir()):
                if not overwrite:
                    raise ReconError(root, "output folder exists; pass --overwrite to replace it or --resume to continue")
                holder = cls(root).lock_holder()
                if holder is not None:
                    raise ReconError(root, f"in use by another recon process ({holder}); not replacing it")
                for child in root.iterdir():  # estimated poses stay (reused when the images match)
                    if child.name in cls.POSE_FILES:
                        continue
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
            root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            from scenes.fileio import describe_os_error

            raise ReconError(root, f"cannot create the run folder: {describe_os_error(err)}") from None
        run = cls(root)
        run.created = created
        return run

    def discard(self) -> None:
        """Undo ``create`` after a failure before training started: remove the folder when this
        command created it, else the run files written into it (estimated poses are kept)."""
        if self.created:
            shutil.rmtree(self.root, ignore_errors=True)
            return
        for path in (self.config_path, self.checkpoint_path):
            path.unlink(missing_ok=True)

    @classmethod
    def open(cls, root: str | Path) -> "Run":
        """An existing run folder (its config.json must be there)."""
        run = cls(root)
        if not run.root.is_dir():
            raise ReconError(run.root, "no such run folder")
        if not run.config_path.is_file():
            raise ReconError(run.root, f"not a run folder ({cls.CONFIG} missing)")
        return run

    @contextmanager
    def lock(self, what: str) -> Iterator[None]:
        """Hold the run folder's exclusive lock while writing it; a second writer is refused in one
        line. The lock is an flock on RUN/.lock (with the owner's pid in it), so the lock of a process
        that died is released by the system and the next writer takes it over."""
        import fcntl

        path = self.root / self.LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            from scenes.fileio import describe_os_error

            raise ReconError(self.root, f"cannot lock the run folder: {describe_os_error(err)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ReconError(self.root, f"in use by another recon process ({self.lock_holder() or 'unknown'}); "
                                        "wait for it to finish or stop it") from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()}, {what}\n".encode())
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def lock_holder(self) -> str | None:
        """Who holds the run folder's lock now ("pid N, train"), or None when nobody does."""
        import fcntl

        path = self.root / self.LOCK
        if not path.is_file():
            return None
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return path.read_text().strip() or "unknown"
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    @staticmethod
    def is_run(path: str | Path) -> bool:
        return (Path(path) / Run.CONFIG).is_file()

    def sweep(self) -> int:
        """Remove what a killed writer left behind: temp files, a half-written compressed/ (the
        previous one comes back if the kill fell between the swap's renames)."""
        old, staging = self.root / f".{self.COMPRESSED}.old", self.root / f".{self.COMPRESSED}.new"
        if old.is_dir() and not self.compressed_dir.exists():
            old.rename(self.compressed_dir)
        n = int(old.exists()) + int(staging.exists())
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
        return n + sweep_temp_files(self.root) + sweep_temp_files(self.compressed_dir)

    # ------------------------------------------------------------------ layout
    @property
    def config_path(self) -> Path:
        return self.root / self.CONFIG

    @property
    def checkpoint_path(self) -> Path:
        return self.root / self.CHECKPOINT

    @property
    def splats_path(self) -> Path:
        return self.root / self.SPLATS

    @property
    def history_path(self) -> Path:
        return self.root / self.HISTORY

    @property
    def curves_path(self) -> Path:
        return self.root / self.CURVES

    @property
    def poses_path(self) -> Path:
        return self.root / self.POSES

    @property
    def orbit_path(self) -> Path:
        return self.renders_dir(self.root) / self.ORBIT

    @property
    def priors_dir(self) -> Path:
        return self.root / self.PRIORS

    @property
    def compressed_dir(self) -> Path:
        return self.root / self.COMPRESSED

    @property
    def export_dir(self) -> Path:
        return self.root / self.EXPORT

    @property
    def compress_report_path(self) -> Path:
        return self.compressed_dir / self.REPORT

    @property
    def saliency_path(self) -> Path:
        return self.compressed_dir / self.SALIENCY

    def metrics_path(self, *, compressed: bool = False) -> Path:
        return (self.compressed_dir if compressed else self.root) / self.METRICS

    def results_dir(self, *, compressed: bool = False) -> Path:
        """Where evaluation writes renders/, grid.png and metrics.json."""
        return self.compressed_dir if compressed else self.root

    @staticmethod
    def renders_dir(results_dir: Path) -> Path:
        return Path(results_dir) / Run.RENDERS

    @staticmethod
    def grid_path(results_dir: Path) -> Path:
        return Path(results_dir) / Run.GRID

    # ------------------------------------------------------------------ config
    @property
    def config(self) -> TrainConfig:
        """The run's training config (read and validated once)."""
        if self._config is None:
            self._config = read_config_file(self.config_path)
        return self._config

    @property
    def method(self) -> str:
        return self.config.method

    @property
    def splat_config(self) -> SplatTrainConfig:
        """The config of a splat run (a one-line error for a NeRF run)."""
        cfg = self.config
        if not isinstance(cfg, SplatTrainConfig):
            raise ReconError(self.root, f"is a {cfg.method} run, not a splat run")
        return cfg

    @property
    def nerf_config(self) -> NerfTrainConfig:
        """The config of a NeRF run (a one-line error for a splat run)."""
        cfg = self.config
        if not isinstance(cfg, NerfTrainConfig):
            raise ReconError(self.root, f"is a {cfg.method} run, not a NeRF run")
        return cfg

    def save_config(self, cfg: TrainConfig) -> None:
        atomic_write_text(self.config_path, to_json(cfg))
        self._config = cfg

    # ------------------------------------------------------------------ checkpoint
    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.is_file()

    def checkpoint(self) -> dict:
        """The versioned checkpoint (read once; every key checked)."""
        if self._checkpoint is None:
            self._checkpoint = read_checkpoint(self.checkpoint_path, method=self.method)
        return self._checkpoint

    def save_checkpoint(self, payload: dict) -> None:
        """Write {step, seconds, history, rng, state} as the run's checkpoint, atomically."""
        data = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "method": self.method, **payload}
        buf = io.BytesIO()
        torch.save(data, buf)
        atomic_write_bytes(self.checkpoint_path, buf.getvalue())
        self._checkpoint = None

    def train_seconds(self) -> float | None:
        """Training wall time recorded in the checkpoint (None without a readable one: evaluating
        a run does not need its checkpoint)."""
        if not self.has_checkpoint():
            return None
        try:
            return float(self.checkpoint()["seconds"])
        except ReconError:
            return None

    # ------------------------------------------------------------------ scene and outputs
    def scene(self):
        """The scene the run was trained on, with the run's split and resolution (read once). With
        estimated poses: RUN/poses.json read back (no SfM runs here)."""
        if self._scene is None:
            from reconstruct.poses import training_scene

            self._check_scene_folder()
            self._scene = training_scene(self.config, workdir=self.root, estimate=False)
        return self._scene

    def dataset_scene(self):
        """The posed dataset of a --poses estimate run (its test views score the run); None for a
        photo folder or a run on the dataset's own poses."""
        from reconstruct.poses import dataset_scene, estimated, is_photo_folder

        cfg = self.config
        if not estimated(cfg):
            return None
        self._check_scene_folder()
        if is_photo_folder(cfg.scene):
            return None
        if self._dataset_scene is None:
            self._dataset_scene = dataset_scene(cfg)
        return self._dataset_scene

    def has_estimated_poses(self) -> bool:
        return self.poses_path.is_file()

    def _check_scene_folder(self) -> None:
        cfg = self.config
        if cfg.scene is None or not Path(cfg.scene).exists():
            raise ReconError(self.config_path, f"the run's scene folder {cfg.scene} no longer exists "
                                               "(moved or deleted); what needs only the run's own files still works")

    def has_splats(self) -> bool:
        return self.splats_path.is_file()

    def splats(self):
        """The trained splats (RUN/splats.ply)."""
        from reconstruct.ply import read_ply

        if not self.has_splats():
            raise ReconError(self.root, f"run has no {self.SPLATS} (not a finished splat run)")
        return read_ply(self.splats_path)

    def write_splats(self, splats) -> Path:
        from reconstruct.ply import write_ply

        write_ply(self.splats_path, splats)
        return self.splats_path

    @contextmanager
    def new_compressed(self) -> Iterator[Path]:
        """A fresh folder for everything ``recon compress`` writes; when the block completes it
        replaces RUN/compressed/ (the old one is kept until then, and restored by ``sweep`` if a
        kill lands between the two renames)."""
        staging = self.root / f".{self.COMPRESSED}.new"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        old = self.root / f".{self.COMPRESSED}.old"
        shutil.rmtree(old, ignore_errors=True)
        if self.compressed_dir.exists():
            self.compressed_dir.rename(old)
        staging.rename(self.compressed_dir)
        shutil.rmtree(old, ignore_errors=True)

    def write_json(self, path: Path, data: Any) -> None:
        atomic_write_text(path, json.dumps(data, indent=2))

    def write_metrics(self, result: dict, *, compressed: bool = False) -> None:
        self.write_json(self.metrics_path(compressed=compressed), result)


def read_config_file(path: Path) -> TrainConfig:
    """A run config from a JSON file; one-line ReconError naming the file on any problem."""
    path = Path(path)
    if path.is_dir():
        path = path / Run.CONFIG
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReconError(path, "no such config file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReconError(path, f"unreadable config ({type(err).__name__}: {str(err).splitlines()[0][:120]})") from None
    try:
        return from_dict(data)
    except (ValueError, TypeError) as err:
        raise ReconError(path, f"invalid config: {err}") from None


_CHECKPOINT_KEYS = {"format": str, "version": int, "method": str, "step": int, "seconds": float, "history": list,
                    "rng": dict, "state": dict}


def read_checkpoint(path: Path, *, method: str | None = None) -> dict:
    """A checkpoint loaded without running code (``weights_only``), its keys and version checked."""
    if not Path(path).is_file():
        raise ReconError(path, "no checkpoint (nothing to resume or evaluate)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpickling refused or a truncated file: a bad file either way
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise ReconError(path, f"unreadable checkpoint ({first})") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise ReconError(path, "not a recon checkpoint")
    if data.get("version") != CHECKPOINT_VERSION:
        raise ReconError(path, f"checkpoint version {data.get('version')} is not supported (this recon reads "
                               f"version {CHECKPOINT_VERSION}); retrain the run")
    for key, kind in _CHECKPOINT_KEYS.items():
        if key not in data:
            raise ReconError(path, f"checkpoint has no {key!r}")
        if kind is float and isinstance(data[key], int):
            data[key] = float(data[key])
        if not isinstance(data[key], kind):
            raise ReconError(path, f"checkpoint {key!r} is a {type(data[key]).__name__}, expected {kind.__name__}")
    if method is not None and data["method"] != method:
        raise ReconError(path, f"checkpoint is a {data['method']} run but config.json says {method}")
    return data


# ---------------------------------------------------------------------------------- RNG states
def rng_state() -> dict:
    """torch, numpy and Python RNG states as tensors and plain data (safe to load)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": [kind, torch.from_numpy(np.asarray(keys, np.int64)), int(pos),
                                                      int(has_gauss), float(cached)],
            "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def resolve_device(name: str) -> torch.device:
    """auto = the accelerator when there is one (CUDA for gsplat), else CPU; asking for a device
    that is not there is a user error."""
    accel = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    if name == "auto":
        return accel or torch.device("cpu")
    device = torch.device(name)
    if device.type != "cpu" and (accel is None or accel.type != device.type):
        raise ReconError(None, f"--device {name} asked for, but no such device is available")
    return device
