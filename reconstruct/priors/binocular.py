"""Binocular consistency (Binocular3DGS).

Binocular loss at a training view with rendered depth D [H,W]: shift the camera by b along its own
x axis (a stereo partner), render there, and warp that render back into the training view: a pixel
x of the training view sees the same surface at x - fx * b / D(x) in the partner. The warped image
is compared with the training photo, so the loss is small only when the rendered depth is right.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reconstruct.raster import dssim_loss
from reconstruct.priors.config import BinocularConfig


def shifted_camera(T_world_cam: torch.Tensor, baseline: float) -> torch.Tensor:
    """[C,4,4] cameras moved by ``baseline`` along their own x axis (OpenCV: right)."""
    assert T_world_cam.ndim == 3 and T_world_cam.shape[1:] == (4, 4), T_world_cam.shape
    out = T_world_cam.clone()
    out[:, :3, 3] = out[:, :3, 3] + baseline * out[:, :3, 0]
    return out


def warp_from_shifted(image_shifted: torch.Tensor, depth: torch.Tensor, fx: float | torch.Tensor,
                      baseline: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample the partner's image [H,W,3] into the reference view using reference depth [H,W].

    Returns the warped image [H,W,3] and a validity mask [H,W] (inside the partner image, depth > 0).
    """
    assert image_shifted.ndim == 3 and depth.shape == image_shifted.shape[:2], (image_shifted.shape, depth.shape)
    h, w = depth.shape
    dev = depth.device
    x = torch.arange(w, device=dev, dtype=depth.dtype)[None, :] + 0.5  # pixel centers at k + 0.5
    y = torch.arange(h, device=dev, dtype=depth.dtype)[:, None] + 0.5
    valid_depth = depth > 1e-6
    x_partner = x - fx * baseline / depth.clamp_min(1e-6)
    gx = x_partner / w * 2 - 1
    gy = (y / h * 2 - 1).expand(h, w)
    grid = torch.stack([gx, gy], -1)[None]  # [1,H,W,2]
    warped = F.grid_sample(image_shifted.permute(2, 0, 1)[None], grid, mode="bilinear",
                           padding_mode="border", align_corners=False)[0].permute(1, 2, 0)
    valid = valid_depth & (gx.abs() < 1)
    return warped, valid


class BinocularLoss:
    """Regularizer: photo-consistency of the training photo with a warped stereo-partner render."""

    name = "binocular"
    needs_depth = True

    def __init__(self, cfg: BinocularConfig) -> None:
        self.cfg = cfg

    def loss(self, ctx, render: torch.Tensor) -> torch.Tensor | None:
        weight = self.cfg.schedule.weight(ctx.step, self.cfg.weight, enabled=self.cfg.enabled)
        if weight == 0.0:
            return None
        view = ctx.view
        sign = 1.0 if ctx.rng("binocular").random() < 0.5 else -1.0
        baseline = sign * self.cfg.shift * ctx.scene_scale
        out, _, _ = ctx.render(shifted_camera(view.T_world_cam, baseline), view.K, mode="RGB")
        depth = render[0, ..., 3]
        warped, valid = warp_from_shifted(out[0, ..., :3], depth, view.K[0, 0, 0], baseline)
        if int(valid.sum()) < 16:
            return None
        m = valid[..., None].float()
        warped = warped * m + view.image * (1 - m)  # invalid pixels: no loss
        l1 = ((warped - view.image).abs() * m).sum() / (3 * m.sum())
        term = (1 - self.cfg.ssim_lambda) * l1 + self.cfg.ssim_lambda * dssim_loss(warped, view.image)
        return weight * term
