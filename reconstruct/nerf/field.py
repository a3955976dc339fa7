"""The radiance field: hash features -> density (truncated exp) and view-dependent color.

World points are first mapped into the unit cube the hash grid encodes (``SceneSpace``):

- ``aabb``: object scenes (Blender: [-1.5, 1.5]^3), a linear map of the box onto [0, 1]^3.
- ``contract``: forward-facing and unbounded scenes (LLFF): mip-NeRF 360 contraction
  ``c(x) = x`` for ``|x| <= 1`` else ``(2 - 1/|x|) x/|x|`` of ``(x - center) / radius``, using the
  L-infinity norm (as nerfstudio's grid variant) so the contracted ball [-2, 2]^3 fills the cube
  the hash grid and occupancy grid cover. We use contraction rather than NDC because it keeps rays
  in the metric world frame: expected depth, the occlusion/depth-ranking losses, the occupancy grid
  and the point-cloud/mesh export then work unchanged for both kinds of scene; sampling uniformly in
  inverse depth along the ray (see ``sampler``) gives NDC's sample spacing anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from reconstruct.nerf.hash_encoding import HashEncoding, HashGridConfig, Implementation


class _TruncExp(torch.autograd.Function):
    """exp(x) whose gradient uses exp(min(x, 15)) (Instant-NGP's guard against exploding density)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    return _TruncExp.apply(x)


def sh_encode(d: torch.Tensor, degree: int = 4) -> torch.Tensor:
    """Real spherical harmonics of unit directions d [N, 3] up to ``degree`` (1..4 bands): [N, degree**2]."""
    assert d.ndim == 2 and d.shape[1] == 3 and 1 <= degree <= 4, (d.shape, degree)
    x, y, z = d.unbind(-1)
    out = [torch.full_like(x, 0.28209479177387814)]
    if degree > 1:
        out += [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x]
    if degree > 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [
            1.0925484305920792 * xy,
            -1.0925484305920792 * yz,
            0.94617469575755997 * zz - 0.31539156525251999,
            -1.0925484305920792 * xz,
            0.54627421529603959 * (xx - yy),
        ]
    if degree > 3:
        out += [
            0.59004358992664352 * y * (-3.0 * xx + yy),
            2.8906114426405538 * xy * z,
            0.45704579946446572 * y * (1.0 - 5.0 * zz),
            0.3731763325901154 * z * (5.0 * zz - 3.0),
            0.45704579946446572 * x * (1.0 - 5.0 * zz),
            1.4453057213202769 * z * (xx - yy),
            0.59004358992664352 * x * (-xx + 3.0 * yy),
        ]
    return torch.stack(out, dim=-1)


@dataclass(frozen=True)
class SceneSpace:
    """How world points map into the unit cube the grids cover."""

    kind: Literal["aabb", "contract"]
    """aabb for bounded object scenes, contract for forward-facing / unbounded ones."""
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Box center (aabb) or contraction center (contract), world units."""
    radius: float = 1.5
    """Half box side (aabb) or radius of the uncontracted region (contract)."""

    def to_unit(self, x_world: torch.Tensor) -> torch.Tensor:
        """[N, 3] world points -> [N, 3] in [0, 1] (points outside an aabb land outside)."""
        c = torch.tensor(self.center, dtype=x_world.dtype, device=x_world.device)
        u = (x_world - c) / self.radius
        if self.kind == "aabb":
            return (u + 1.0) * 0.5
        n = u.abs().amax(-1, keepdim=True).clamp_min(1e-9)
        u = torch.where(n <= 1.0, u, (2.0 - 1.0 / n) * (u / n))
        return (u + 2.0) * 0.25

    def from_unit(self, u: torch.Tensor) -> torch.Tensor:
        """Inverse of ``to_unit`` for [N, 3] points in [0, 1] (the contraction's outer shell stays finite)."""
        c = torch.tensor(self.center, dtype=u.dtype, device=u.device)
        if self.kind == "aabb":
            return (u * 2.0 - 1.0) * self.radius + c
        v = u * 4.0 - 2.0
        n = v.abs().amax(-1, keepdim=True).clamp(1e-9, 2.0 - 1e-3)
        x = torch.where(n <= 1.0, v, v / n / (2.0 - n))
        return x * self.radius + c

    def to_dict(self) -> dict:
        return {"kind": self.kind, "center": list(self.center), "radius": self.radius}

    @staticmethod
    def from_dict(d: dict) -> "SceneSpace":
        cx, cy, cz = (float(v) for v in d["center"])
        return SceneSpace(d["kind"], (cx, cy, cz), float(d["radius"]))


@dataclass
class FieldConfig:
    """Network sizes of the field (Instant-NGP's NeRF: 1 hidden layer for density, 2 for color)."""

    grid: HashGridConfig = field(default_factory=HashGridConfig)
    """Hash grid shape."""
    hidden_dim: int = 64
    """Width of the density MLP."""
    geo_feat_dim: int = 15
    """Features passed from the density MLP to the color MLP."""
    hidden_dim_color: int = 64
    """Width of the color MLP."""
    sh_degree: int = 4
    """Spherical-harmonics bands of the view-direction encoding (4 -> 16 values)."""
    density_bias: float = -1.0
    """Added to the raw density before the truncated exp (starts the field mostly empty)."""


class NerfField(nn.Module):
    """Density and color at world points: ``forward(x [N, 3], d [N, 3]) -> (sigma [N], rgb [N, 3])``."""

    def __init__(self, config: FieldConfig, space: SceneSpace, *, implementation: Implementation = "auto") -> None:
        super().__init__()
        self.config, self.space = config, space
        self.encoding = HashEncoding(config.grid, implementation=implementation)
        n_in = self.encoding.n_output_dims
        self.density_mlp = nn.Sequential(
            nn.Linear(n_in, config.hidden_dim), nn.ReLU(), nn.Linear(config.hidden_dim, 1 + config.geo_feat_dim)
        )
        self.color_mlp = nn.Sequential(
            nn.Linear(config.geo_feat_dim + config.sh_degree**2, config.hidden_dim_color), nn.ReLU(),
            nn.Linear(config.hidden_dim_color, config.hidden_dim_color), nn.ReLU(),
            nn.Linear(config.hidden_dim_color, 3),
        )

    def density(self, x_world: torch.Tensor,
                level_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """sigma [N] >= 0 and geometry features [N, geo_feat_dim] at world points [N, 3]."""
        assert x_world.ndim == 2 and x_world.shape[1] == 3, x_world.shape
        u = self.space.to_unit(x_world)
        inside = ((u >= 0.0) & (u <= 1.0)).all(-1)
        h = self.density_mlp(self.encoding(u, level_mask))
        sigma = trunc_exp(h[:, 0] + self.config.density_bias) * inside
        return sigma, h[:, 1:]

    def color(self, geo: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """rgb [N, 3] in (0, 1) from geometry features and unit view directions d [N, 3]."""
        return torch.sigmoid(self.color_mlp(torch.cat([geo, sh_encode(d, self.config.sh_degree)], -1)))

    def forward(self, x_world, d, level_mask=None):
        sigma, geo = self.density(x_world, level_mask)
        return sigma, self.color(geo, d)
