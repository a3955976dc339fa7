"""Standard 3DGS .ply: golden bytes, round trip, other tools' variants, malformed-file rejection."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest

from pruning.formats import encode_splats, read_splats, write_splats
from pruning.formats._testing import tiny_splats
from scenes.errors import ReconError

GOLDEN_PLY_SHA256 = "618c84587707b6bdc60ea40207d04d40022d2ea9dcc9088fa83221f385f7c5a8"


def _assert_same(a, b) -> None:
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh0", "shN"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_ply_golden_bytes_and_hand_decoded_fields() -> None:
    s = tiny_splats(40, sh_degree=1)
    data = encode_splats(s, format="ply")
    assert hashlib.sha256(data).hexdigest() == GOLDEN_PLY_SHA256
    header_end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:header_end].decode().split("\n")
    assert header[:3] == ["ply", "format binary_little_endian 1.0", "element vertex 40"]
    props = [line.split()[2] for line in header if line.startswith("property float")]
    assert props == (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
                     + [f"f_rest_{i}" for i in range(9)]
                     + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    assert len(data) == header_end + 40 * 26 * 4
    # Row 7 decoded by hand: f_rest is channel-major, so f_rest_4 is green's band-1 coefficient 1.
    row = struct.unpack("<26f", data[header_end + 7 * 104: header_end + 8 * 104])
    assert row[0:3] == tuple(s.means[7].tolist())
    assert row[3:6] == (0.0, 0.0, 0.0)
    assert row[9 + 4] == s.shN[7, 1, 1]
    assert row[9 + 8] == s.shN[7, 2, 2]
    assert row[18] == s.opacity_logits[7]
    assert row[22:26] == tuple(s.quats[7].tolist())


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_ply_round_trip_is_lossless(tmp_path, degree) -> None:
    s = tiny_splats(64, sh_degree=degree)
    path = write_splats(tmp_path / "s.ply", s, format="ply")
    back = read_splats(path)
    assert back.sh_degree == degree
    _assert_same(s, back)


def test_ply_sh_degree_option_drops_bands(tmp_path) -> None:
    s = tiny_splats(10, sh_degree=3)
    back = read_splats(write_splats(tmp_path / "s.ply", s, format="ply", sh_degree=1))
    assert back.sh_degree == 1
    np.testing.assert_array_equal(back.shN, s.shN[:, :3])


def test_ply_matches_plyfile_reader(tmp_path) -> None:
    plyfile = pytest.importorskip("plyfile")
    s = tiny_splats(20, sh_degree=2)
    path = write_splats(tmp_path / "s.ply", s, format="ply")
    v = plyfile.PlyData.read(str(path))["vertex"]
    np.testing.assert_array_equal(v["f_rest_8"], s.shN[:, 0, 1])  # K-1 = 8: green starts at 8
    np.testing.assert_array_equal(v["rot_3"], s.quats[:, 3])


def test_ply_reads_ascii_and_reordered_double_properties(tmp_path) -> None:
    s = tiny_splats(5, sh_degree=0)
    order = ["rot_0", "rot_1", "rot_2", "rot_3", "scale_0", "scale_1", "scale_2", "opacity",
             "f_dc_0", "f_dc_1", "f_dc_2", "x", "y", "z", "red", "green", "blue"]
    values = {
        "x": s.means[:, 0], "y": s.means[:, 1], "z": s.means[:, 2],
        "f_dc_0": s.sh0[:, 0], "f_dc_1": s.sh0[:, 1], "f_dc_2": s.sh0[:, 2],
        "opacity": s.opacity_logits, "scale_0": s.log_scales[:, 0], "scale_1": s.log_scales[:, 1],
        "scale_2": s.log_scales[:, 2], "rot_0": s.quats[:, 0], "rot_1": s.quats[:, 1],
        "rot_2": s.quats[:, 2], "rot_3": s.quats[:, 3],
        "red": np.full(5, 10), "green": np.full(5, 20), "blue": np.full(5, 30),
    }
    lines = ["ply", "format ascii 1.0", "comment from another tool", "element vertex 5"]
    lines += [f"property {'uchar' if p in ('red', 'green', 'blue') else 'double'} {p}" for p in order]
    lines.append("end_header")
    for i in range(5):
        lines.append(" ".join(repr(float(values[p][i])) if p not in ("red", "green", "blue")
                              else str(int(values[p][i])) for p in order))
    path = tmp_path / "ascii.ply"
    path.write_text("\n".join(lines) + "\n")
    _assert_same(s, read_splats(path))


def _header(n: int, props: list[str], element: str = "vertex") -> bytes:
    text = ["ply", "format binary_little_endian 1.0", f"element {element} {n}"]
    text += [f"property float {p}" for p in props] + ["end_header"]
    return ("\n".join(text) + "\n").encode()


_MIN_PROPS = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
              "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


@pytest.mark.parametrize("case,expect", [
    ("truncated", "truncated"),
    ("extra_bytes", "do not match the file size"),
    ("absurd_count", "truncated"),
    ("unknown_property", "unknown vertex properties"),
    ("missing_property", "missing properties"),
    ("bad_rest_count", "f_rest"),
    ("no_end_header", "end_header"),
    ("big_endian", "not supported"),
    ("nan", "non-finite"),
    ("list_property", "list property"),
    ("extra_element", "unexpected PLY element"),
])
def test_ply_reader_rejects_malformed(tmp_path, case, expect) -> None:
    good = encode_splats(tiny_splats(8, sh_degree=1), format="ply")
    body = np.zeros((3, 14), np.float32).tobytes()
    data = {
        "truncated": good[:-5],
        "extra_bytes": good + b"\x01\x02\x03\x04",
        "absurd_count": good.replace(b"element vertex 8", b"element vertex 999999999999"),
        "unknown_property": _header(3, _MIN_PROPS + ["mystery"]) + np.zeros((3, 15), np.float32).tobytes(),
        "missing_property": _header(3, _MIN_PROPS[:-1]) + np.zeros((3, 13), np.float32).tobytes(),
        "bad_rest_count": _header(3, _MIN_PROPS + ["f_rest_0", "f_rest_1"]) + np.zeros((3, 16), np.float32).tobytes(),
        "no_end_header": good[:40],
        "big_endian": good.replace(b"binary_little_endian", b"binary_big_endian"),
        "nan": _header(3, _MIN_PROPS) + np.full((3, 14), np.nan, np.float32).tobytes(),
        "list_property": good.replace(b"property float nx", b"property list uchar int nx"),
        "extra_element": _header(3, _MIN_PROPS) + body + b"element face 0\n",
    }[case]
    if case == "extra_element":
        data = _header(3, _MIN_PROPS).replace(b"end_header", b"element face 0\nend_header") + body
    path = tmp_path / "bad.ply"
    path.write_bytes(data)
    with pytest.raises(ReconError) as err:
        read_splats(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and expect in message, message


def test_ply_write_is_atomic(tmp_path, monkeypatch) -> None:
    path = tmp_path / "s.ply"
    write_splats(path, tiny_splats(4, sh_degree=0), format="ply")
    before = path.read_bytes()

    import scenes.fileio as fileio

    def interrupted_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(fileio.os, "replace", interrupted_replace)
    with pytest.raises(ReconError, match="cannot write"):
        write_splats(path, tiny_splats(9, sh_degree=0), format="ply")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.ply"]
