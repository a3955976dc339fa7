"""Splat files: one reader and one writer for the formats players use.

    splats = read_splats("scene.ply")                 # format detected from bytes, not trusted names
    write_splats("scene.compressed.ply", splats, format="compressed-ply")

Formats (byte layouts in DESIGN.md "Formats" and each module's docstring):

- ``ply``: standard 3DGS .ply, float32, lossless (reconstruct/ply.py: training writes it)
- ``compressed-ply``: PlayCanvas / SuperSplat chunked 8-16 bytes a splat (compressed_ply.py)
- ``spz``: Niantic .spz, fixed point, RUB axes: v3 gzip or v4 zstd streams; reads v2-v4 (spz.py)
- ``splat``: antimatter15 .splat, 32 bytes a splat, no SH (splat.py)
- ``sog``: PlayCanvas SOG v2, a zip of meta.json + lossless WebP textures (sog.py); a path named
  ``meta.json`` (or its folder) is the unbundled form
- ``glb``: glTF 2.0 binary with KHR_gaussian_splatting, float attributes, +Y up (gltf.py)

``spz_version`` picks .spz version 3 (gzip, the default) or 4 (NGSP header, zstd streams).

Every reader raises ``scenes.errors.ReconError(path, problem)`` for a malformed file, and every
writer replaces its output atomically (temp file in the same folder + ``os.replace``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from reconstruct.splats import Splats
from scenes.errors import ReconError

FORMATS = ("ply", "compressed-ply", "spz", "splat", "sog", "glb")
Format = Literal["ply", "compressed-ply", "spz", "splat", "sog", "glb"]

EXTENSIONS = {"ply": ".ply", "compressed-ply": ".compressed.ply", "spz": ".spz", "splat": ".splat",
              "sog": ".sog", "glb": ".glb"}
"""Conventional file suffix per format (what splat-transform and SuperSplat expect)."""

_EXPECTED = ".ply, .compressed.ply, .spz, .splat, .sog, meta.json or .glb"


def format_from_name(path: str | Path) -> Format:
    """The format a file name asks for, by suffix (``.compressed.ply`` before ``.ply``)."""
    name = Path(path).name.lower()
    if name.endswith(".compressed.ply"):
        return "compressed-ply"
    if name == "meta.json":
        return "sog"
    suffixes: tuple[tuple[Format, str], ...] = (
        ("ply", ".ply"), ("spz", ".spz"), ("splat", ".splat"), ("sog", ".sog"), ("glb", ".glb"))
    for fmt, ext in suffixes:
        if name.endswith(ext):
            return fmt
    raise ReconError(path, f"unknown splat file type (expected {_EXPECTED})")


def detect_format(path: str | Path, data: bytes) -> Format:
    """The format of file bytes: PLY magic (standard vs compressed by its elements), gzip or
    ``NGSP`` magic for .spz (v2-3 / v4), zip magic with a meta.json entry for .sog, ``glTF`` magic
    for .glb, a .json name for an unbundled SOG meta.json, else .splat when the name says so."""
    from reconstruct import plyio as _plyio

    if _plyio.is_ply(data):
        header = _plyio.parse_header(Path(path), data)
        return "compressed-ply" if header.element("chunk") is not None else "ply"
    if data[:2] == b"\x1f\x8b" or data[:4] == b"NGSP":
        return "spz"
    if data[:4] == b"glTF":
        return "glb"
    if data[:4] == b"PK\x03\x04":
        from . import sog

        if sog.is_sog_zip(data):
            return "sog"
        raise ReconError(path, "zip file without a readable meta.json entry (not a .sog)")
    if Path(path).suffix.lower() == ".json":
        return "sog"
    suffix = Path(path).suffix.lower()
    if suffix == ".splat":
        return "splat"
    if suffix in (".ply", ".spz", ".sog", ".glb"):
        raise ReconError(path, f"not a {suffix} file (wrong magic bytes)")
    raise ReconError(path, f"unknown splat file type (expected {_EXPECTED})")


def read_splats(path: str | Path) -> Splats:
    """Read any of the formats into float ``Splats`` (scene frame, RDF, pre-activation). A folder
    holding a meta.json is read as an unbundled SOG."""
    from reconstruct import plyio as _plyio

    path = Path(path)
    if path.is_dir() and (path / "meta.json").is_file():
        path = path / "meta.json"
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
    if fmt == "sog":
        from . import sog

        if data[:4] == b"PK\x03\x04":
            return sog.decode(path, data)
        return sog.read_folder(path)
    if fmt == "glb":
        from . import gltf

        return gltf.decode(path, data)
    from . import splat

    return splat.decode(path, data)


def _with_degree(splats: Splats, sh_degree: int) -> Splats:
    if not 0 <= sh_degree <= 3:
        raise ReconError(None, f"--sh-degree must be 0..3, got {sh_degree}")
    return splats.with_sh_degree(min(sh_degree, splats.sh_degree))


def encode_splats(splats: Splats, *, format: Format, sh_degree: int | None = None,
                  spz_version: int = 3) -> bytes:
    """The bytes ``write_splats`` would write (for sizes and golden hashes without a file)."""
    if sh_degree is not None:
        splats = _with_degree(splats, sh_degree)
    if format == "ply":
        from reconstruct import ply

        return ply.encode(splats)
    if format == "compressed-ply":
        from . import compressed_ply

        return compressed_ply.encode(splats)
    if format == "spz":
        from . import spz

        return spz.encode(splats, version=spz_version)
    if format == "sog":
        from . import sog

        return sog.encode(splats)
    if format == "glb":
        from . import gltf

        return gltf.encode(splats)
    if format == "splat":
        from . import splat

        return splat.encode(splats)
    raise ReconError(None, f"unknown splat format {format!r} (one of {', '.join(FORMATS)})")


def write_splats(path: str | Path, splats: Splats, *, format: Format | None = None,
                 sh_degree: int | None = None, spz_version: int = 3) -> Path:
    """Write ``splats`` to ``path`` atomically in ``format`` (default: from the file name).

    ``sh_degree`` drops SH bands above it (never invents bands the splats do not have).
    A SOG written to a path named ``meta.json`` is the unbundled folder form.
    Returns the path written.
    """
    from reconstruct import plyio as _plyio

    path = Path(path)
    fmt = format if format is not None else format_from_name(path)
    if fmt == "sog" and path.name.lower() == "meta.json":
        from . import sog

        if sh_degree is not None:
            splats = _with_degree(splats, sh_degree)
        return sog.write_folder(path, splats)
    _plyio.write_atomic(path, encode_splats(splats, format=fmt, sh_degree=sh_degree, spz_version=spz_version))
    return path


__all__ = ["FORMATS", "EXTENSIONS", "Format", "read_splats", "write_splats", "encode_splats",
           "detect_format", "format_from_name"]
