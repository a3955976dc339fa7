"""A deterministic tiny splat scene for format tests (golden bytes, round trips, cross-checks).

Built from integer arithmetic only (no RNG, no transcendental functions), so every value is the
same float32 on every machine and the golden hashes of the files written from it are stable.
"""

from __future__ import annotations

import numpy as np

from reconstruct.splats import Splats


def _ints(n: int, salt: int, modulo: int) -> np.ndarray:
    """[n] pseudo-random ints in [0, modulo) from a fixed multiplicative hash of index and salt."""
    i = np.arange(n, dtype=np.uint64) + np.uint64(salt * 7919)
    h = (i * np.uint64(2654435761) + np.uint64(salt * 40503)) % np.uint64(4294967291)
    h = (h ^ (h >> np.uint64(13))) * np.uint64(1274126177) % np.uint64(4294967291)
    return (h % np.uint64(modulo)).astype(np.int64)


def _vals(shape: tuple[int, ...], salt: int, lo: float, hi: float, steps: int = 4096) -> np.ndarray:
    """float32 values on a grid of ``steps`` levels in [lo, hi] (exact in binary for power-of-2 steps)."""
    n = int(np.prod(shape))
    k = _ints(n, salt, steps + 1).astype(np.float64)
    return (lo + (hi - lo) * k / steps).astype(np.float32).reshape(shape)


def tiny_splats(n: int = 300, *, sh_degree: int = 3) -> Splats:
    """``n`` splats in a [-2, 2]^3 box with varied scales, opacities, rotations and SH bands."""
    k1 = (sh_degree + 1) ** 2 - 1
    quats = _vals((n, 4), 2, -1.0, 1.0)
    quats[np.abs(quats).sum(axis=1) < 0.25, 0] = 1.0  # no near-zero quaternions
    return Splats(
        means=_vals((n, 3), 1, -2.0, 2.0),
        quats=quats,
        log_scales=_vals((n, 3), 3, -6.0, -1.0),
        opacity_logits=_vals((n,), 4, -4.0, 6.0),
        sh0=_vals((n, 3), 5, -1.5, 1.5),
        shN=_vals((n, k1, 3), 6, -0.5, 0.5),
    )
