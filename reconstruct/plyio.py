"""Low-level PLY container: header parsing and element reading/writing with size checks.

Only what splat files need: ``element`` / ``property`` lines with scalar types (no list
properties), ``binary_little_endian`` and ``ascii`` bodies. Every count in the header is
checked against the file size before anything is allocated, so a header claiming 10^12
vertices fails fast with a one-line ``ReconError`` instead of a MemoryError or a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scenes.errors import ReconError
from scenes.fileio import atomic_write_bytes

PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
"""PLY scalar type name -> numpy dtype code (little endian is applied separately)."""

_NUMPY_TO_PLY = {"i1": "char", "u1": "uchar", "i2": "short", "u2": "ushort",
                 "i4": "int", "u4": "uint", "f4": "float", "f8": "double"}

MAX_HEADER_BYTES = 1 << 20
"""A header longer than this is not a splat file (protects against reading a huge binary)."""


@dataclass(frozen=True)
class PlyElement:
    """One ``element`` block of a PLY header."""

    name: str
    count: int
    properties: tuple[tuple[str, str], ...]
    """(property name, numpy dtype code) in file order."""

    @property
    def dtype(self) -> np.dtype:
        return np.dtype([(n, "<" + t) for n, t in self.properties])

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.properties]


@dataclass(frozen=True)
class PlyHeader:
    """A parsed header: body format, elements in order, comments, byte length of the header."""

    format: str
    """"binary_little_endian" or "ascii"."""
    elements: tuple[PlyElement, ...]
    comments: tuple[str, ...]
    size: int
    """Bytes up to and including the ``end_header`` newline."""

    def element(self, name: str) -> PlyElement | None:
        for e in self.elements:
            if e.name == name:
                return e
        return None


def read_bytes(path: Path) -> bytes:
    """The whole file, with unreadable paths turned into a ReconError."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ReconError(path, "no such file") from None
    except IsADirectoryError:
        raise ReconError(path, "is a folder, expected a splat file") from None
    except OSError as err:
        raise ReconError(path, f"cannot read ({err.strerror})") from None


def is_ply(data: bytes) -> bool:
    return data[:4] in (b"ply\n", b"ply\r")


def parse_header(path: Path, data: bytes) -> PlyHeader:
    """Parse the PLY header at the start of ``data``; every problem is a ReconError naming ``path``."""
    if not is_ply(data):
        raise ReconError(path, "not a PLY file (missing 'ply' magic)")
    end = data.find(b"\nend_header", 0, MAX_HEADER_BYTES) + 1  # a line of its own, not inside a comment
    if end <= 0:
        raise ReconError(path, "PLY header has no end_header (truncated or not a PLY file)")
    nl = data.find(b"\n", end)
    if nl < 0:
        raise ReconError(path, "PLY header ends without a newline after end_header (truncated)")
    try:
        text = data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise ReconError(path, "PLY header contains non-ASCII bytes") from None
    fmt = None
    elements: list[PlyElement] = []
    comments: list[str] = []
    current: tuple[str, int, list[tuple[str, str]]] | None = None
    for lineno, raw in enumerate(text.replace("\r", "").split("\n")[1:], start=2):
        words = raw.split()
        if not words:
            continue
        key = words[0]
        if key in ("comment", "obj_info"):
            comments.append(raw.partition(" ")[2])
        elif key == "format":
            if len(words) != 3 or words[2] != "1.0":
                raise ReconError(path, f"PLY header line {lineno}: bad format line {raw!r}")
            if words[1] not in ("binary_little_endian", "ascii"):
                raise ReconError(path, f"PLY body format {words[1]} is not supported "
                                       "(binary_little_endian or ascii)")
            fmt = words[1]
        elif key == "element":
            if len(words) != 3 or not words[2].isdigit():
                raise ReconError(path, f"PLY header line {lineno}: bad element line {raw!r}")
            if current is not None:
                elements.append(PlyElement(current[0], current[1], tuple(current[2])))
            current = (words[1], int(words[2]), [])
        elif key == "property":
            if current is None:
                raise ReconError(path, f"PLY header line {lineno}: property before any element")
            if len(words) >= 2 and words[1] == "list":
                raise ReconError(path, f"PLY element '{current[0]}' has a list property "
                                       f"({raw.strip()!r}); splat files use scalar properties only")
            if len(words) != 3 or words[1] not in PLY_TYPES:
                raise ReconError(path, f"PLY header line {lineno}: bad property line {raw!r}")
            if any(n == words[2] for n, _ in current[2]):
                raise ReconError(path, f"PLY element '{current[0]}' repeats property {words[2]}")
            current[2].append((words[2], PLY_TYPES[words[1]]))
        else:
            raise ReconError(path, f"PLY header line {lineno}: unknown keyword {key!r}")
    if current is not None:
        elements.append(PlyElement(current[0], current[1], tuple(current[2])))
    if fmt is None:
        raise ReconError(path, "PLY header has no format line")
    return PlyHeader(fmt, tuple(elements), tuple(comments), nl + 1)


def read_elements(path: Path, data: bytes, header: PlyHeader) -> dict[str, np.ndarray]:
    """All elements' bodies as structured arrays, after checking the file size against the counts.

    Binary: the body must be exactly the sum of count * row size (a longer file is accepted only
    if the extra bytes are whitespace, as some writers add a trailing newline). ASCII: each
    element's rows must have exactly one token per property.
    """
    body = memoryview(data)[header.size:]
    out: dict[str, np.ndarray] = {}
    if header.format == "binary_little_endian":
        need = sum(e.count * e.dtype.itemsize for e in header.elements)
        if len(body) < need:
            raise ReconError(path, f"truncated: header promises {need} body bytes "
                                   f"({', '.join(f'{e.count} {e.name}' for e in header.elements)}), "
                                   f"file has {len(body)}")
        if len(body) > need and bytes(body[need:need + 64]).strip():
            raise ReconError(path, f"element counts do not match the file size: "
                                   f"{len(body) - need} unexpected bytes after the last element")
        offset = 0
        for e in header.elements:
            nbytes = e.count * e.dtype.itemsize
            # read-only views into ``data``: decoders copy what they keep
            out[e.name] = np.frombuffer(body, dtype=e.dtype, count=e.count, offset=offset)
            offset += nbytes
        return out
    # ascii: a row has at least 2 bytes per property ("0 "), so check that before splitting.
    need = sum(e.count * 2 * len(e.properties) for e in header.elements)
    if len(body) + 1 < need:
        raise ReconError(path, f"truncated: header promises {need // 2} values, "
                               f"the body is only {len(body)} bytes")
    tokens = bytes(body).split()
    offset = 0
    for e in header.elements:
        n = e.count * len(e.properties)
        if offset + n > len(tokens):
            raise ReconError(path, f"truncated: element '{e.name}' needs {n} values, "
                                   f"{len(tokens) - offset} remain")
        arr = np.zeros(e.count, dtype=e.dtype)
        try:
            vals = np.array(tokens[offset:offset + n], dtype=np.float64).reshape(e.count, -1)
        except ValueError:
            raise ReconError(path, f"element '{e.name}' has a non-numeric value") from None
        for j, name in enumerate(e.names):
            arr[name] = vals[:, j]
        out[e.name] = arr
        offset += n
    if offset != len(tokens):
        raise ReconError(path, f"element counts do not match the file: {len(tokens) - offset} "
                               "extra values after the last element")
    return out


def header_text(elements: list[tuple[str, np.ndarray]], comments: Sequence[str] = ()) -> bytes:
    """Binary little-endian PLY header for structured arrays (one per element)."""
    lines = ["ply", "format binary_little_endian 1.0"]
    lines += [f"comment {c}" for c in comments]
    for name, arr in elements:
        lines.append(f"element {name} {arr.shape[0]}")
        assert arr.dtype.names is not None, f"element '{name}' is not a structured array"
        for field in arr.dtype.names:
            code = arr.dtype[field].str[1:]
            lines.append(f"property {_NUMPY_TO_PLY[code]} {field}")
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


def ply_bytes(elements: list[tuple[str, np.ndarray]], comments: Sequence[str] = ()) -> bytes:
    """A complete binary little-endian PLY file as bytes."""
    parts = [header_text(elements, comments)]
    for _, arr in elements:
        assert arr.dtype.names is not None
        assert all(arr.dtype[f].byteorder in "<|=" for f in arr.dtype.names)
        parts.append(np.ascontiguousarray(arr).tobytes())
    return b"".join(parts)


def write_atomic(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically (``scenes.fileio``); the folder must exist."""
    atomic_write_bytes(path, payload, make_parents=False)
