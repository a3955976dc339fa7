"""Independent verification: PlayCanvas splat-transform 2.7 (npm, installed by scripts/system_deps.sh
into tools/node_modules) reads our compressed .ply, .spz and .splat and writes .csv; its floats must
match the splats we encoded within the formats' quantization steps. It also writes files of its own
that our readers must take, and its compressed .ply body must equal ours byte for byte."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pruning.formats import encode_splats, read_splats, write_splats
from pruning.formats._testing import tiny_splats
from reconstruct.splats import SH_C0, Splats

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "node_modules" / ".bin" / "splat-transform"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not TOOL.exists(),
    reason="node or tools/node_modules/.bin/splat-transform absent (run scripts/system_deps.sh)",
)


def _convert(src: Path, dst: Path, *extra: str) -> None:
    proc = subprocess.run([str(TOOL), "-q", "-w", *extra, str(src), str(dst)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and dst.exists(), proc.stderr + proc.stdout


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    with open(path) as f:
        names = f.readline().strip().split(",")
    table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2, dtype=np.float64)
    return {name: table[:, i] for i, name in enumerate(names)}


def _scene(n: int, degree: int) -> Splats:
    """The tiny scene moved off its 1/1024 grid so fixed-point formats really round."""
    s = tiny_splats(n, sh_degree=degree)
    return Splats(s.means + np.float32(1 / 3), s.quats, s.log_scales, s.opacity_logits, s.sh0, s.shN)


def _match(csv: dict[str, np.ndarray], s: Splats) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Nearest neighbour of each of our splats among splat-transform's rows; returns the distance
    [N] and the matched columns."""
    from scipy.spatial import cKDTree

    theirs = np.stack([csv["x"], csv["y"], csv["z"]], axis=1)
    assert len(theirs) == len(s)
    dist, idx = cKDTree(theirs).query(s.means.astype(np.float64))
    assert len(np.unique(idx)) == len(s), "nearest neighbours are not one-to-one"
    return dist, {k: v[idx] for k, v in csv.items()}


def _angle_deg(q_ours: np.ndarray, m: dict[str, np.ndarray]) -> np.ndarray:
    theirs = np.stack([m["rot_0"], m["rot_1"], m["rot_2"], m["rot_3"]], axis=1)
    a = q_ours / np.linalg.norm(q_ours, axis=1, keepdims=True)
    b = theirs / np.linalg.norm(theirs, axis=1, keepdims=True)
    return np.degrees(2 * np.arccos(np.clip(np.abs((a * b).sum(1)), 0, 1)))


def _rgb(m: dict[str, np.ndarray]) -> np.ndarray:
    return np.stack([m[f"f_dc_{c}"] for c in range(3)], axis=1) * SH_C0 + 0.5


def _opacity(m: dict[str, np.ndarray]) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-m["opacity"]))


def _shN(m: dict[str, np.ndarray], k1: int) -> np.ndarray:
    rest = np.stack([m[f"f_rest_{i}"] for i in range(3 * k1)], axis=1)
    return rest.reshape(-1, 3, k1).transpose(0, 2, 1)


def test_compressed_ply_read_by_splat_transform(tmp_path) -> None:
    s = _scene(600, 3)
    path = write_splats(tmp_path / "ours.compressed.ply", s, format="compressed-ply")
    _convert(path, tmp_path / "out.csv")
    dist, m = _match(_read_csv(tmp_path / "out.csv"), s)
    # position step: chunk extent / 2047 (x, z) and / 1023 (y); chunks here span at most the scene box
    extent = s.means.max(0) - s.means.min(0)
    err = np.abs(np.stack([m["x"], m["y"], m["z"]], 1) - s.means)
    assert (err <= extent * 0.003).all(), (err / extent).max(0)
    assert (err <= extent / np.array([2047, 1023, 2047]) * 0.5 + 1e-5).all()
    np.testing.assert_allclose(_rgb(m), np.clip(s.sh0 * SH_C0 + 0.5, 0, 1), atol=1 / 255)
    np.testing.assert_allclose(_opacity(m), s.opacities, atol=1 / 255)
    ls = np.stack([m[f"scale_{i}"] for i in range(3)], 1)
    np.testing.assert_allclose(ls, s.log_scales, atol=5.0 / 1023 / 2 + 1e-5)
    assert _angle_deg(s.quats, m).max() < 0.5
    np.testing.assert_allclose(_shN(m, 15), s.shN, atol=1 / 64 + 1e-6)


def test_spz_read_by_splat_transform(tmp_path) -> None:
    """splat-transform decodes .spz with Niantic's own library (WASM), converting RUB back to RDF:
    this checks our axis conversion of positions, rotations and every SH coefficient."""
    s = _scene(300, 3)
    path = write_splats(tmp_path / "ours.spz", s, format="spz")
    _convert(path, tmp_path / "out.csv")
    dist, m = _match(_read_csv(tmp_path / "out.csv"), s)
    assert dist.max() <= np.sqrt(3) * 0.5 / 4096 + 1e-6  # 12 fractional bits
    np.testing.assert_allclose(np.stack([m[f"f_dc_{c}"] for c in range(3)], 1), s.sh0,
                               atol=0.5 / (0.15 * 255) + 1e-5)  # one color byte = 1/(0.15*255) in f_dc
    np.testing.assert_allclose(_opacity(m), s.opacities, atol=1 / 255)
    ls = np.stack([m[f"scale_{i}"] for i in range(3)], 1)
    np.testing.assert_allclose(ls, s.log_scales, atol=1 / 32 + 1e-6)
    assert _angle_deg(s.quats, m).max() < 0.5
    sh = _shN(m, 15)
    np.testing.assert_allclose(sh[:, :3], s.shN[:, :3], atol=4.5 / 128)  # 5-bit band 1
    np.testing.assert_allclose(sh[:, 3:], s.shN[:, 3:], atol=8.5 / 128)  # 4-bit bands 2-3
    # and splat-transform's decode equals our own reader's, value for value
    ours = read_splats(path)
    np.testing.assert_allclose(_shN(m, 15), ours.shN, atol=1e-6)


def test_splat_read_by_splat_transform(tmp_path) -> None:
    s = _scene(300, 0)
    path = write_splats(tmp_path / "ours.splat", s, format="splat")
    _convert(path, tmp_path / "out.csv")
    dist, m = _match(_read_csv(tmp_path / "out.csv"), s)
    assert dist.max() == 0.0  # float32 positions
    np.testing.assert_allclose(_rgb(m), np.clip(s.sh0 * SH_C0 + 0.5, 0, 1), atol=1 / 255)
    np.testing.assert_allclose(_opacity(m), s.opacities, atol=1 / 255)
    ls = np.stack([m[f"scale_{i}"] for i in range(3)], 1)
    np.testing.assert_allclose(ls, s.log_scales, atol=1e-5)
    # 8 bits a quaternion component (and splat-transform decodes b/127.5-1 where the
    # antimatter15 viewer uses (b-128)/128): about a degree, not the 0.5 of the 10-bit formats
    assert _angle_deg(s.quats, m).max() < 2.0


def test_compressed_body_equals_splat_transform_writer(tmp_path) -> None:
    """Same input, same layout: splat-transform's own compressed .ply body is byte-identical to ours
    (chunk floats, Morton order, packed words, SH bytes); only the header comment differs."""
    s = _scene(700, 2)
    src = write_splats(tmp_path / "in.ply", s, format="ply")
    _convert(src, tmp_path / "theirs.compressed.ply")
    theirs = (tmp_path / "theirs.compressed.ply").read_bytes()
    ours = encode_splats(s, format="compressed-ply")
    cut = b"end_header\n"
    assert theirs[theirs.index(cut):] == ours[ours.index(cut):]


def test_our_readers_take_splat_transform_files(tmp_path) -> None:
    s = _scene(300, 3)
    src = write_splats(tmp_path / "in.ply", s, format="ply")
    _convert(src, tmp_path / "theirs.spz", "--spz-version", "3")
    _convert(src, tmp_path / "theirs.ply")  # their standard ply: no normals, different order
    spz = read_splats(tmp_path / "theirs.spz")
    ply = read_splats(tmp_path / "theirs.ply")
    from scipy.spatial import cKDTree

    for back, tol in ((spz, 0.5 / 4096 * np.sqrt(3) + 1e-6), (ply, 0.0)):
        dist, idx = cKDTree(back.means).query(s.means)
        assert dist.max() <= tol
        np.testing.assert_allclose(back.opacities[idx], s.opacities, atol=1 / 255)
    np.testing.assert_array_equal(ply.shN[cKDTree(ply.means).query(s.means)[1]], s.shN)


def test_spz_payload_equals_niantic_writer(tmp_path) -> None:
    """splat-transform writes .spz v3 with Niantic's library (WASM): after gunzip, its header and
    every attribute plane (positions, alphas, colors, scales, rotations, SH) equal ours byte for byte,
    so our rounding, RDF->RUB flips and smallest-three packing are the reference ones."""
    import gzip

    from pruning.formats.spz import payload

    s = _scene(300, 3)
    src = write_splats(tmp_path / "in.ply", s, format="ply")
    _convert(src, tmp_path / "theirs.spz", "--spz-version", "3")
    theirs = gzip.decompress((tmp_path / "theirs.spz").read_bytes())
    assert theirs == payload(s)
