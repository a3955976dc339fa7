"""Sparse-view regularizers for the hash-grid NeRF.

- FreeNeRF frequency regularization, hash-grid form: the finer hash levels are hidden at the start
  and revealed on a linear schedule (``frequency_mask``); the encoding skips hidden levels.
- FreeNeRF occlusion regularization: penalize density in the first samples in front of the
  cameras (floaters that explain a training view but hide everything else).
- SparseNeRF depth ranking: inside local patches, the rendered depth must respect the order of a
  (monocular or sparse) depth prior, with a margin; only the order is trusted, not the scale.
- S3IM (stochastic structural similarity): SSIM computed on "virtual patches" assembled from the
  randomly sampled rays of the batch, repeated under several random permutations.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def frequency_mask(step: int, n_levels: int, *, end_step: int, start_levels: int = 2) -> torch.Tensor:
    """[n_levels] float mask of visible hash levels at ``step``.

    ``start_levels`` levels are visible from step 0; the rest become visible linearly until
    ``end_step``, the level being revealed gets a fractional weight (the schedule is continuous).
    ``end_step <= 0`` disables the regularization (all ones).
    """
    if end_step <= 0 or step >= end_step:
        return torch.ones(n_levels)
    visible = start_levels + (n_levels - start_levels) * step / end_step
    lv = torch.arange(n_levels, dtype=torch.float32)
    return (visible - lv).clamp(0.0, 1.0)


def occlusion_loss(sigma: torch.Tensor, n_reg_samples: int) -> torch.Tensor:
    """Mean density of the first ``n_reg_samples`` candidate samples of each ray; sigma [R, S]."""
    assert sigma.ndim == 2, sigma.shape
    return sigma[:, :n_reg_samples].mean()


def depth_ranking_loss(depth: torch.Tensor, prior: torch.Tensor, *, margin: float = 1e-4,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """SparseNeRF local depth ranking over patches: depth, prior [P, K] (K pixels of P patches).

    Random pairs (i, j) inside each patch: when the prior says i is closer than j, the loss is
    ``relu(depth_i - depth_j + margin)``, and symmetrically. Pairs the prior cannot order are skipped.
    """
    assert depth.shape == prior.shape and depth.ndim == 2, (depth.shape, prior.shape)
    n_p, k = depth.shape
    perm = torch.stack([torch.randperm(k, generator=generator) for _ in range(n_p)]).to(depth.device)
    d_j, p_j = depth.gather(1, perm), prior.gather(1, perm)
    sign = torch.sign(p_j - prior)  # +1: i closer than j according to the prior
    loss = F.relu(sign * (depth - d_j) + margin) * (sign != 0)
    return loss.sum() / (sign != 0).sum().clamp_min(1)


def _ssim_patch(x: torch.Tensor, y: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Mean SSIM of [1, 3, H, W] images with a uniform ``kernel`` window moved by ``stride``."""
    c1, c2 = 0.01**2, 0.03**2
    w = torch.full((3, 1, kernel, kernel), 1.0 / kernel**2, dtype=x.dtype, device=x.device)

    def blur(z):
        return F.conv2d(z, w, stride=stride, groups=3)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.mean()


def s3im_loss(pred: torch.Tensor, target: torch.Tensor, *, kernel: int = 4, stride: int = 4, repeats: int = 10,
              patch_height: int = 64, generator: torch.Generator | None = None) -> torch.Tensor:
    """1 - S3IM of ray colors pred, target [R, 3] (S3IM paper defaults: 4x4 kernel, stride 4, 10 repeats).

    The first repeat keeps the batch order, the others permute it; the concatenated rays form a
    [3, patch_height, R*repeats/patch_height] virtual image (R*repeats must be divisible by
    patch_height; extra rays are dropped).
    """
    assert pred.shape == target.shape and pred.ndim == 2 and pred.shape[1] == 3, (pred.shape, target.shape)
    n = pred.shape[0]
    perms = [torch.arange(n)] + [torch.randperm(n, generator=generator) for _ in range(repeats - 1)]
    idx = torch.cat(perms).to(pred.device)
    width = idx.numel() // patch_height
    assert width >= kernel, f"S3IM needs at least {kernel * patch_height // repeats + 1} rays, got {n}"
    idx = idx[: width * patch_height]
    x = pred[idx].T.reshape(1, 3, patch_height, width)
    y = target[idx].T.reshape(1, 3, patch_height, width)
    return 1.0 - _ssim_patch(x, y, kernel, stride)


def lr_lambda(step: int, *, total: int, warmup: int = 100, final_ratio: float = 0.03) -> float:
    """Learning-rate multiplier: linear warm-up, then exponential decay to ``final_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return math.exp(math.log(final_ratio) * frac)
