"""Splat files: one reader and one writer for the four formats players use.

    splats = read_splats("scene.ply")                 # format detected from bytes, not trusted names
    write_splats("scene.compressed.ply", splats, format="compressed-ply")

Formats (byte layouts in DESIGN.md "Formats" and each module's docstring):

- ``ply``: standard 3DGS .ply, float32, lossless (reconstruct/ply.py: training writes it)
- ``compressed-ply``: PlayCanvas / SuperSplat chunked 8-16 bytes a splat (compressed_ply.py)
- ``spz``: Niantic .spz v3, gzip, fixed point, RUB axes (spz.py)
- ``splat``: antimatter15 .splat, 32 bytes a splat, no SH (splat.py)

Every reader raises ``scenes.errors.ReconError(path, problem)`` for a malformed file, and every
writer replaces its output atomically (temp file in the same folder + ``os.replace``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from reconstruct.splats import Splats
from scenes.errors import ReconError

FORMATS = ("ply", "compressed-ply", "spz", "splat")
Format = Literal["ply", "compressed-ply", "spz", "splat"]

EXTENSIONS = {"ply": ".ply", "compressed-ply": ".compressed.ply", "spz": ".spz", "splat": ".splat"}
"""Conventional file suffix per format (what splat-transform and SuperSplat expect)."""


def format_from_name(path: str | Path) -> Format:
    """The format a file name asks for, by suffix (``.compressed.ply`` before ``.ply``)."""
    name = Path(path).name.lower()
    if name.endswith(".compressed.ply"):
        return "compressed-ply"
    for fmt, ext in (("ply", ".ply"), ("spz", ".spz"), ("splat", ".splat")):
        if name.endswith(ext):
            return fmt
    raise ReconError(path, "unknown splat file type (expected .ply, .compressed.ply, .spz or .splat)")


def detect_format(path: str | Path, data: bytes) -> Format:
    """The format of file bytes: PLY magic (standard vs compressed by its elements), gzip magic for
    .spz, else .splat when the name says so and the size is a multiple of 32."""
    from reconstruct import plyio as _plyio

    if _plyio.is_ply(data):
        header = _plyio.parse_header(Path(path), data)
        return "compressed-ply" if header.element("chunk") is not None else "ply"
    if data[:2] == b"\x1f\x8b":
        return "spz"
    if Path(path).suffix.lower() == ".splat":
        return "splat"
    if Path(path).suffix.lower() in (".ply", ".spz"):
        raise ReconError(path, f"not a {Path(path).suffix} file (wrong magic bytes)")
    raise ReconError(path, "unknown splat file type (expected .ply, .compressed.ply, .spz or .splat)")


def read_splats(path: str | Path) -> Splats:
    """Read any of the four formats into float ``Splats`` (scene frame, RDF, pre-activation)."""
    from reconstruct import plyio as _plyio

    path = Path(path)
    data = _plyio.read_bytes(path)
    # Garbage values overflow while decoding; the finiteness checks turn them into ReconErrors,
    # so numpy's RuntimeWarnings would only be noise on the user's terminal.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _decode(path, data)


def _decode(path: Path, data: bytes) -> Splats:
    from reconstruct import plyio as _plyio

    fmt = detect_format(path, data)
    if fmt == "ply":
        from reconstruct import ply

        return ply.decode(path, data, _plyio.parse_header(path, data))
    if fmt == "compressed-ply":
        from . import compressed_ply

        return compressed_ply.decode(path, data, _plyio.parse_header(path, data))
    if fmt == "spz":
        from . import spz

        return spz.decode(path, data)
    from . import splat

    return splat.decode(path, data)


def encode_splats(splats: Splats, *, format: Format, sh_degree: int | None = None) -> bytes:
    """The bytes ``write_splats`` would write (for sizes and golden hashes without a file)."""
    if sh_degree is not None:
        if not 0 <= sh_degree <= 3:
            raise ReconError(None, f"--sh-degree must be 0..3, got {sh_degree}")
        splats = splats.with_sh_degree(min(sh_degree, splats.sh_degree))
    if format == "ply":
        from reconstruct import ply

        return ply.encode(splats)
    if format == "compressed-ply":
        from . import compressed_ply

        return compressed_ply.encode(splats)
    if format == "spz":
        from . import spz

        return spz.encode(splats)
    if format == "splat":
        from . import splat

        return splat.encode(splats)
    raise ReconError(None, f"unknown splat format {format!r} (one of {', '.join(FORMATS)})")


def write_splats(path: str | Path, splats: Splats, *, format: Format | None = None,
                 sh_degree: int | None = None) -> Path:
    """Write ``splats`` to ``path`` atomically in ``format`` (default: from the file name).

    ``sh_degree`` drops SH bands above it (never invents bands the splats do not have).
    Returns the path written.
    """
    from reconstruct import plyio as _plyio

    path = Path(path)
    fmt = format if format is not None else format_from_name(path)
    _plyio.write_atomic(path, encode_splats(splats, format=fmt, sh_degree=sh_degree))
    return path


__all__ = ["FORMATS", "EXTENSIONS", "Format", "read_splats", "write_splats", "encode_splats",
           "detect_format", "format_from_name"]
