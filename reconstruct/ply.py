"""Standard 3DGS .ply (the Inria layout every splat tool reads).

One ``vertex`` element of float32 properties, in this order::

    x y z  nx ny nz  f_dc_0 f_dc_1 f_dc_2  f_rest_0 .. f_rest_{3(K-1)-1}
    opacity  scale_0 scale_1 scale_2  rot_0 rot_1 rot_2 rot_3

``opacity`` is the logit, ``scale_*`` are log standard deviations, ``rot_*`` is the
quaternion w x y z (not necessarily normalized), ``nx ny nz`` are zeros. ``f_rest`` is
channel-major: all K-1 red coefficients, then green, then blue — so our ``shN[i, k, c]``
is ``f_rest_{c * (K-1) + k}``. Coordinates are the scene's frame as trained (OpenCV RDF).

The reader takes binary little-endian or ascii files, properties in any order and any
numeric type, and ignores properties that other tools add and that carry nothing a splat
needs (normals, 8-bit preview colors). Any other property or element is an error: a file
we half-understand would render wrong without telling anyone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reconstruct.splats import Splats
from scenes.errors import ReconError

from reconstruct import plyio as _plyio

HARMLESS_VERTEX_PROPERTIES = frozenset({"nx", "ny", "nz", "red", "green", "blue"})
"""Properties some tools write next to the 3DGS ones; they duplicate or carry nothing we use."""

_REQUIRED = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
             "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")


def vertex_array(splats: Splats) -> np.ndarray:
    """The [N] structured float32 vertex rows of the Inria layout."""
    n, k1 = len(splats), splats.shN.shape[1]
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(3 * k1)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    cols = np.empty((n, len(names)), np.float32)
    cols[:, 0:3] = splats.means
    cols[:, 3:6] = 0.0
    cols[:, 6:9] = splats.sh0
    # shN [N, K-1, 3] -> channel-major [N, 3, K-1] -> [N, 3(K-1)]
    cols[:, 9:9 + 3 * k1] = np.transpose(splats.shN, (0, 2, 1)).reshape(n, 3 * k1)
    o = 9 + 3 * k1
    cols[:, o] = splats.opacity_logits
    cols[:, o + 1:o + 4] = splats.log_scales
    cols[:, o + 4:o + 8] = splats.quats
    dtype = np.dtype([(name, "<f4") for name in names])
    return np.ascontiguousarray(cols).view(dtype).reshape(n)


def encode(splats: Splats) -> bytes:
    """The full .ply file as bytes."""
    return _plyio.ply_bytes([("vertex", vertex_array(splats))])


def write_ply(path: Path, splats: Splats) -> None:
    """Write ``splats`` as a standard .ply, atomically (the folder is created)."""
    from scenes.fileio import atomic_write_bytes

    atomic_write_bytes(path, encode(splats))


def read_ply(path: Path) -> Splats:
    """Read a standard 3DGS .ply (one-line ReconError naming the file when it is not one)."""
    path = Path(path)
    data = _plyio.read_bytes(path)
    if not _plyio.is_ply(data):
        raise ReconError(path, "not a .ply file (wrong magic bytes)")
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return decode(path, data, _plyio.parse_header(path, data))


def is_standard(header: _plyio.PlyHeader) -> bool:
    """True when the header looks like the Inria layout (a vertex element with x and f_dc_0)."""
    v = header.element("vertex")
    return v is not None and "x" in v.names and "f_dc_0" in v.names


def decode(path: Path, data: bytes, header: _plyio.PlyHeader) -> Splats:
    """Splats from a parsed standard-layout file (see module docstring for what is accepted)."""
    extra_elements = [e.name for e in header.elements if e.name != "vertex"]
    if extra_elements:
        raise ReconError(path, f"unexpected PLY element(s) {', '.join(extra_elements)} "
                               "in a standard 3DGS .ply (expected only 'vertex')")
    v = header.element("vertex")
    if v is None:
        raise ReconError(path, "PLY has no 'vertex' element")
    names = set(v.names)
    missing = [p for p in _REQUIRED if p not in names]
    if missing:
        raise ReconError(path, f"3DGS .ply vertex is missing properties {' '.join(missing)}")
    rest = sorted((p for p in names if p.startswith("f_rest_")),
                  key=lambda p: int(p[7:]) if p[7:].isdigit() else -1)
    if any(not p[7:].isdigit() for p in rest) or [int(p[7:]) for p in rest] != list(range(len(rest))):
        raise ReconError(path, f"f_rest properties are not numbered 0..{len(rest) - 1} without gaps")
    if len(rest) % 3 or (len(rest) // 3 + 1) not in (1, 4, 9, 16):
        raise ReconError(path, f"{len(rest)} f_rest properties do not match an SH degree 0-3 "
                               "(expected 0, 9, 24 or 45)")
    unknown = sorted(names - set(_REQUIRED) - set(rest) - HARMLESS_VERTEX_PROPERTIES)
    if unknown:
        raise ReconError(path, f"unknown vertex properties {' '.join(unknown)} "
                               "(not part of the 3DGS .ply layout)")
    rows = _plyio.read_elements(path, data, header)["vertex"]

    all_f4 = all(t == "f4" for _, t in v.properties)
    table = rows.view("<f4").reshape(len(rows), -1) if all_f4 and len(rows) else None
    index = {name: i for i, name in enumerate(v.names)}

    def cols(fields: list[str] | tuple[str, ...]) -> np.ndarray:
        """[N, len(fields)] float32 (one fancy-index on the float table when every property is float)."""
        if not fields:
            return np.zeros((len(rows), 0), np.float32)
        if table is not None:
            return table[:, [index[f] for f in fields]]
        return np.stack([rows[f].astype(np.float32) for f in fields], axis=1)

    n, k1 = len(rows), len(rest) // 3
    splats = Splats(
        means=cols(("x", "y", "z")),
        quats=cols(("rot_0", "rot_1", "rot_2", "rot_3")),
        log_scales=cols(("scale_0", "scale_1", "scale_2")),
        opacity_logits=cols(("opacity",))[:, 0].copy(),
        sh0=cols(("f_dc_0", "f_dc_1", "f_dc_2")),
        shN=np.ascontiguousarray(cols(rest).reshape(n, 3, k1).transpose(0, 2, 1)),
    )
    check_finite(path, splats)
    return splats


def check_finite(path: Path, splats: Splats) -> None:
    """NaN or inf in any field is a broken file, not something to render."""
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh0", "shN"):
        arr = getattr(splats, name)
        if arr.size and not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr.reshape(len(splats), -1))).any(axis=1).sum())
            raise ReconError(path, f"{bad} splat(s) have non-finite {name}")
