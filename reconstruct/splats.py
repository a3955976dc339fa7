"""A Gaussian-splat scene as plain arrays: the exchange type between trainer, files and viewer.

Parameters are stored the way the 3DGS .ply stores them (pre-activation): log scales,
opacity logits, unnormalized wxyz quaternions, SH coefficients split into the DC term and
the rest. Coordinates are the scene's normalized world frame, OpenCV-style (RDF).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SH_C0 = 0.28209479177387814
"""Degree-0 real spherical-harmonic constant: color = SH_C0 * f_dc + 0.5."""


@dataclass(frozen=True)
class Splats:
    """N Gaussians. Shapes are asserted on construction."""

    means: np.ndarray
    """[N, 3] float32 centers."""
    quats: np.ndarray
    """[N, 4] float32 rotations, w x y z, not necessarily normalized."""
    log_scales: np.ndarray
    """[N, 3] float32 natural-log standard deviations along the local axes."""
    opacity_logits: np.ndarray
    """[N] float32 logit(opacity)."""
    sh0: np.ndarray
    """[N, 3] float32 DC SH coefficients (f_dc)."""
    shN: np.ndarray
    """[N, K-1, 3] float32 higher-order SH coefficients, K = (degree + 1)^2; K-1 may be 0."""

    def __post_init__(self) -> None:
        n = self.means.shape[0]
        assert self.means.shape == (n, 3), self.means.shape
        assert self.quats.shape == (n, 4), self.quats.shape
        assert self.log_scales.shape == (n, 3), self.log_scales.shape
        assert self.opacity_logits.shape == (n,), self.opacity_logits.shape
        assert self.sh0.shape == (n, 3), self.sh0.shape
        assert self.shN.ndim == 3 and self.shN.shape[0] == n and self.shN.shape[2] == 3, self.shN.shape
        assert self.shN.shape[1] + 1 in (1, 4, 9, 16), f"SH count {self.shN.shape[1] + 1} is not a square"

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        return int(round(np.sqrt(self.shN.shape[1] + 1))) - 1

    @property
    def opacities(self) -> np.ndarray:
        """[N] opacities in (0, 1)."""
        return 1.0 / (1.0 + np.exp(-self.opacity_logits))

    @property
    def scales(self) -> np.ndarray:
        """[N, 3] standard deviations."""
        return np.exp(self.log_scales)

    @property
    def rgb(self) -> np.ndarray:
        """[N, 3] view-independent color (degree 0), clipped to [0, 1]."""
        return np.clip(self.sh0 * SH_C0 + 0.5, 0.0, 1.0)

    def subset(self, index: np.ndarray) -> "Splats":
        """Rows selected by a boolean mask or index array."""
        return Splats(
            self.means[index], self.quats[index], self.log_scales[index],
            self.opacity_logits[index], self.sh0[index], self.shN[index],
        )

    def with_sh_degree(self, degree: int) -> "Splats":
        """Drop SH bands above ``degree`` (or pad with zeros up to it)."""
        k = (degree + 1) ** 2 - 1
        shN = self.shN[:, :k]
        if shN.shape[1] < k:
            shN = np.concatenate([shN, np.zeros((len(self), k - shN.shape[1], 3), np.float32)], axis=1)
        return Splats(self.means, self.quats, self.log_scales, self.opacity_logits, self.sh0, shN)

    @staticmethod
    def from_params(params: dict) -> "Splats":
        """From the trainer's parameter dict (torch tensors, gsplat naming): means, quats,
        scales (log), opacities (logit), sh0 [N,1,3], shN [N,K-1,3]."""
        def arr(name: str) -> np.ndarray:
            return params[name].detach().cpu().numpy().astype(np.float32)

        return Splats(
            means=arr("means"), quats=arr("quats"), log_scales=arr("scales"),
            opacity_logits=arr("opacities").reshape(-1), sh0=arr("sh0").reshape(-1, 3), shN=arr("shN"),
        )

    def to_params(self, device: str | None = None) -> dict:
        """The trainer's parameter dict as torch tensors (gsplat naming, sh0 as [N,1,3])."""
        import torch

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32, device=device)

        return {
            "means": t(self.means), "quats": t(self.quats), "scales": t(self.log_scales),
            "opacities": t(self.opacity_logits), "sh0": t(self.sh0[:, None, :]), "shN": t(self.shN),
        }
