"""The one write discipline for every output file: temp file in the same folder, fsync, rename.

    atomic_write_bytes(path, data)      # a reader never sees a half-written file
    atomic_write_text(path, text)

A failed write removes its temp file and leaves any previous file untouched; an OSError becomes a
one-line ReconError naming the path ("disk full", "not writable", ...). Temp files are named
``.<name>.<random>.tmp`` so a later start can sweep the ones a killed process left behind
(``sweep_temp_files``).
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from scenes.errors import ReconError

TEMP_SUFFIX = ".tmp"
"""Suffix of every temp file an atomic write creates (the prefix is ``.<target name>.``)."""


def describe_os_error(err: OSError) -> str:
    """A short reason for a failed write: "disk full", "not writable", ..."""
    reasons = {
        errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EACCES: "not writable (permission denied)",
        errno.EPERM: "not writable (operation not permitted)", errno.EROFS: "not writable (read-only file system)",
        errno.ENOTDIR: "a parent path is a file, not a folder", errno.EISDIR: "is a folder, not a file",
        errno.ENAMETOOLONG: "file name too long",
    }
    return reasons.get(err.errno or -1, err.strerror or str(err))


def atomic_write_bytes(path: str | Path, data: bytes, *, make_parents: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        if make_parents:
            folder.mkdir(parents=True, exist_ok=True)
        elif not folder.is_dir():
            raise ReconError(path, "output folder does not exist")
        if path.is_dir():
            raise ReconError(path, "is a folder, not a file")
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=folder)
    except OSError as err:
        raise ReconError(path, f"cannot write: {describe_os_error(err)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise ReconError(path, f"cannot write: {describe_os_error(err)}") from None
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def sweep_temp_files(folder: str | Path) -> int:
    """Remove temp files of atomic writes that a killed process left in ``folder`` (and one level
    below); returns how many were removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for pattern in (f".*{TEMP_SUFFIX}", f"*/.*{TEMP_SUFFIX}"):
        for p in folder.glob(pattern):
            if p.is_file():
                p.unlink(missing_ok=True)
                removed += 1
    return removed


def _umask() -> int:
    """The process umask (read without changing it for longer than the call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
