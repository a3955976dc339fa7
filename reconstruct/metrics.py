"""Image quality metrics as the sparse-view papers compute them.

PSNR on [0, 1] images; SSIM with an 11x11 Gaussian window (sigma 1.5, K1 0.01, K2 0.03, valid
filtering, as the mip-NeRF/RegNeRF/FreeNeRF evaluation code); LPIPS (AlexNet variant) only when
its weights can be loaded from disk — there is no model hub here, so without weights the metric
is reported as unavailable with the reason, never estimated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F


def psnr(img: torch.Tensor, ref: torch.Tensor) -> float:
    """PSNR in dB of [..., H, W, 3] images in [0, 1]."""
    mse = torch.mean((img.clamp(0, 1) - ref) ** 2).item()
    return float("inf") if mse == 0 else -10.0 * float(torch.log10(torch.tensor(mse)))


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_map(img: torch.Tensor, ref: torch.Tensor, *, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel SSIM of [H, W, 3] images (valid region, [H-10, W-10, 3] for the 11x11 window)."""
    assert img.shape == ref.shape and img.ndim == 3, (img.shape, ref.shape)
    c1, c2 = 0.01**2, 0.03**2
    side = min(img.shape[0], img.shape[1])
    if side < window:  # images smaller than the window: the largest odd window that fits
        window = max(1, side - 1 + side % 2)
    g = _gaussian_window(window, sigma, torch.float64).to(img.device)
    x = img.clamp(0, 1).permute(2, 0, 1)[:, None].double()  # [3, 1, H, W]
    y = ref.permute(2, 0, 1)[:, None].double()

    def blur(z: torch.Tensor) -> torch.Tensor:  # separable valid filtering
        z = F.conv2d(z, g.view(1, 1, 1, -1))
        return F.conv2d(z, g.view(1, 1, -1, 1))

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return (num / den)[:, 0].permute(1, 2, 0).float()


def ssim(img: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean SSIM of [H, W, 3] images in [0, 1]."""
    return float(ssim_map(img, ref).mean())


def dssim_loss(img: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Differentiable (1 - SSIM) for training on [H, W, 3] images, zero padding (3DGS style).

    The 11x11 Gaussian window is applied as two 1D passes (11 + 11 taps instead of 121).
    """
    c1, c2 = 0.01**2, 0.03**2
    g = _gaussian_window(11, 1.5, img.dtype).to(img.device)
    gx, gy = g.view(1, 1, 1, 11), g.view(1, 1, 11, 1)
    x = img.permute(2, 0, 1)[:, None]  # [3, 1, H, W]
    y = ref.permute(2, 0, 1)[:, None]
    # one batched blur of the five maps: [15, 1, H, W]
    stack = torch.cat([x, y, x * x, y * y, x * y], 0)
    blurred = F.conv2d(F.conv2d(stack, gx, padding=(0, 5)), gy, padding=(5, 0))
    mu_x, mu_y, exx, eyy, exy = blurred.split(3, 0)
    sxx, syy, sxy = exx - mu_x**2, eyy - mu_y**2, exy - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return 1.0 - s.mean()


# ----------------------------------------------------------------------------- LPIPS (AlexNet)

_ALEX_LAYERS = [(3, 64, 11, 4, 2), (64, 192, 5, 1, 2), (192, 384, 3, 1, 1), (384, 256, 3, 1, 1), (256, 256, 3, 1, 1)]
_ALEX_CONV_IDS = [0, 3, 6, 8, 10]  # indices of the convs in torchvision's alexnet.features


class LpipsAlex(torch.nn.Module):
    """LPIPS v0.1 with an AlexNet trunk: normalized features, learned 1x1 weights, spatial mean.

    Weights: torchvision's ``alexnet-owt-7be5be79.pth`` (keys ``features.{0,3,6,8,10}.*``) and the
    LPIPS linear layers ``alex.pth`` (keys ``lin{0..4}.model.1.weight``).
    """

    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.convs = torch.nn.ModuleList(torch.nn.Conv2d(i, o, k, s, p) for i, o, k, s, p in _ALEX_LAYERS)
        self.lins = torch.nn.ModuleList(torch.nn.Conv2d(c, 1, 1, bias=False) for _, c, *_ in _ALEX_LAYERS)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

    def load(self, trunk: dict, lins: dict) -> "LpipsAlex":
        for conv, idx in zip(self.convs, _ALEX_CONV_IDS):
            assert isinstance(conv, torch.nn.Conv2d) and conv.bias is not None
            conv.weight.data.copy_(trunk[f"features.{idx}.weight"])
            conv.bias.data.copy_(trunk[f"features.{idx}.bias"])
        for i, lin in enumerate(self.lins):
            assert isinstance(lin, torch.nn.Conv2d)
            lin.weight.data.copy_(lins[f"lin{i}.model.1.weight"])
        return self.eval()

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        x = (x - self.shift) / self.scale
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            feats.append(x)
            if i < 2:
                x = F.max_pool2d(x, 3, 2)
        return feats

    @torch.no_grad()
    def forward(self, img: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """LPIPS distance of [H, W, 3] images in [0, 1] (lower is better)."""
        a = self._features(img.permute(2, 0, 1)[None] * 2 - 1)
        b = self._features(ref.permute(2, 0, 1)[None] * 2 - 1)
        total = torch.zeros(())
        for fa, fb, lin in zip(a, b, self.lins):
            na = fa / (fa.norm(dim=1, keepdim=True) + 1e-10)
            nb = fb / (fb.norm(dim=1, keepdim=True) + 1e-10)
            total = total + lin((na - nb) ** 2).mean()
        return total


@dataclass(frozen=True)
class LpipsStatus:
    model: LpipsAlex | None
    reason: str | None


def load_lpips(weights_dir: Path | None = None) -> LpipsStatus:
    """LPIPS model from ``weights_dir`` (or $RECON_LPIPS_DIR, or torch's hub cache); the reason if absent."""
    candidates = [weights_dir] if weights_dir else []
    if os.environ.get("RECON_LPIPS_DIR"):
        candidates.append(Path(os.environ["RECON_LPIPS_DIR"]))
    candidates.append(Path(torch.hub.get_dir()) / "checkpoints")
    for folder in candidates:
        trunk, lins = folder / "alexnet-owt-7be5be79.pth", folder / "alex.pth"
        if trunk.is_file() and lins.is_file():
            model = LpipsAlex().load(
                torch.load(trunk, map_location="cpu", weights_only=True),
                torch.load(lins, map_location="cpu", weights_only=True),
            )
            return LpipsStatus(model, None)
    where = ", ".join(str(c) for c in candidates)
    return LpipsStatus(None, f"LPIPS weights (alexnet-owt-7be5be79.pth + alex.pth) not found in {where}")


# ----------------------------------------------------------------------------- masked (DTU protocol)


def apply_mask(img: torch.Tensor, mask: torch.Tensor, background: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> torch.Tensor:
    """[H, W, 3] image with every pixel outside ``mask`` ([H, W] bool, True = object) set to ``background``."""
    assert mask.shape == img.shape[:2], (mask.shape, img.shape)
    bg = torch.tensor(background, dtype=img.dtype, device=img.device)
    return torch.where(mask[..., None].to(torch.bool), img, bg)


def masked_psnr(
    img: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor, background: tuple[float, float, float] = (0.0, 0.0, 0.0)
) -> float:
    """DTU / RegNeRF object PSNR of [H, W, 3] images: both images get ``background`` (black)
    outside the object mask, then the usual PSNR over the whole image (background pixels count,
    with zero error), as RegNeRF's masked evaluation does."""
    return psnr(apply_mask(img.clamp(0, 1), mask, background), apply_mask(ref, mask, background))


def masked_ssim(
    img: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor, background: tuple[float, float, float] = (0.0, 0.0, 0.0)
) -> float:
    """DTU / RegNeRF object SSIM: both images get ``background`` outside the mask, then the
    11x11 Gaussian SSIM averaged over the whole (valid) image."""
    return ssim(apply_mask(img.clamp(0, 1), mask, background), apply_mask(ref, mask, background))
