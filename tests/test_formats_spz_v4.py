"""SPZ v4 (NGSP header, table of contents, zstd planes): layout, equality with v3's planes,
degree-4 and extension files, and Niantic's own v4 writer/reader (WASM inside splat-transform 2.7)."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import zstandard

from pruning.formats import detect_format, encode_splats, read_splats, write_splats
from pruning.formats import spz
from pruning.formats._scenes import surface_splats
from pruning.formats._testing import tiny_splats
from reconstruct.splats import Splats
from scenes.errors import ReconError

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "node_modules" / ".bin" / "splat-transform"
needs_tool = pytest.mark.skipif(shutil.which("node") is None or not TOOL.exists(),
                                reason="node or splat-transform absent (run scripts/system_deps.sh)")
FIELDS = ("means", "quats", "log_scales", "opacity_logits", "sh0", "shN")


def _scene(n: int, degree: int) -> Splats:
    s = tiny_splats(n, sh_degree=degree)
    return Splats(s.means + np.float32(1 / 3), s.quats, s.log_scales, s.opacity_logits, s.sh0, s.shN)


def _streams(data: bytes) -> tuple[tuple, list[bytes]]:
    """(header fields, decompressed streams) of a v4 file, parsed independently of spz.py."""
    head = struct.unpack_from("<4sIIBBBBI", data)
    assert data[20:32] == bytes(12)
    count, toc = head[6], head[7]
    offset, out = toc + 16 * count, []
    for i in range(count):
        csize, usize = struct.unpack_from("<QQ", data, toc + 16 * i)
        raw = zstandard.ZstdDecompressor().decompress(data[offset:offset + csize], max_output_size=usize)
        assert len(raw) == usize
        out.append(raw)
        offset += csize
    assert offset == len(data)
    return head, out


def _same(a: Splats, b: Splats) -> None:
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)


def test_v4_layout_and_same_planes_as_v3(tmp_path) -> None:
    s = _scene(300, 3)
    data = spz.encode(s, version=4)
    head, streams = _streams(data)
    assert head == (b"NGSP", 4, 300, 3, 12, 0, 6, 32)
    assert streams == spz.planes(s)
    assert [len(x) for x in streams] == [300 * 9, 300, 900, 900, 1200, 300 * 45]
    path = write_splats(tmp_path / "a.spz", s, spz_version=4)
    assert path.read_bytes() == data == encode_splats(s, format="spz", spz_version=4)
    assert detect_format(path, data) == "spz"
    _same(read_splats(path), read_splats(write_splats(tmp_path / "b.spz", s)))  # v3 of the same splats
    # degree 0: the empty SH plane is not stored
    head0, streams0 = _streams(spz.encode(_scene(10, 0), version=4))
    assert head0[6] == 5 and len(streams0) == 5
    assert len(read_splats(write_splats(tmp_path / "c.spz", _scene(10, 0), spz_version=4))) == 10
    with pytest.raises(ReconError, match="version 5"):
        spz.encode(s, version=5)


def _v4_file(n: int, degree: int, planes: list[bytes], *, flags: int = 0, extension: bytes = b"") -> bytes:
    stored = [p for p in planes if p]
    packed = [zstandard.ZstdCompressor().compress(p) for p in stored]
    toc_at = 32 + len(extension)
    head = struct.pack("<4sIIBBBBI12x", b"NGSP", 4, n, degree, 12, flags, len(stored), toc_at)
    toc = b"".join(struct.pack("<QQ", len(c), len(p)) for c, p in zip(packed, stored))
    return head + extension + toc + b"".join(packed)


def test_degree_4_and_extension_records(tmp_path) -> None:
    """A degree-4 file (24 SH coefficients) reads as degree 3 with the first 15; extension records
    between header and table (flag 0x2) are skipped."""
    s = _scene(50, 3)
    planes = spz.planes(s)
    sh3 = np.frombuffer(planes[5], np.uint8).reshape(50, 15, 3)
    band4 = np.full((50, 9, 3), 77, np.uint8)
    planes4 = planes[:5] + [np.concatenate([sh3, band4], axis=1).tobytes()]
    path = tmp_path / "d4.spz"
    path.write_bytes(_v4_file(50, 4, planes4, flags=0x2, extension=struct.pack("<II", 0xADBE0001, 8) + bytes(8)))
    back = read_splats(path)
    assert back.sh_degree == 3
    _same(back, spz.decode(path, spz.encode(s, version=4)))
    path.write_bytes(_v4_file(50, 4, planes4, extension=bytes(16)))  # offset table moved without flag
    with pytest.raises(ReconError, match="table of contents"):
        read_splats(path)


def test_v4_size_checks(tmp_path) -> None:
    s = _scene(40, 1)
    good = spz.encode(s, version=4)
    path = tmp_path / "x.spz"
    bad_count = bytearray(good)
    struct.pack_into("<I", bad_count, 8, 41)
    bad_toc = bytearray(good)
    struct.pack_into("<Q", bad_toc, 32 + 8, 10 ** 12)  # positions' uncompressed size
    huge = bytearray(good)
    struct.pack_into("<I", huge, 8, 2 ** 31)  # 2^31 splats from a ~1 KB file
    for data, what in ((bytes(bad_count), "need"), (bytes(bad_toc), "need"), (bytes(huge), "need"),
                       (good + b"\0", "after its last stream"), (good[:-1], "truncated|corrupt")):
        path.write_bytes(data)
        with pytest.raises(ReconError, match=what) as err:
            read_splats(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


@needs_tool
def test_v4_planes_equal_niantic_writer(tmp_path) -> None:
    """splat-transform 2.7 writes v4 with Niantic's library: same header fields, and each zstd
    stream decompresses to our plane byte for byte (only the zstd bytes themselves may differ)."""
    s = _scene(300, 3)
    src = write_splats(tmp_path / "in.ply", s)
    out = tmp_path / "theirs.spz"
    proc = subprocess.run([str(TOOL), "-q", "-w", str(src), str(out), "--spz-version", "4"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    head, streams = _streams(out.read_bytes())
    assert head == (b"NGSP", 4, 300, 3, 12, 0, 6, 32)
    assert streams == spz.planes(s)
    _same(read_splats(out), spz.decode(out, spz.encode(s, version=4)))


@needs_tool
def test_splat_transform_reads_our_v4(tmp_path) -> None:
    s = surface_splats(500, sh_degree=2)
    path = write_splats(tmp_path / "ours.spz", s, spz_version=4)
    proc = subprocess.run([str(TOOL), "-q", "-w", str(path), str(tmp_path / "out.csv")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    with open(tmp_path / "out.csv") as f:
        names = f.readline().strip().split(",")
    table = np.loadtxt(tmp_path / "out.csv", delimiter=",", skiprows=1, ndmin=2)
    col = {name: table[:, i] for i, name in enumerate(names)}
    ours = read_splats(path)
    # same order (no reordering on either side): their decode equals ours value for value
    np.testing.assert_allclose(np.stack([col["x"], col["y"], col["z"]], 1), ours.means, atol=1e-6)
    np.testing.assert_allclose(np.stack([col[f"scale_{i}"] for i in range(3)], 1), ours.log_scales, atol=1e-6)
    np.testing.assert_allclose(np.stack([col[f"f_dc_{i}"] for i in range(3)], 1), ours.sh0, atol=1e-5)
    rest = np.stack([col[f"f_rest_{i}"] for i in range(24)], 1).reshape(-1, 3, 8).transpose(0, 2, 1)
    np.testing.assert_allclose(rest, ours.shN, atol=1e-6)
    np.testing.assert_allclose(1 / (1 + np.exp(-col["opacity"])), ours.opacities, atol=1e-5)
    q = np.stack([col[f"rot_{i}"] for i in range(4)], 1)
    dots = np.abs((q / np.linalg.norm(q, axis=1, keepdims=True)
                   * ours.quats / np.linalg.norm(ours.quats, axis=1, keepdims=True)).sum(1))
    assert dots.min() > 1 - 1e-6
    assert np.abs(ours.means - s.means).max() <= 0.5 / 4096 + 1e-6
