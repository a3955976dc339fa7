"""Small spatially coherent splat scenes for format tests and size measurements.

Unlike ``_testing.tiny_splats`` (independent values per splat), attributes here vary smoothly
over a surface, as in a trained scene: neighbouring splats have similar colors, scales,
rotations and SH, which is what texture layouts and entropy coders exploit.
"""

from __future__ import annotations

import numpy as np

from reconstruct.splats import Splats


def surface_splats(n: int = 4096, *, sh_degree: int = 3, seed: int = 0) -> Splats:
    """``n`` splats on a wavy sheet ``z = 0.3 sin(2x) cos(2y)`` over [-2, 2]^2 (RDF: y down, the
    sheet faces a camera on -z), colors and scales smooth in position, small noise on top."""
    rng = np.random.default_rng(seed)
    k1 = (sh_degree + 1) ** 2 - 1
    xy = rng.uniform(-2.0, 2.0, (n, 2))  # [N, 2]
    z = 0.3 * np.sin(2 * xy[:, 0]) * np.cos(2 * xy[:, 1])
    means = np.column_stack([xy, z])  # [N, 3]
    hue = (xy[:, 0] + 2.0) / 4.0  # [N] 0..1 left to right
    rgb = np.column_stack([hue, 1.0 - hue, 0.5 + 0.4 * np.sin(3 * xy[:, 1])])
    rgb = np.clip(rgb + rng.normal(0, 0.02, rgb.shape), 0.02, 0.98)
    sh0 = (rgb - 0.5) / 0.28209479177387814
    base = -3.0 + 0.4 * np.cos(xy[:, 0] + xy[:, 1])  # [N] log scale
    log_scales = np.column_stack([base, base - 0.3, base - 1.5]) + rng.normal(0, 0.05, (n, 3))
    angle = 0.5 * xy[:, 0] + rng.normal(0, 0.05, n)  # rotation about z, smooth in x
    quats = np.column_stack([np.cos(angle / 2), np.zeros(n), np.zeros(n), np.sin(angle / 2)])
    opacity = np.clip(0.85 + 0.1 * np.sin(xy[:, 1]) + rng.normal(0, 0.02, n), 0.05, 0.99)
    coeffs = np.arange(1, k1 + 1)[None, :, None]
    shN = 0.2 / coeffs * np.sin(coeffs * xy[:, 0, None, None] + np.arange(3)[None, None, :])
    shN = shN + rng.normal(0, 0.01, (n, k1, 3))
    return Splats(
        means=means.astype(np.float32), quats=quats.astype(np.float32),
        log_scales=log_scales.astype(np.float32),
        opacity_logits=np.log(opacity / (1 - opacity)).astype(np.float32),
        sh0=sh0.astype(np.float32), shN=shN.astype(np.float32).reshape(n, k1, 3),
    )
