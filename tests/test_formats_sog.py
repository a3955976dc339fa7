"""SOG v2 (.sog zip and meta.json folder): round trips within the quantization steps, exact
storage of few distinct values, determinism, layout sizes, and splat-transform 2.7 as an
independent reader and writer."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pruning.formats import detect_format, encode_splats, read_splats, write_splats
from pruning.formats import sog
from pruning.formats._scenes import surface_splats
from pruning.formats._testing import tiny_splats
from reconstruct.splats import SH_C0, Splats
from scenes.errors import ReconError

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "node_modules" / ".bin" / "splat-transform"
needs_tool = pytest.mark.skipif(shutil.which("node") is None or not TOOL.exists(),
                                reason="node or splat-transform absent (run scripts/system_deps.sh)")


def _angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.degrees(2 * np.arccos(np.clip(np.abs((a * b).sum(1)), 0, 1)))


def _match(ours: Splats, back: np.ndarray) -> np.ndarray:
    """Index into ``back`` [M, 3] of each of our splats' nearest center (one to one)."""
    from scipy.spatial import cKDTree

    _, idx = cKDTree(back).query(ours.means.astype(np.float64))
    assert len(np.unique(idx)) == len(ours), "nearest neighbours are not one-to-one"
    return idx


def _check_close(s: Splats, b: Splats, *, sh_atol: float | None, steps: float = 0.51) -> None:
    """b (decoded, matched row for row) against s within SOG's quantization: ``steps`` is the
    position / opacity error in quantization steps (half a step when rounding as we do, one
    when truncating as splat-transform's writer does)."""
    lt = np.sign(s.means) * np.log1p(np.abs(s.means.astype(np.float64)))
    step = (lt.max(0) - lt.min(0)) / 65535  # 16-bit steps in log space
    err = np.abs(b.means - s.means)
    assert (err <= (np.abs(s.means) + 1) * step * steps + 1e-6).all()
    assert _angle_deg(s.quats, b.quats).max() < 1.0  # 8 bits a component
    np.testing.assert_allclose(b.opacities, s.opacities, atol=steps / 255 + 1e-4)
    # 256-entry k-means codebooks over all 3N values: RMS error near range/1000 (uniform levels
    # would give range/886); k-means spends few levels on sparse tails, so the worst value may be
    # off by a few percent of the range
    for a, c in ((s.log_scales, b.log_scales), (s.sh0, b.sh0)):
        r = a.max() - a.min()
        assert np.abs(a - c).max() <= r / 25, np.abs(a - c).max() / r
        assert np.sqrt(((a - c) ** 2).mean()) <= r / 500, np.sqrt(((a - c) ** 2).mean()) / r
    assert b.sh_degree == s.sh_degree
    if sh_atol is not None:
        np.testing.assert_allclose(b.shN, s.shN, atol=sh_atol)


def test_round_trip_zip_and_folder(tmp_path) -> None:
    s = surface_splats(2000, sh_degree=3)
    path = write_splats(tmp_path / "a.sog", s)
    assert detect_format(path, path.read_bytes()) == "sog"
    back = read_splats(path)
    assert len(back) == len(s)
    idx = _match(s, back.means)
    b = back.subset(idx)
    _check_close(s, b, sh_atol=None)
    # the SH palette (1024 entries for 2000 splats) keeps the smooth field: RMS error far below its spread
    rms = np.sqrt(((b.shN - s.shN) ** 2).mean())
    assert rms < 0.2 * s.shN.std(), (rms, s.shN.std())

    folder = tmp_path / "unbundled"
    folder.mkdir()
    meta = write_splats(folder / "meta.json", s)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["meta.json", "means_l.webp", "means_u.webp", "quats.webp", "scales.webp", "sh0.webp",
         "shN_centroids.webp", "shN_labels.webp"])
    for target in (meta, folder):
        again = read_splats(target)
        for f in ("means", "quats", "log_scales", "opacity_logits", "sh0", "shN"):
            np.testing.assert_array_equal(getattr(again, f), getattr(back, f))
    # the zip holds exactly the folder's files, stored uncompressed, meta.json first
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist()[0] == "meta.json"
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        for name in zf.namelist():
            assert zf.read(name) == (folder / name).read_bytes()


def test_few_distinct_values_are_stored_exactly(tmp_path) -> None:
    """With at most 256 distinct values per codebook and 4 distinct SH vectors, nothing is lost to
    k-means: scales, colors and every SH coefficient come back as the same float32 (this pins the
    channel-major palette layout, coefficient positions and label bytes)."""
    n = 600
    rng = np.random.default_rng(3)
    base = tiny_splats(n, sh_degree=3)
    levels = np.linspace(-5, -1, 50).astype(np.float32)
    vectors = rng.uniform(-0.4, 0.4, (4, 15, 3)).astype(np.float32)
    s = Splats(base.means, base.quats, levels[rng.integers(0, 50, (n, 3))], base.opacity_logits,
               levels[rng.integers(0, 50, (n, 3))] + 4.0, vectors[rng.integers(0, 4, n)])
    back = read_splats(write_splats(tmp_path / "few.sog", s))
    b = back.subset(_match(s, back.means))
    np.testing.assert_array_equal(b.log_scales, s.log_scales)
    np.testing.assert_array_equal(b.sh0, s.sh0)
    np.testing.assert_array_equal(b.shN, s.shN)
    with zipfile.ZipFile(tmp_path / "few.sog") as zf:
        meta = json.loads(zf.read("meta.json"))
    assert meta["version"] == 2 and meta["count"] == n
    assert meta["shN"]["count"] == sog.palette_size(n) == 512 and meta["shN"]["bands"] == 3
    assert len(meta["scales"]["codebook"]) == len(meta["sh0"]["codebook"]) == 256


def test_texture_bytes_follow_the_layout() -> None:
    """Decode the textures by hand: 16-bit positions, smallest-three quats with 252 + index."""
    from PIL import Image

    s = tiny_splats(37, sh_degree=0)
    parts = sog.files(s)
    assert set(parts) == {"meta.json", "means_l.webp", "means_u.webp", "quats.webp", "scales.webp", "sh0.webp"}
    meta = json.loads(parts["meta.json"])
    w, h = sog.grid_size(37)
    assert (w, h) == (8, 8)

    def tex(name: str) -> np.ndarray:
        img = Image.open(io.BytesIO(parts[name]))
        assert img.size == (w, h)
        return np.asarray(img.convert("RGBA")).reshape(-1, 4)

    order = sog.texel_order(sog.quantize(s).decode_means(), "morton")  # the layout sorts the stored positions
    lo, hi = tex("means_l.webp"), tex("means_u.webp")
    q = lo[:37, :3].astype(np.int64) + 256 * hi[:37, :3].astype(np.int64)
    lt = np.sign(s.means[order]) * np.log1p(np.abs(s.means[order].astype(np.float64)))
    expect = np.round(65535 * (lt - meta["means"]["mins"]) / (np.array(meta["means"]["maxs"]) - meta["means"]["mins"]))
    np.testing.assert_array_equal(q, expect)
    quats = tex("quats.webp")[:37]
    wxyz = s.quats[order] / np.linalg.norm(s.quats[order], axis=1, keepdims=True)
    np.testing.assert_array_equal(quats[:, 3], 252 + np.argmax(np.abs(wxyz), axis=1))
    alpha = tex("sh0.webp")[:37, 3]
    np.testing.assert_array_equal(alpha, np.round(255 * s.opacities[order].astype(np.float64)))
    assert (tex("sh0.webp")[37:] == 0).all()  # padding texels


def test_bytes_are_deterministic_and_morton_beats_random() -> None:
    s = surface_splats(16384, sh_degree=0)
    a = encode_splats(s, format="sog")
    assert a == encode_splats(s, format="sog")
    sizes = {lay: len(sog.encode(s, layout=lay)) for lay in sog.LAYOUTS}
    assert sizes["morton"] < 0.85 * sizes["random"], sizes  # measured 0.76 here (0.84 at 4k splats)
    assert len(a) == sizes["morton"]


@needs_tool
def test_splat_transform_reads_our_sog(tmp_path) -> None:
    s = surface_splats(1500, sh_degree=2)
    path = write_splats(tmp_path / "ours.sog", s)
    proc = subprocess.run([str(TOOL), "-q", "-w", str(path), str(tmp_path / "out.csv")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    with open(tmp_path / "out.csv") as f:
        names = f.readline().strip().split(",")
    table = np.loadtxt(tmp_path / "out.csv", delimiter=",", skiprows=1, ndmin=2)
    col = {name: table[:, i] for i, name in enumerate(names)}
    assert len(table) == len(s) and sum(n.startswith("f_rest_") for n in names) == 24
    theirs = Splats(
        means=np.stack([col["x"], col["y"], col["z"]], 1).astype(np.float32),
        quats=np.stack([col[f"rot_{i}"] for i in range(4)], 1).astype(np.float32),
        log_scales=np.stack([col[f"scale_{i}"] for i in range(3)], 1).astype(np.float32),
        opacity_logits=col["opacity"].astype(np.float32),
        sh0=np.stack([col[f"f_dc_{i}"] for i in range(3)], 1).astype(np.float32),
        shN=np.stack([col[f"f_rest_{i}"] for i in range(24)], 1).reshape(-1, 3, 8).transpose(0, 2, 1)
        .astype(np.float32),
    )
    b = theirs.subset(_match(s, theirs.means))
    _check_close(s, b, sh_atol=None)
    # and their decode equals ours value for value (same file, same arithmetic up to float32)
    ours = read_splats(path).subset(_match(s, read_splats(path).means))
    np.testing.assert_allclose(b.means, ours.means, atol=1e-5)
    np.testing.assert_allclose(b.shN, ours.shN, atol=1e-6)
    np.testing.assert_allclose(b.sh0, ours.sh0, atol=1e-6)
    np.testing.assert_allclose(b.log_scales, ours.log_scales, atol=1e-6)
    np.testing.assert_allclose(b.opacities, ours.opacities, atol=2e-6)
    assert _angle_deg(b.quats, ours.quats).max() < 0.01
    assert np.abs(b.sh0 * SH_C0 - s.sh0 * SH_C0).max() < 0.02


@needs_tool
def test_we_read_splat_transform_sog(tmp_path) -> None:
    """splat-transform's own writer (CPU k-means, kept tiny: it is slow without a GPU)."""
    s = surface_splats(400, sh_degree=1)
    src = write_splats(tmp_path / "in.ply", s)
    proc = subprocess.run([str(TOOL), "-q", "-w", "-g", "cpu", str(src), str(tmp_path / "theirs.sog")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    back = read_splats(tmp_path / "theirs.sog")
    assert len(back) == len(s)
    _check_close(s, back.subset(_match(s, back.means)), sh_atol=0.1, steps=1.01)
    # and their unbundled form (meta.json next to the textures)
    folder = tmp_path / "theirs"
    folder.mkdir()
    proc = subprocess.run([str(TOOL), "-q", "-w", "-g", "cpu", str(src), str(folder / "meta.json")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    unbundled = read_splats(folder)
    _check_close(s, unbundled.subset(_match(s, unbundled.means)), sh_atol=0.1, steps=1.01)


def test_malformed_meta_is_one_line_error(tmp_path) -> None:
    s = tiny_splats(50, sh_degree=1)
    good = sog.files(s)
    cases = {
        "no version": lambda m: m.pop("version"),
        "version 3": lambda m: m.update(version=3),
        "count zero": lambda m: m.update(count=0),
        "count too big": lambda m: m.update(count=10 ** 6),
        "short mins": lambda m: m["means"].update(mins=[0, 0]),
        "nan codebook": lambda m: m["scales"].update(codebook=[float("nan")] * 256),
        "missing file": lambda m: m["quats"].update(files=["nope.webp"]),
        "path file": lambda m: m["quats"].update(files=["../quats.webp"]),
        "bands": lambda m: m["shN"].update(bands=4),
        "short codebook": lambda m: m["sh0"].update(codebook=[0.0] * 3),
    }
    for what, change in cases.items():
        meta = json.loads(good["meta.json"])
        change(meta)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("meta.json", json.dumps(meta))
            for name, data in good.items():
                if name != "meta.json":
                    zf.writestr(name, data)
        path = tmp_path / "bad.sog"
        path.write_bytes(buf.getvalue())
        with pytest.raises(ReconError) as err:
            read_splats(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value), what
    path = tmp_path / "plain.sog"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("other.txt", "x")
    path.write_bytes(buf.getvalue())
    with pytest.raises(ReconError, match="meta.json"):
        read_splats(path)
    with pytest.raises(ReconError, match="zero splats"):
        encode_splats(s.subset(np.zeros(50, bool)), format="sog")


def test_deflated_entry_cannot_expand_without_bound(tmp_path) -> None:
    """A zip entry's header sizes are not trusted: a deflated 'texture' that expands far beyond
    what the meta.json's count can need is refused after reading just past the limit."""
    good = sog.files(tiny_splats(50, sh_degree=0))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in good.items():
            if name == "quats.webp":
                zf.writestr(name, bytes(40 << 20), compress_type=zipfile.ZIP_DEFLATED)
            else:
                zf.writestr(name, data)
    path = tmp_path / "bomb.sog"
    path.write_bytes(buf.getvalue())
    assert path.stat().st_size < 1 << 20
    with pytest.raises(ReconError, match="quats.webp is larger than"):
        read_splats(path)
