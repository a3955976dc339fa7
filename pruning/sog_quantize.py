"""SOG's quantization in the training loop: the fine-tuned values are the values scene.sog stores.

``SogQuantizer`` is built from a trained parameter dict and used as a render modifier during a short
fine-tuning phase (straight-through: the render sees the stored values, the gradient goes to the
per-Gaussian parameters as if the quantizer were the identity):

- positions: ``l = sign(p) * log(|p| + 1)`` per axis on a 16-bit grid between the current min and
  max of ``l`` (SOG's means_l / means_u);
- rotations: normalized, smallest-three with 8 bits a component (quats.webp), snapped once when the
  quantizer is built and frozen from then on (in the straight-through form they drifted: fern's
  paper-protocol run lost 1 dB of training-view PSNR in 320 steps with 6 bits, the other attributes
  none);
- scales: one 256-entry 1-D codebook shared by the three log-scale axes (meta.scales.codebook);
- DC color: one 256-entry 1-D codebook shared by r g b (meta.sh0.codebook); opacity as 8 bits of
  ``sigmoid`` (sh0.webp alpha);
- higher SH bands: a palette of P vectors with one fixed label a Gaussian (shN_labels), each palette
  coefficient through a 256-entry 1-D codebook (meta.shN.codebook). The palette entries are learned
  through the render (Adam); the per-Gaussian shN parameters are frozen.

Every stored field keeps SOG's layout and sizes (16-bit positions, 8-bit components, 256-entry
codebooks in the file); the config can leave the low bits zero and use fewer codebook entries
(defaults: 12 position bits, 6 rotation bits, 64 scale and DC color levels), which makes the WebP
textures smaller for a PSNR cost the fine-tuning absorbs.

The 1-D codebooks start from a 1-D k-means (pruning.formats._kmeans) and follow the values by an
EMA of the values nearest each entry; every Gaussian takes its nearest entry at every step.
``encode(params)`` runs the same torch code and returns the integer codes and codebooks as a
``pruning.formats.sog.SogData``, so the written file decodes to what the last render saw (up to
float rounding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pruning.formats._kmeans import codebook_1d
from pruning.formats.sog import SH_COEFFS, SogData

_OTHERS = torch.tensor([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])
_ALPHA_EPS = 0.25 / 255.0


@dataclass
class SogQuantizeConfig:
    """SOG codebooks in the loop."""

    palette: int = 0
    """SH palette entries (0 = chosen from the Gaussian count, see ``palette_fraction``)."""
    palette_fraction: float = 1 / 64
    """With ``palette`` 0: entries = this fraction of the Gaussians, rounded to a power of two,
    within 256..65536. On the 22.7k-splat demo run (60 steps) 256 entries gave 14.75 bytes a splat
    at -0.015 dB against 512 entries' 15.18 (a palette entry is 45 texels at degree 3)."""
    scale_levels: int = 64
    """Entries of the scale codebook that are used (the file's codebook always has 256, padded
    with the last entry): fewer distinct indices compress better in the WebP texture. Demo run,
    60 steps: 64 scale and sh0 levels saved 1.5 bytes a splat of 15.2 for 0.03 dB."""
    sh0_levels: int = 64
    """Entries of the DC color codebook that are used (padded to 256 like ``scale_levels``)."""
    shN_levels: int = 256
    """Entries of the SH coefficient codebook that are used (padded to 256)."""
    position_bits: int = 12
    """Bits of SOG's 16-bit positions that carry information (the lower ones are zero, which makes
    the low-byte texture compressible). Demo run: 12 bits saved 1.5 bytes a splat at no PSNR cost
    (+0.007 dB), 11 bits 0.4 more for -0.012 dB."""
    quat_bits: int = 6
    """Bits of SOG's 8-bit rotation components that carry information. Demo run: 6 bits saved 0.76
    bytes a splat at no PSNR cost; 5 bits (with 32 codebook levels) 9.9 bytes a splat, -0.07 dB."""
    kmeans_iters: int = 10
    """Lloyd iterations of the palette initialization."""
    ema_decay: float = 0.8
    """EMA decay of the 1-D codebooks per fine-tuning step."""
    palette_lr: float = 1.25e-4
    """Adam learning rate of the palette entries (the shN rate of 3DGS, a 20th of sh0's)."""
    seed: int = 0
    """Seed of the palette initialization."""


def palette_entries(n: int, cfg: SogQuantizeConfig) -> int:
    """SH palette size for ``n`` Gaussians."""
    if cfg.palette > 0:
        return min(cfg.palette, n, 65536)
    target = max(1.0, n * cfg.palette_fraction)
    return int(min(max(2 ** round(math.log2(target)), 256), 65536, n))


def log16(means: Tensor, bits: int = 16) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """[N, 3] positions -> (codes [N, 3] int64, mins [3], maxs [3], decoded positions [N, 3]);
    with ``bits`` < 16 the codes are multiples of 2**(16 - bits)."""
    lt = torch.sign(means) * torch.log1p(means.abs())
    mins, maxs = lt.min(0).values, lt.max(0).values
    span = maxs - mins
    safe = torch.where(span > 0, span, torch.ones_like(span))
    step = float(2 ** (16 - bits))
    q = torch.round(65535.0 * (lt - mins) / safe / step) * step
    q = torch.where(span > 0, q, torch.zeros_like(lt)).clamp(0, 65535)
    back = mins + safe * q / 65535.0
    return q.long(), mins, maxs, torch.sign(back) * torch.expm1(back.abs())


def smallest_three(quats: Tensor, bits: int = 8) -> tuple[Tensor, Tensor]:
    """[N, 4] wxyz -> (texels [N, 4] int64: three 8-bit components and 252 + index, decoded unit
    quaternions [N, 4]); with ``bits`` < 8 the components are multiples of 2**(8 - bits)."""
    q = quats / quats.norm(dim=1, keepdim=True).clamp_min(1e-12)
    largest = q.abs().argmax(1, keepdim=True)  # [N, 1]
    q = q * torch.where(q.gather(1, largest) < 0, -1.0, 1.0)
    others = _OTHERS.to(q.device)[largest[:, 0]]  # [N, 3]
    step = float(2 ** (8 - bits))
    b = (torch.round(255.0 * (q.gather(1, others) * math.sqrt(2.0) * 0.5 + 0.5) / step) * step).clamp(0, 255)
    small = (b / 255.0 * 2.0 - 1.0) / math.sqrt(2.0)
    dec = torch.zeros_like(q).scatter(1, others, small)
    dec = dec.scatter(1, largest, torch.sqrt((1.0 - (small * small).sum(1, keepdim=True)).clamp_min(0.0)))
    return torch.cat([b.long(), 252 + largest], 1), dec


def alpha8(opacity_logits: Tensor) -> tuple[Tensor, Tensor]:
    """[N] logits -> (bytes [N] int64, decoded opacities [N] as the reader clamps them)."""
    b = torch.round(torch.sigmoid(opacity_logits) * 255.0)
    return b.long(), (b / 255.0).clamp(_ALPHA_EPS, 1.0 - _ALPHA_EPS)


class ScalarCodebook:
    """A sorted 1-D codebook of up to 256 entries for all values of one attribute."""

    def __init__(self, values: Tensor, k: int = 256) -> None:
        assert 1 <= k <= 256, k
        book, _ = codebook_1d(values.detach().float().cpu().numpy(), k)
        self.entries = torch.as_tensor(book, dtype=torch.float32, device=values.device)

    def padded(self) -> np.ndarray:
        """[256] float32 entries as the file stores them. No code points past the used entries, so
        they are padded with the smallest integer not below the last one: the codebook stays sorted
        and each pad is three characters of meta.json instead of a float's nine or ten."""
        e = self.entries.cpu().numpy().astype(np.float32)
        return np.concatenate([e, np.full(256 - len(e), np.ceil(e[-1]), np.float32)])

    def codes(self, x: Tensor) -> Tensor:
        """Index of the nearest entry of every value (same shape as x)."""
        mid = (self.entries[1:] + self.entries[:-1]) * 0.5
        return torch.bucketize(x.detach().float().contiguous(), mid, right=True)

    def ste(self, x: Tensor) -> Tensor:
        """The nearest entries, with the gradient passed straight through to x."""
        return x + (self.entries[self.codes(x)].to(x.dtype) - x).detach()

    @torch.no_grad()
    def ema_update(self, x: Tensor, decay: float) -> None:
        """Move each entry toward the mean of the values nearest it (entries no value picked stay)."""
        flat = x.detach().float().reshape(-1)
        idx = self.codes(flat)
        k = len(self.entries)
        counts = torch.bincount(idx, minlength=k).float()
        sums = torch.zeros(k, device=flat.device).index_add_(0, idx, flat)
        used = counts > 0
        mean = sums / counts.clamp_min(1.0)
        self.entries = torch.where(used, decay * self.entries + (1.0 - decay) * mean, self.entries).sort().values


class SogQuantizer:
    """SOG quantization for one set of Gaussians (the row count must not change while it is in use);
    snaps the rotations of ``params`` to their stored values in place."""

    def __init__(self, params, config: SogQuantizeConfig | None = None) -> None:
        from pruning.rvq import kmeans

        cfg = self.config = config or SogQuantizeConfig()
        with torch.no_grad():
            n = self.n = params["means"].shape[0]
            params["quats"].copy_(smallest_three(params["quats"], cfg.quat_bits)[1])
            self.scales = ScalarCodebook(params["scales"], cfg.scale_levels)
            self.sh0 = ScalarCodebook(params["sh0"], cfg.sh0_levels)
            self.c = params["shN"].shape[1]
            assert self.c in SH_COEFFS.values(), f"{self.c} SH coefficients a channel is not a SOG degree"
            self.palette: torch.nn.Parameter | None = None
            self.optimizer = None
            if self.c:
                vectors = params["shN"].detach().float().transpose(1, 2).reshape(n, 3 * self.c)  # channel-major
                centers, self.labels = kmeans(vectors, palette_entries(n, cfg), iters=cfg.kmeans_iters, seed=cfg.seed)
                self.palette = torch.nn.Parameter(centers.contiguous())
                self.shN = ScalarCodebook(centers, cfg.shN_levels)
                self.optimizer = torch.optim.Adam([{"params": [self.palette], "lr": cfg.palette_lr, "name": "palette"}],
                                                  eps=1e-15)

    frozen = ("shN", "quats")
    """Per-Gaussian parameters to freeze in the fine-tuning: the SH bands the palette replaces and the
    rotations, which ``__init__`` snaps to their stored values."""

    def shN_colors(self, n: int) -> Tensor:
        """[N, C, 3] higher-band SH of every Gaussian from its palette entry."""
        if self.palette is None:
            return torch.zeros((n, 0, 3), device=self.scales.entries.device)
        vectors = self.shN.ste(self.palette)[self.labels]  # [N, 3C]
        return vectors.reshape(n, 3, self.c).transpose(1, 2)

    def modifier(self, gs, ctx):
        """Render modifier (reconstruct.splatting.Modifier): every attribute as scene.sog stores it."""
        params = ctx.params
        n = params["means"].shape[0]
        assert n == self.n, "the Gaussian count changed under the quantizer"
        means = params["means"]
        means_q = means + (log16(means.detach(), self.config.position_bits)[3] - means).detach()
        quats = params["quats"]
        quats_q = quats + (smallest_three(quats.detach(), self.config.quat_bits)[1] - quats).detach()
        alpha = torch.sigmoid(params["opacities"])
        alpha_q = alpha + (alpha8(params["opacities"].detach())[1] - alpha).detach()
        colors = torch.cat([self.sh0.ste(params["sh0"]), self.shN_colors(n)], 1)
        return gs.replace(means=means_q, quats=quats_q, scales=torch.exp(self.scales.ste(params["scales"])),
                          opacities=alpha_q, colors=colors)

    @torch.no_grad()
    def after_step(self, ctx) -> None:
        """Codebook updates once the per-Gaussian parameters have stepped: EMA, palette Adam."""
        d = self.config.ema_decay
        self.scales.ema_update(ctx.params["scales"], d)
        self.sh0.ema_update(ctx.params["sh0"], d)
        if self.optimizer is not None and self.palette is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.shN.ema_update(self.palette, d)

    @torch.no_grad()
    def encode(self, params) -> SogData:
        """The stored values of the current state: what ``modifier`` renders, as integer codes."""
        def np8(t: Tensor) -> np.ndarray:
            return t.cpu().numpy().astype(np.uint8)

        q, mins, maxs, _ = log16(params["means"].detach(), self.config.position_bits)
        texels, _ = smallest_three(params["quats"].detach(), self.config.quat_bits)
        alpha, _ = alpha8(params["opacities"].detach())
        sh: dict = {}
        if self.palette is not None:
            pal = self.shN.codes(self.palette).reshape(-1, 3, self.c).transpose(1, 2)  # [P, C, 3]
            sh = dict(shN_codebook=self.shN.padded(), shN_palette=np8(pal),
                      shN_labels=self.labels.cpu().numpy().astype(np.uint16))
        return SogData(
            means_q=q.cpu().numpy().astype(np.uint16), means_min=mins.double().cpu().numpy(),
            means_max=maxs.double().cpu().numpy(), quats=np8(texels),
            scales_codebook=self.scales.padded(), scales=np8(self.scales.codes(params["scales"])),
            sh0_codebook=self.sh0.padded(), sh0=np8(self.sh0.codes(params["sh0"]).reshape(-1, 3)),
            alpha=np8(alpha), **sh)


def sog_compact(data: SogData, *, R_world_file: np.ndarray | None = None):
    """The artifact (pruning.artifact.CompactSplats) of SOG's stored values, decoding to exactly
    ``data.decode()``: positions, rotations, scales and DC colors as float32, opacity and the SH
    palette as codebooks (what `recon eval --compressed` and `recon export` read).

    ``R_world_file`` [3,3]: the file's frame -> the world's; positions, rotations and the palette
    entries are turned by it (scales, opacity and DC colors do not depend on the frame)."""
    from pruning.artifact import Attribute, CompactSplats
    from reconstruct.rotation import rotate_sh, rotate_splats

    s = data.decode()
    if R_world_file is not None:
        s = rotate_splats(s, R_world_file)
    n = len(s)
    levels = np.clip(np.arange(256) / 255.0, _ALPHA_EPS, 1.0 - _ALPHA_EPS)
    logits = np.log(levels / (1.0 - levels)).astype(np.float32)[:, None]
    attrs = {"means": Attribute.raw(s.means, "float32"), "quats": Attribute.raw(s.quats, "float32"),
             "scales": Attribute.raw(s.log_scales, "float32"), "sh0": Attribute.raw(s.sh0, "float32"),
             "opacities": Attribute.vq(data.alpha, logits, dtype="float32"),
             "shN": Attribute.raw(s.shN.reshape(n, -1), "float32")}
    if data.shN_palette is not None and data.shN_codebook is not None and data.shN_labels is not None:
        palette = data.shN_codebook.astype(np.float32)[data.shN_palette]  # [P, C, 3], the artifact's row layout
        if R_world_file is not None:
            palette = rotate_sh(palette, R_world_file).astype(np.float32)
        attrs["shN"] = Attribute.vq(data.shN_labels, palette.reshape(len(palette), -1), dtype="float32")
    return CompactSplats(s.sh_degree, attrs)
