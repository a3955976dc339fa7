""".spz v3 and .splat: golden bytes, hand-decoded fields, axis conversion, round trips, rejection."""

from __future__ import annotations

import gzip
import hashlib
import struct

import numpy as np
import pytest

from pruning.formats import encode_splats, read_splats, write_splats
from pruning.formats._testing import tiny_splats
from pruning.formats.spz import SH_FLIP_RDF_RUB, payload
from pruning.formats.splat import importance_order
from reconstruct.splats import SH_C0, Splats
from scenes.errors import ReconError

GOLDEN_SPZ_PAYLOAD_SHA256 = "3e04f80442dddd81b6d11a1bbaede493969a060a2ed38ed6146c6413e7027792"
GOLDEN_SPLAT_SHA256 = "6d8d864f126c341a7fac3039d8740419606622a7ace182bcf62711faf122a39e"


def _one() -> Splats:
    return Splats(
        means=np.array([[1.5, 1.5, -0.25]], np.float32),
        quats=np.array([[2.0, 0.0, 0.0, 0.0]], np.float32),
        log_scales=np.array([[-2.0, -10.0, 5.9375]], np.float32),
        opacity_logits=np.array([0.0], np.float32),
        sh0=np.array([[0.0, 1.0, -1.0]], np.float32),
        shN=np.array([[[0.25, 0.25, 0.25], [0, 0, 0], [0.25, -0.5, 1.0]]], np.float32),
    )


def _rel_angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.degrees(2 * np.arccos(np.clip(np.abs((a * b).sum(1)), 0, 1)))


# ----------------------------------------------------------------------------- spz

def test_spz_golden_payload_and_gzip_container() -> None:
    s = tiny_splats(200, sh_degree=3)
    data = encode_splats(s, format="spz")
    assert data[:2] == b"\x1f\x8b"
    raw = gzip.decompress(data)
    assert raw == payload(s)
    # The gzip bytes depend on the zlib build; the payload is what the golden pins.
    assert hashlib.sha256(raw).hexdigest() == GOLDEN_SPZ_PAYLOAD_SHA256
    assert len(raw) == 16 + 200 * (9 + 1 + 3 + 3 + 4 + 45)


def test_spz_hand_decoded_fields() -> None:
    raw = payload(_one())
    magic, version, n, degree, frac, flags, reserved = struct.unpack("<IIIBBBB", raw[:16])
    assert (magic, version, n, degree, frac, flags, reserved) == (0x5053474E, 3, 1, 1, 12, 0, 0)
    body = raw[16:]
    # positions RUB = (1.5, -1.5, 0.25) * 4096 = 6144, -6144, 1024 as 24-bit little endian
    assert body[0:9] == bytes([0x00, 0x18, 0x00, 0x00, 0xE8, 0xFF, 0x00, 0x04, 0x00])
    assert body[9] == 128  # alpha: sigmoid(0) * 255 = 127.5 -> 128 (half away from zero)
    assert list(body[10:13]) == [128, round(0.15 * 255 + 127.5), round(-0.15 * 255 + 127.5)]
    assert list(body[13:16]) == [128, 0, 255]  # (-2+10)*16, (-10+10)*16, (5.9375+10)*16 = 255
    # identity rotation: xyzw (0,0,0,1) -> index 3 in bits 31-30, zeros elsewhere
    assert body[16:20] == bytes([0, 0, 0, 0xC0])
    sh = list(body[20:29])
    # coefficient 0 flips sign in RUB: -0.25 * 128 + 128 = 96 (bucket 8 keeps it);
    # coefficient 1 flips 0 -> 128; coefficient 2 keeps sign: .25 -> 160, -.5 -> 64, 1.0 -> 256 -> 255
    assert sh == [96, 96, 96, 128, 128, 128, 160, 64, 255]


def test_spz_axis_flip_matches_a_180_degree_turn_about_x() -> None:
    """The SH sign table equals evaluating the basis at (x, -y, -z), computed numerically."""
    rng = np.random.default_rng(0)
    d = rng.normal(size=(50, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)

    def basis(v: np.ndarray) -> np.ndarray:  # 3DGS real SH bands 1-3, constants dropped
        x, y, z = v.T
        return np.stack([y, z, x, x * y, y * z, 3 * z * z - 1, x * z, x * x - y * y,
                         y * (3 * x * x - y * y), x * y * z, y * (5 * z * z - 1), z * (5 * z * z - 3),
                         x * (5 * z * z - 1), z * (x * x - y * y), x * (x * x - 3 * y * y)], axis=1)

    ratio = basis(d * np.array([1, -1, -1])) / basis(d)
    np.testing.assert_allclose(ratio, np.broadcast_to(SH_FLIP_RDF_RUB, ratio.shape), atol=1e-9)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_spz_round_trip_within_steps(tmp_path, degree) -> None:
    s = tiny_splats(300, sh_degree=degree)
    s = Splats(s.means + np.float32(1 / 3), s.quats, s.log_scales, s.opacity_logits, s.sh0, s.shN)
    back = read_splats(write_splats(tmp_path / "s.spz", s, format="spz"))
    assert back.sh_degree == degree
    np.testing.assert_allclose(back.means, s.means, atol=0.5 / 4096 + 1e-6)
    np.testing.assert_allclose(back.log_scales, s.log_scales, atol=1 / 32 + 1e-6)
    np.testing.assert_allclose(back.sh0, s.sh0, atol=0.5 / (0.15 * 255) + 1e-5)
    np.testing.assert_allclose(back.opacities, s.opacities, atol=0.5 / 255 + 1e-6)
    assert _rel_angle_deg(back.quats, s.quats).max() < 0.5
    if degree:
        np.testing.assert_allclose(back.shN[:, :3], s.shN[:, :3], atol=4.5 / 128)
        np.testing.assert_allclose(back.shN[:, 3:], s.shN[:, 3:], atol=8.5 / 128)


def test_spz_rejects_out_of_range_positions() -> None:
    s = tiny_splats(3, sh_degree=0)
    far = Splats(s.means * 2000, s.quats, s.log_scales, s.opacity_logits, s.sh0, s.shN)
    with pytest.raises(ReconError, match="24-bit"):
        encode_splats(far, format="spz")


def _spz_with(header_fields: dict, body: bytes | None = None, n: int = 4) -> bytes:
    raw = payload(tiny_splats(n, sh_degree=1))
    fields = dict(zip(("magic", "version", "n", "degree", "frac", "flags", "reserved"),
                      struct.unpack("<IIIBBBB", raw[:16])))
    fields.update(header_fields)
    head = struct.pack("<IIIBBBB", *fields.values())
    return gzip.compress(head + (raw[16:] if body is None else body), mtime=0)


@pytest.mark.parametrize("case,expect", [
    ("truncated_gzip", "truncated"),
    ("short_payload", "truncated"),
    ("long_payload", "more data"),
    ("absurd_count", "more than"),
    ("bad_magic", "magic"),
    ("version4", "version 4"),
    ("degree", "SH degree"),
    ("flags", "extensions"),
    ("not_gzip", "corrupt gzip"),
])
def test_spz_rejects_malformed(tmp_path, case, expect) -> None:
    good = encode_splats(tiny_splats(50, sh_degree=1), format="spz")
    data = {
        "truncated_gzip": good[: len(good) // 2],
        "short_payload": _spz_with({"n": 5}),
        "long_payload": _spz_with({"n": 3}),
        "absurd_count": _spz_with({"n": 4_000_000_000}),
        "bad_magic": _spz_with({"magic": 0x12345678}),
        "version4": _spz_with({"version": 4}),
        "degree": _spz_with({"degree": 7}),
        "flags": _spz_with({"flags": 2}),
        "not_gzip": b"\x1f\x8b" + b"\x00" * 40,
    }[case]
    path = tmp_path / "bad.spz"
    path.write_bytes(data)
    with pytest.raises(ReconError) as err:
        read_splats(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and expect in msg, msg


# ----------------------------------------------------------------------------- splat

def test_splat_golden_bytes_and_hand_decoded_row() -> None:
    s = tiny_splats(100, sh_degree=0)
    data = encode_splats(s, format="splat")
    assert len(data) == 100 * 32
    assert hashlib.sha256(data).hexdigest() == GOLDEN_SPLAT_SHA256
    first = importance_order(s)[0]
    x, y, z, sx, sy, sz = struct.unpack("<6f", data[:24])
    assert (x, y, z) == tuple(s.means[first].tolist())
    np.testing.assert_allclose((sx, sy, sz), np.exp(s.log_scales[first].astype(np.float64)), rtol=1e-6)

    one = _one()
    row = encode_splats(one, format="splat")
    assert row[24:28] == bytes([128, round((SH_C0 + 0.5) * 255), round((0.5 - SH_C0) * 255), 128])
    assert row[28:32] == bytes([255, 128, 128, 128])  # identity: w*128+128 = 256 -> 255


def test_splat_order_is_descending_volume_times_opacity() -> None:
    s = tiny_splats(64, sh_degree=0)
    back = read_splats_bytes(encode_splats(s, format="splat"))
    # Positions are stored exactly: find each row's source splat and check the sort key there.
    source = {tuple(m): i for i, m in enumerate(s.means.tolist())}
    rows = [source[tuple(m)] for m in back.means.tolist()]
    assert sorted(rows) == list(range(64))
    key = np.exp(s.log_scales.astype(np.float64).sum(1)) * s.opacities
    assert (np.diff(key[rows]) <= 0).all()


def read_splats_bytes(data: bytes, name: str = "x.splat"):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / name
        p.write_bytes(data)
        return read_splats(p)


def test_splat_round_trip_within_steps(tmp_path) -> None:
    s = tiny_splats(200, sh_degree=2)
    back = read_splats(write_splats(tmp_path / "s.splat", s, format="splat"))
    ref = s.subset(importance_order(s))
    assert back.sh_degree == 0
    np.testing.assert_array_equal(back.means, ref.means)
    np.testing.assert_allclose(back.log_scales, ref.log_scales, atol=1e-6)
    np.testing.assert_allclose(back.rgb, ref.rgb, atol=0.5 / 255 + 1e-6)
    np.testing.assert_allclose(back.opacities, ref.opacities, atol=0.5 / 255 + 1e-6)
    assert _rel_angle_deg(back.quats, ref.quats).max() < 1.0  # 8 bits a component


@pytest.mark.parametrize("case,expect", [
    ("truncated", "multiple of 32"),
    ("empty", "empty"),
    ("nan", "non-finite"),
    ("zero_scale", "non-positive"),
])
def test_splat_rejects_malformed(tmp_path, case, expect) -> None:
    good = bytearray(encode_splats(tiny_splats(5, sh_degree=0), format="splat"))
    if case == "truncated":
        data = bytes(good[:-3])
    elif case == "empty":
        data = b""
    elif case == "nan":
        good[0:4] = struct.pack("<f", float("nan"))
        data = bytes(good)
    else:
        good[12:16] = struct.pack("<f", 0.0)
        data = bytes(good)
    path = tmp_path / "bad.splat"
    path.write_bytes(data)
    with pytest.raises(ReconError) as err:
        read_splats(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and expect in msg, msg


def test_unknown_extension_and_wrong_magic(tmp_path) -> None:
    p = tmp_path / "scene.obj"
    p.write_bytes(b"v 0 0 0\n")
    with pytest.raises(ReconError, match="unknown splat file type"):
        read_splats(p)
    q = tmp_path / "scene.ply"
    q.write_bytes(b"\x00" * 64)
    with pytest.raises(ReconError, match="wrong magic"):
        read_splats(q)
    with pytest.raises(ReconError, match="no such file"):
        read_splats(tmp_path / "missing.ply")
