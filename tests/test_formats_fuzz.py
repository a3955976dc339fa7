"""Corrupted files never escape as tracebacks: every reader either decodes or raises ReconError."""

from __future__ import annotations

import numpy as np
import pytest

from pruning.formats import encode_splats, read_splats
from pruning.formats._testing import tiny_splats
from scenes.errors import ReconError


@pytest.mark.parametrize("fmt,name,version", [
    ("ply", "f.ply", 3), ("compressed-ply", "f.compressed.ply", 3), ("spz", "f.spz", 3), ("splat", "f.splat", 3),
    ("sog", "f.sog", 3), ("glb", "f.glb", 3), ("spz", "f4.spz", 4)])
def test_truncations_and_byte_flips_give_recon_errors(tmp_path, fmt, name, version) -> None:
    good = encode_splats(tiny_splats(40, sh_degree=1), format=fmt, spz_version=version)
    rng = np.random.default_rng(7)
    path = tmp_path / name
    cuts = sorted(set(rng.integers(0, len(good), 60).tolist()) | {0, 1, 4})
    for k in cuts:  # truncation is always caught (a .splat cut at a 32-byte boundary is a smaller valid file)
        path.write_bytes(good[:k])
        if fmt == "splat" and k and k % 32 == 0:
            assert len(read_splats(path)) == k // 32
            continue
        with pytest.raises(ReconError):
            read_splats(path)
    cases = []
    for _ in range(150):
        data = bytearray(good)
        # bias flips toward the header, where the structure lives
        pos = rng.integers(0, min(len(good), 1200)) if rng.random() < 0.7 else rng.integers(0, len(good))
        data[pos] = rng.integers(0, 256)
        cases.append(bytes(data))
    decoded = rejected = 0
    for data in cases:
        path.write_bytes(data)
        try:
            splats = read_splats(path)
        except ReconError as err:
            assert "\n" not in str(err) and str(path) in str(err)
            rejected += 1
        else:
            decoded += 1
            assert all(np.isfinite(getattr(splats, f)).all() for f in ("means", "log_scales"))
    assert rejected + decoded == 150


def test_sog_folder_without_zip_crc(tmp_path) -> None:
    """The unbundled SOG has no CRC to catch damage: flipped or cut bytes in meta.json or in any
    WebP texture must still decode to finite splats or raise a one-line ReconError."""
    from pruning.formats import write_splats

    meta = write_splats(tmp_path / "meta.json", tiny_splats(40, sh_degree=1))
    rng = np.random.default_rng(11)
    names = sorted(p.name for p in tmp_path.iterdir())
    originals = {n: (tmp_path / n).read_bytes() for n in names}
    decoded = rejected = 0
    for trial in range(120):
        name = names[trial % len(names)]
        data = bytearray(originals[name])
        if trial % 3 == 0:
            data = data[:rng.integers(0, len(data))]
        else:
            for _ in range(rng.integers(1, 4)):
                data[rng.integers(0, len(data))] = rng.integers(0, 256)
        (tmp_path / name).write_bytes(bytes(data))
        try:
            splats = read_splats(meta)
        except ReconError as err:
            assert "\n" not in str(err) and str(tmp_path) in str(err), str(err)
            rejected += 1
        else:
            decoded += 1
            assert all(np.isfinite(getattr(splats, f)).all() for f in ("means", "log_scales", "sh0"))
        (tmp_path / name).write_bytes(originals[name])
    assert rejected > 30 and decoded + rejected == 120
