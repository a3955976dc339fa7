"""Corrupted files never escape as tracebacks: every reader either decodes or raises ReconError."""

from __future__ import annotations

import numpy as np
import pytest

from pruning.formats import encode_splats, read_splats
from pruning.formats._testing import tiny_splats
from scenes.errors import ReconError


@pytest.mark.parametrize("fmt,name", [("ply", "f.ply"), ("compressed-ply", "f.compressed.ply"),
                                      ("spz", "f.spz"), ("splat", "f.splat")])
def test_truncations_and_byte_flips_give_recon_errors(tmp_path, fmt, name) -> None:
    good = encode_splats(tiny_splats(40, sh_degree=1), format=fmt)
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
