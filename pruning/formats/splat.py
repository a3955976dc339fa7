"""antimatter15 .splat: 32 bytes a splat, no header, no spherical harmonics beyond the DC color.

Per splat, little endian::

    float32 x, y, z            center (scene frame, as trained)
    float32 sx, sy, sz         scales, exp(log_scale)
    uint8   r, g, b, a         round(255 * clamp(f_dc * SH_C0 + 0.5)), round(255 * sigmoid(opacity))
    uint8   qw, qx, qy, qz     round(clamp(q / |q| * 128 + 128, 0, 255))

Order: the file is sorted by descending ``exp(sx + sy + sz) * sigmoid(opacity)`` (volume times
opacity, the order antimatter15's converter writes), ties by original index. Web viewers that
stream the file draw the biggest, most opaque splats first.

Rounding to nearest (where antimatter15's converter truncates) halves the color error; every
reader decodes both the same way. Reading maps each byte back: color ``(b / 255 - 0.5) / SH_C0``,
alpha logit of ``b / 255`` kept off 0 and 1, quaternion ``(b - 128) / 128``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reconstruct.splats import SH_C0, Splats
from scenes.errors import ReconError

BYTES_PER_SPLAT = 32
DTYPE = np.dtype([("position", "<f4", (3,)), ("scale", "<f4", (3,)),
                  ("rgba", "u1", (4,)), ("rot", "u1", (4,))])
_ALPHA_EPS = 0.25 / 255.0


def importance_order(splats: Splats) -> np.ndarray:
    """[N] permutation: descending volume x opacity, stable."""
    key = np.exp(splats.log_scales.astype(np.float64).sum(axis=1)) * splats.opacities.astype(np.float64)
    return np.argsort(-key, kind="stable")


def encode(splats: Splats) -> bytes:
    s = splats.subset(importance_order(splats))
    rows = np.zeros(len(s), DTYPE)
    rows["position"] = s.means
    rows["scale"] = np.exp(s.log_scales.astype(np.float64)).astype(np.float32)
    rgb = np.clip(s.sh0.astype(np.float64) * SH_C0 + 0.5, 0.0, 1.0)
    alpha = 1.0 / (1.0 + np.exp(-s.opacity_logits.astype(np.float64)))
    rows["rgba"][:, :3] = np.round(rgb * 255.0)
    rows["rgba"][:, 3] = np.round(alpha * 255.0)
    q = s.quats.astype(np.float64)
    length = np.linalg.norm(q, axis=1, keepdims=True)
    q = np.where(length > 0, q / np.where(length > 0, length, 1.0), np.array([1.0, 0.0, 0.0, 0.0]))
    rows["rot"] = np.clip(np.round(q * 128.0 + 128.0), 0, 255)
    return rows.tobytes()


def decode(path: Path, data: bytes) -> Splats:
    if len(data) == 0:
        raise ReconError(path, "empty .splat file")
    if len(data) % BYTES_PER_SPLAT:
        raise ReconError(path, f".splat size {len(data)} is not a multiple of 32 bytes "
                               "(truncated or not a .splat file)")
    rows = np.frombuffer(data, DTYPE)
    means = rows["position"].astype(np.float32)
    scales = rows["scale"].astype(np.float64)
    if not np.isfinite(means).all():
        raise ReconError(path, f"{int((~np.isfinite(means)).any(axis=1).sum())} splat(s) have non-finite positions")
    if not (np.isfinite(scales).all() and (scales > 0).all()):
        bad = int((~(np.isfinite(scales) & (scales > 0))).any(axis=1).sum())
        raise ReconError(path, f"{bad} splat(s) have non-positive or non-finite scales")
    rgba = rows["rgba"].astype(np.float64) / 255.0
    alpha = np.clip(rgba[:, 3], _ALPHA_EPS, 1.0 - _ALPHA_EPS)
    q = (rows["rot"].astype(np.float64) - 128.0) / 128.0
    length = np.linalg.norm(q, axis=1, keepdims=True)
    q = np.where(length > 0, q / np.where(length > 0, length, 1.0), np.array([1.0, 0.0, 0.0, 0.0]))
    return Splats(
        means=means, quats=q.astype(np.float32), log_scales=np.log(scales).astype(np.float32),
        opacity_logits=np.log(alpha / (1.0 - alpha)).astype(np.float32),
        sh0=((rgba[:, :3] - 0.5) / SH_C0).astype(np.float32),
        shN=np.zeros((len(rows), 0, 3), np.float32),
    )
