"""A standalone reader for COLMAP's points3D file (.bin or .txt).

pycolmap only reads complete models (cameras, images and points together); LLFF releases such
as fern ship cameras.bin and points3D.bin without images.bin, so the points are read here.
Binary layout (little endian): uint64 count, then per point uint64 id, 3 x float64 xyz,
3 x uint8 rgb, float64 error, uint64 track length, track length x (uint32 image id, uint32
point2D index).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from scenes.errors import ReconError

_HEAD = struct.Struct("<Q3d3BdQ")  # id, xyz, rgb, error, track length: 43 bytes


def find_points_file(root: Path) -> Path | None:
    """sparse/0/points3D.{bin,txt} or sparse/points3D.{bin,txt} under ``root``, if any."""
    for sub in ("sparse/0", "sparse"):
        for name in ("points3D.bin", "points3D.txt"):
            p = root / sub / name
            if p.is_file():
                return p
    return None


def read_points3d(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(xyz [P, 3] float64, rgb [P, 3] uint8) from a COLMAP points3D.bin or points3D.txt."""
    if path.suffix == ".txt":
        return _read_txt(path)
    data = path.read_bytes()
    try:
        (count,) = struct.unpack_from("<Q", data, 0)
        if count > len(data) // _HEAD.size:
            raise ValueError(f"header says {count} points, more than the file can hold")
        xyz = np.empty((count, 3))
        rgb = np.empty((count, 3), dtype=np.uint8)
        off = 8
        for i in range(count):
            _pid, x, y, z, r, g, b, _err, track = _HEAD.unpack_from(data, off)
            xyz[i] = (x, y, z)
            rgb[i] = (r, g, b)
            off += _HEAD.size + 8 * track
        if off > len(data):
            raise ValueError("file ends inside a point track")
    except (struct.error, ValueError) as err:
        raise ReconError(path, f"malformed points3D file ({err})") from None
    if not np.isfinite(xyz).all():
        raise ReconError(path, "points have non-finite coordinates")
    return xyz, rgb


def _read_txt(path: Path) -> tuple[np.ndarray, np.ndarray]:
    xyz, rgb = [], []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            try:
                if len(parts) < 8:
                    raise ValueError("too few fields")
                xyz.append([float(v) for v in parts[1:4]])
                rgb.append([int(v) for v in parts[4:7]])
            except (ValueError, IndexError):
                raise ReconError(path, f"line {lineno} is not a point") from None
    pts = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    if not np.isfinite(pts).all():
        raise ReconError(path, "points have non-finite coordinates")
    return pts, np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)
