"""Compressed .ply (PlayCanvas layout): golden bytes, hand-decoded packing, Morton order and chunking,
round trip within the quantization steps, malformed-file rejection."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest

from pruning.formats import encode_splats, read_splats, write_splats
from pruning.formats._testing import tiny_splats
from pruning.formats.compressed_ply import morton_codes, morton_order, pack_rotation, unpack_rotation
from reconstruct.splats import SH_C0, Splats
from scenes.errors import ReconError

GOLDEN_COMPRESSED_SHA256 = "b3f0ce1ce1d081635d530336f2ce440a686d80f69d406cd68f802caeb4537559"


def _body(data: bytes) -> tuple[list[str], bytes]:
    end = data.index(b"end_header\n") + len(b"end_header\n")
    return data[:end].decode().split("\n"), data[end:]


def _three() -> Splats:
    """Three splats whose packed words can be computed by hand."""
    colors = np.array([[0.0, 1.0, 0.5], [1.0, 0.0, 0.5], [0.5, 0.5, 0.5]])
    return Splats(
        means=np.array([[0, 0, 0], [1, 2, 4], [0.5, 1, 1]], np.float32),
        quats=np.array([[1, 0, 0, 0], [0, 0, -2, 0], [3, 0, 0, 0]], np.float32),
        log_scales=np.array([[-1, -1, -1], [-3, -3, -3], [-2, -1.5, -3]], np.float32),
        opacity_logits=np.array([0.0, 20.0, -20.0], np.float32),
        sh0=((colors - 0.5) / SH_C0).astype(np.float32),
        shN=np.tile(np.array([0.0, 1.0, -4.0], np.float32)[None, :, None], (3, 1, 3)),
    )


def test_compressed_golden_bytes() -> None:
    data = encode_splats(tiny_splats(300, sh_degree=2), format="compressed-ply")
    assert hashlib.sha256(data).hexdigest() == GOLDEN_COMPRESSED_SHA256
    header, body = _body(data)
    assert "element chunk 2" in header and "element vertex 300" in header and "element sh 300" in header
    assert len(body) == 2 * 18 * 4 + 300 * 16 + 300 * 24


def test_compressed_hand_packed_words() -> None:
    header, body = _body(encode_splats(_three(), format="compressed-ply"))
    assert header.index("element chunk 1") < header.index("element vertex 3") < header.index("element sh 3")
    chunk = struct.unpack("<18f", body[:72])
    words = np.frombuffer(body[72:72 + 48], "<u4").reshape(3, 4)
    sh = np.frombuffer(body[72 + 48:], np.uint8).reshape(3, 9)
    # Morton order: A (0,0,0) has code 0, C (.5,1,1) sits mid-box, B (1,2,4) is the far corner.
    assert chunk[:6] == (0.0, 0.0, 0.0, 1.0, 2.0, 4.0)
    assert chunk[6:12] == (-3.0, -3.0, -3.0, -1.0, -1.0, -1.0)
    np.testing.assert_allclose(chunk[12:18], (0.0, 0.0, 0.5, 1.0, 1.0, 0.5), atol=1e-7)
    pos_a, pos_c, pos_b = words[:, 0]
    assert pos_a == 0
    assert pos_b == (2047 << 21) | (1023 << 11) | 2047
    assert pos_c == (1024 << 21) | (512 << 11) | 512  # x .5 -> 1024, y .5 -> 512, z .25 -> 512
    # rotation: identity -> index 0, the other three at 0 -> unorm(0.5) = 512;
    # (0,0,-2,0) -> largest index 2, negated positive.
    assert words[0, 1] == (0 << 30) | (512 << 20) | (512 << 10) | 512
    assert words[2, 1] == (2 << 30) | (512 << 20) | (512 << 10) | 512
    # scale of C: x -2 in [-3,-1] -> 1024, y -1.5 -> 0.75 * 1023 + .5 -> 767, z -3 -> 0
    assert words[1, 2] == (1024 << 21) | (767 << 11) | 0
    # color: A is (0,1,.5) in a chunk whose blue range is empty -> blue 0; alpha sigmoid(0) -> 128
    assert words[0, 3] == (0 << 24) | (255 << 16) | (0 << 8) | 128
    assert words[2, 3] & 0xFF == 255 and words[1, 3] & 0xFF == 0  # logit +20 / -20
    # SH: channel-major f_rest; per channel values 0, 1, -4 -> 128, 160, 0
    assert sh[0].tolist() == [128, 160, 0] * 3


def test_morton_order_and_chunking() -> None:
    s = tiny_splats(700, sh_degree=0)
    order = morton_order(s.means)
    assert sorted(order.tolist()) == list(range(700))
    codes = morton_codes(s.means)[order]
    assert (np.diff(codes.astype(np.int64)) >= 0).all()
    back = read_splats_bytes(encode_splats(s, format="compressed-ply"))
    assert len(back) == 700
    # Every splat of chunk i decodes inside chunk i's box, and chunks follow Morton order.
    for i in range(3):
        rows = slice(256 * i, min(256 * (i + 1), 700))
        src = s.means[order[rows]]
        np.testing.assert_allclose(back.means[rows], src, atol=4.0 / 1023 * 0.5 + 1e-5)


def test_morton_refines_crowded_cells() -> None:
    """More than 256 splats in one Morton cell are re-sorted inside their own box."""
    rng = np.random.default_rng(3)
    crowd = rng.normal(scale=1e-4, size=(400, 3))
    far = np.array([[100.0, 100.0, 100.0]])
    means = np.concatenate([crowd, far]).astype(np.float32)
    order = morton_order(means)
    inner = order[:400]
    sub_codes = morton_codes(means[np.sort(inner)])
    assert sub_codes is not None
    assert (np.diff(morton_codes(means[inner]).astype(np.int64)) >= 0).all()
    assert order[-1] == 400


def read_splats_bytes(data: bytes, name: str = "x.compressed.ply"):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / name
        p.write_bytes(data)
        return read_splats(p)


def test_rotation_pack_round_trip_within_half_degree() -> None:
    q = tiny_splats(2000, sh_degree=0).quats.astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    back = unpack_rotation(pack_rotation(q))
    angle = np.degrees(2 * np.arccos(np.clip(np.abs((q * back).sum(1)), 0, 1)))
    assert angle.max() < 0.5, angle.max()


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_compressed_round_trip_within_steps(tmp_path, degree) -> None:
    s = tiny_splats(600, sh_degree=degree)
    path = write_splats(tmp_path / "s.compressed.ply", s, format="compressed-ply")
    back = read_splats(path)
    ref = s.subset(morton_order(s.means))
    assert back.sh_degree == degree
    np.testing.assert_allclose(back.means, ref.means, atol=4.0 / 1023 / 2 + 1e-5)
    np.testing.assert_allclose(back.log_scales, ref.log_scales, atol=5.0 / 1023 / 2 + 1e-5)
    np.testing.assert_allclose(back.rgb, ref.rgb, atol=0.5 / 255 + 1e-6)
    np.testing.assert_allclose(back.opacities, ref.opacities, atol=0.5 / 255 + 1e-6)
    if degree:
        np.testing.assert_allclose(back.shN, ref.shN, atol=1 / 64 + 1e-6)
    # Re-encoding decoded splats reproduces the same file (quantization is idempotent enough).
    again = encode_splats(back, format="compressed-ply")
    assert len(again) == path.stat().st_size


def test_reads_12_float_chunk_variant(tmp_path) -> None:
    """Older files keep absolute 8-bit colors and no per-chunk color range."""
    s = _three()
    header, body = _body(encode_splats(s.with_sh_degree(0), format="compressed-ply"))
    chunk = struct.unpack("<18f", body[:72])
    words = np.frombuffer(body[72:], "<u4").reshape(3, 4).copy()
    rgb = np.array([[0, 1, 0.5], [0.5, 0.5, 0.5], [1, 0, 0.5]])  # Morton order A, C, B
    words[:, 3] = (np.round(rgb * 255).astype(np.uint32) << np.array([24, 16, 8], np.uint32)).sum(1) \
        | (words[:, 3] & 0xFF)
    text = "\n".join(line for line in header if not any(c in line for c in ("min_r", "min_g", "min_b",
                                                                             "max_r", "max_g", "max_b")))
    data = text.encode() + struct.pack("<12f", *chunk[:12]) + words.astype("<u4").tobytes()
    back = read_splats_bytes(data)
    np.testing.assert_allclose(back.rgb, rgb, atol=0.5 / 255 + 1e-6)


@pytest.mark.parametrize("case,expect", [
    ("truncated", "truncated"),
    ("absurd", "chunks for"),
    ("absurd_both", "truncated"),
    ("chunk_count", "chunks for"),
    ("unknown_vertex_property", "vertex element must be"),
    ("sh_rows", "sh rows"),
    ("sh_count", "coefficients"),
    ("extra_element", "elements are"),
])
def test_compressed_rejects_malformed(tmp_path, case, expect) -> None:
    good = encode_splats(tiny_splats(300, sh_degree=1), format="compressed-ply")
    data = {
        "truncated": good[:-10],
        "absurd": good.replace(b"element vertex 300", b"element vertex 4000000000"),
        "absurd_both": good.replace(b"element vertex 300", b"element vertex 2560000000")
                           .replace(b"element chunk 2", b"element chunk 10000000")
                           .replace(b"element sh 300", b"element sh 2560000000"),
        "chunk_count": good.replace(b"element chunk 2", b"element chunk 3"),
        "unknown_vertex_property": good.replace(b"property uint packed_scale", b"property uint packed_sizes"),
        "sh_rows": good.replace(b"element sh 300", b"element sh 299"),
        "sh_count": good.replace(b"property uchar f_rest_8\n", b""),
        "extra_element": good.replace(b"end_header", b"element face 0\nend_header"),
    }[case]
    path = tmp_path / "bad.compressed.ply"
    path.write_bytes(data)
    with pytest.raises(ReconError) as err:
        read_splats(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and expect in msg, msg
