"""Occupancy-grid ray marching and volume rendering in torch (no nerfacc: it needs a CUDA build).

Rays are ``x(t) = o + t d`` with ``d = R K^-1 [u, v, 1]`` (camera z component 1), so ``t`` is the
camera-z depth: scene near/far bounds and depth priors apply directly, and a step ``dt`` covers
``dt * |d|`` of world distance. Samples live in a padded [R, S] layout (S candidates per ray) with a
mask of those evaluated; per-ray sums are plain tensor reductions.

Pipeline of ``render_rays``: candidate intervals (uniform in t inside the AABB for object scenes,
uniform in inverse depth for contracted scenes, jittered while training) -> drop candidates in
empty occupancy-grid cells -> early termination: a density pass without gradient gives the
transmittance, samples behind T < ``early_stop_eps`` (or with negligible alpha) are dropped ->
field evaluation of the survivors -> weights ``w_i = T_i (1 - exp(-sigma_i delta_i))``, color,
expected depth, accumulated alpha, background blend.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from reconstruct.nerf.field import NerfField, SceneSpace


class OccupancyGrid:
    """Binary occupancy of the unit cube the field encodes, from an EMA of density (Instant-NGP).

    Every ``update_every`` steps: during the first ``warmup_steps`` all cells are refreshed,
    afterwards a random quarter of the cells plus every occupied cell. A refreshed cell takes
    ``max(decay * ema, opacity(sigma at a random point of the cell))`` with
    ``opacity = 1 - exp(-sigma * step_size)``; a cell is occupied when its EMA exceeds
    ``min(threshold, mean EMA)``. Starts fully occupied.
    """

    def __init__(self, resolution: int = 64, *, step_size: float, decay: float = 0.95, threshold: float = 0.01,
                 warmup_steps: int = 256, update_every: int = 16, device: torch.device | str = "cpu") -> None:
        self.resolution, self.step_size, self.decay = resolution, step_size, decay
        self.threshold, self.warmup_steps, self.update_every = threshold, warmup_steps, update_every
        n = resolution**3
        self.ema = torch.zeros(n, device=device)
        self.binary = torch.ones(n, dtype=torch.bool, device=device)

    @property
    def device(self) -> torch.device:
        return self.ema.device

    def cell_index(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat cell index [N] of unit-cube points u [N, 3] and whether they are inside the cube [N]."""
        r = self.resolution
        inside = ((u >= 0.0) & (u <= 1.0)).all(-1)
        ijk = (u * r).long().clamp(0, r - 1)
        return ijk[:, 0] * r * r + ijk[:, 1] * r + ijk[:, 2], inside

    def occupied(self, u: torch.Tensor) -> torch.Tensor:
        """[N] bool: unit-cube points u [N, 3] fall in an occupied cell."""
        idx, inside = self.cell_index(u)
        return self.binary[idx] & inside

    @torch.no_grad()
    def update(self, step: int, field: NerfField, *, level_mask: torch.Tensor | None = None,
               generator: torch.Generator | None = None, chunk: int = 65536) -> bool:
        """Refresh the EMA if ``step`` is an update step; returns whether it did."""
        if step % self.update_every != 0:
            return False
        n = self.resolution**3
        if step < self.warmup_steps:
            cells = torch.arange(n, device=self.device)
        else:
            rand = torch.randint(0, n, (n // 4,), device=self.device, generator=generator)
            cells = torch.unique(torch.cat([rand, torch.nonzero(self.binary).flatten()]))
        r = self.resolution
        ijk = torch.stack([cells // (r * r), (cells // r) % r, cells % r], -1).float()
        u = (ijk + torch.rand(ijk.shape, device=self.device, generator=generator)) / r
        x = field.space.from_unit(u)
        sigma = torch.cat([field.density(c, level_mask)[0] for c in x.split(chunk)])
        opacity = 1.0 - torch.exp(-sigma * self.step_size)
        self.ema[cells] = torch.maximum(self.ema[cells] * self.decay, opacity)
        self.binary = self.ema > min(self.threshold, float(self.ema.mean()))
        return True

    def occupancy_fraction(self) -> float:
        return float(self.binary.float().mean())

    def state_dict(self) -> dict:
        return {"resolution": self.resolution, "ema": self.ema.cpu(), "binary": self.binary.cpu()}

    def load_state_dict(self, state: dict) -> None:
        assert int(state["resolution"]) == self.resolution, (state["resolution"], self.resolution)
        self.ema = state["ema"].to(self.device)
        self.binary = state["binary"].to(self.device)


def ray_aabb(rays_o: torch.Tensor, rays_d: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
    """Entry and exit t [R] of rays [R, 3] through the box [lo, hi] (exit < entry when missed)."""
    inv = 1.0 / torch.where(rays_d.abs() < 1e-12, torch.full_like(rays_d, 1e-12), rays_d)
    t_a, t_b = (lo - rays_o) * inv, (hi - rays_o) * inv
    return torch.minimum(t_a, t_b).amax(-1), torch.maximum(t_a, t_b).amin(-1)


def sample_intervals(rays_o: torch.Tensor, rays_d: torch.Tensor, space: SceneSpace, near: float, far: float,
                     n_samples: int, *, stratified: bool, generator: torch.Generator | None = None):
    """Candidate intervals along each ray.

    Returns t_starts, t_ends, t_mid [R, S] (t_mid is where the field is evaluated: the bin middle, or
    a uniform random point inside the bin when ``stratified``) and valid [R, S].
    """
    n_rays = rays_o.shape[0]
    dev = rays_o.device
    s = torch.linspace(0.0, 1.0, n_samples + 1, device=dev)[None].expand(n_rays, -1)  # [R, S+1]
    if space.kind == "aabb":
        c = torch.tensor(space.center, device=dev)
        t0, t1 = ray_aabb(rays_o, rays_d, c - space.radius, c + space.radius)
        t0, t1 = t0.clamp_min(near), t1.clamp_max(far)
        valid_ray = t1 > t0
        t1 = torch.where(valid_ray, t1, t0 + 1e-3)
        edges = t0[:, None] + (t1 - t0)[:, None] * s
    else:  # uniform in inverse depth (NDC's spacing) from near to far
        valid_ray = torch.ones(n_rays, dtype=torch.bool, device=dev)
        edges = 1.0 / (1.0 / near * (1.0 - s) + 1.0 / far * s)
    t_starts, t_ends = edges[:, :-1], edges[:, 1:]
    if stratified:
        jitter = torch.rand(t_starts.shape, device=dev, generator=generator)
    else:
        jitter = torch.full_like(t_starts, 0.5)
    t_mid = t_starts + (t_ends - t_starts) * jitter
    return t_starts, t_ends, t_mid, valid_ray[:, None].expand_as(t_starts)


def render_weights(sigma: torch.Tensor, deltas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Volume-rendering weights [R, S], transmittance before each sample [R, S] and alpha [R, S]."""
    tau = sigma * deltas
    alpha = 1.0 - torch.exp(-tau)
    trans = torch.exp(-torch.cumsum(torch.cat([torch.zeros_like(tau[:, :1]), tau[:, :-1]], -1), -1))
    return alpha * trans, trans, alpha


def composite(weights: torch.Tensor, rgb: torch.Tensor, t_mid: torch.Tensor, background: torch.Tensor):
    """Color [R, 3] over ``background`` ([3] or [R, 3]), expected depth [R] and accumulated alpha [R]."""
    acc = weights.sum(-1)
    color = (weights[..., None] * rgb).sum(-2) + (1.0 - acc[:, None]) * background
    depth = (weights * t_mid).sum(-1) / acc.clamp_min(1e-6)
    return color, depth, acc


@dataclass
class RenderOptions:
    """How rays are marched and composited."""

    n_samples: int = 128
    """Candidate samples per ray (before occupancy and early-termination culling)."""
    stratified: bool = True
    """Jitter samples inside their bins (training); off = bin middles (evaluation)."""
    early_stop_eps: float = 1e-4
    """Drop samples once transmittance falls below this."""
    alpha_thre: float = 0.0
    """Drop samples whose alpha is below this (0 keeps all)."""
    early_stop_in_training: bool = True
    """Run the no-grad density pass that applies early termination while training too."""


def render_rays(field: NerfField, grid: OccupancyGrid | None, rays_o: torch.Tensor, rays_d: torch.Tensor, *,
                near: float, far: float, background: torch.Tensor, options: RenderOptions,
                level_mask: torch.Tensor | None = None, generator: torch.Generator | None = None) -> dict:
    """Render rays [R, 3] (origins, unnormalized directions with camera-z component 1).

    Returns a dict: rgb [R, 3], depth [R] (expected camera-z depth), acc [R], weights [R, S],
    sigma [R, S] (0 where not evaluated), t_mid [R, S], n_evaluated (int).
    """
    assert rays_o.shape == rays_d.shape and rays_o.ndim == 2 and rays_o.shape[1] == 3, (rays_o.shape, rays_d.shape)
    t_starts, t_ends, t_mid, valid = sample_intervals(
        rays_o, rays_d, field.space, near, far, options.n_samples, stratified=options.stratified, generator=generator
    )
    n_rays, n_s = t_mid.shape
    d_norm = rays_d.norm(dim=-1, keepdim=True)  # [R, 1]
    deltas = (t_ends - t_starts) * d_norm  # world distance per interval
    pts = rays_o[:, None, :] + t_mid[..., None] * rays_d[:, None, :]  # [R, S, 3]
    mask = valid.clone()
    if grid is not None:
        mask &= grid.occupied(field.space.to_unit(pts.reshape(-1, 3))).view(n_rays, n_s)
    dirs = (rays_d / d_norm)[:, None, :].expand(-1, n_s, -1)
    grad = torch.is_grad_enabled()
    sigma_full = pts.new_zeros(n_rays, n_s)
    rgb_full = pts.new_zeros(n_rays, n_s, 3)
    if not grad:
        # One density pass, early termination, color only where it contributes.
        flat = mask.view(-1)
        sig, geo = field.density(pts.reshape(-1, 3)[flat], level_mask)
        sigma_full.view(-1)[flat] = sig
        _, trans, alpha = render_weights(sigma_full, deltas)
        keep = mask & (trans > options.early_stop_eps) & (alpha > options.alpha_thre)
        keep_in_flat = keep.view(-1)[flat]
        sigma_full = torch.where(keep, sigma_full, torch.zeros_like(sigma_full))
        rgb_full.view(-1, 3)[keep.view(-1)] = field.color(geo[keep_in_flat], dirs.reshape(-1, 3)[keep.view(-1)])
        mask = keep
    else:
        if options.early_stop_in_training and bool(mask.any()):
            with torch.no_grad():
                sig0 = pts.new_zeros(n_rays, n_s)
                sig0.view(-1)[mask.view(-1)] = field.density(pts.reshape(-1, 3)[mask.view(-1)], level_mask)[0]
                _, trans, alpha = render_weights(sig0, deltas)
                mask = mask & (trans > options.early_stop_eps) & (alpha > options.alpha_thre)
        flat = mask.view(-1)
        sig, rgb = field(pts.reshape(-1, 3)[flat], dirs.reshape(-1, 3)[flat], level_mask)
        sigma_full = sigma_full.masked_scatter(mask, sig)
        rgb_full = rgb_full.masked_scatter(mask[..., None].expand(-1, -1, 3), rgb)
    weights, _, _ = render_weights(sigma_full, deltas)
    color, depth, acc = composite(weights, rgb_full, t_mid, background)
    return {"rgb": color, "depth": depth, "acc": acc, "weights": weights, "sigma": sigma_full,
            "t_mid": t_mid, "n_evaluated": int(mask.sum())}
