"""Server-side rendering for the viewer: splats through the project's rasterizer (with
view-dependent SH color, which the browser renderer lacks) or any ``render_fn`` (NeRF runs),
at a resolution adapted to how long renders take.

A render function has the signature ``render_fn(T_world_cam [4,4], K [3,3], width, height)
-> image [height, width, 3]`` (float in [0, 1] or uint8); it may accept ``depth=True`` and
then return a depth map [height, width] (or [height, width, 1]) instead.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np

from reconstruct.splats import Splats

if TYPE_CHECKING:
    from reconstruct.raster import Backend


class RenderFn(Protocol):
    """``(T_world_cam [4,4] OpenCV camera-to-world, K [3,3], width, height) -> [H, W, 3]``."""

    def __call__(self, T_world_cam: np.ndarray, K: np.ndarray, width: int, height: int) -> np.ndarray: ...


@dataclass
class AdaptiveResolution:
    """Picks the render size so that one server render takes about ``target_s`` seconds."""

    target_s: float = 0.3
    """Wanted seconds per render (a few frames a second keeps orbiting usable)."""
    scale: float = 0.5
    """Current fraction of the client's viewport size that is rendered."""
    min_scale: float = 0.05
    """Lower bound of ``scale``."""
    max_scale: float = 1.0
    """Upper bound of ``scale`` (1 = the client's full viewport)."""
    last_s: float = field(default=0.0)
    """Seconds the last render took."""

    def size(self, width: int, height: int) -> tuple[int, int]:
        """Render size for a ``width`` x ``height`` viewport at the current scale (at least 16 px)."""
        return max(16, int(round(width * self.scale))), max(16, int(round(height * self.scale)))

    def record(self, seconds: float) -> None:
        """Update the scale after a render that took ``seconds``: render time grows with the
        pixel count, i.e. with scale squared, so the step is sqrt(target / taken), damped."""
        self.last_s = float(seconds)
        ratio = math.sqrt(self.target_s / max(seconds, 1e-4))
        ratio = min(max(ratio, 0.5), 2.0)
        self.scale = min(max(self.scale * ratio, self.min_scale), self.max_scale)


def default_device():
    """The accelerator when there is one, else the CPU (a torch.device)."""
    import torch

    return torch.device(torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


class SplatRenderer:
    """Renders a fixed :class:`Splats` set with ``reconstruct.raster.rasterize``; tensors are
    built once and reused for every view."""

    def __init__(self, splats: Splats, *, background: tuple[float, float, float] = (1.0, 1.0, 1.0), device=None,
                 backend: Backend = "auto") -> None:
        import torch

        self.backend = backend  # rasterize backend: "auto" (by device), "cpu", "gsplat", "reference"
        self.device = default_device() if device is None else device
        self.background = tuple(float(c) for c in background)
        self.sh_degree = splats.sh_degree
        t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32, device=self.device)  # noqa: E731
        self.means = t(splats.means)  # [N, 3]
        quats = splats.quats / np.maximum(np.linalg.norm(splats.quats, axis=1, keepdims=True), 1e-12)
        self.quats = t(quats)  # [N, 4] wxyz
        self.scales = t(splats.scales)  # [N, 3] activated
        self.opacities = t(splats.opacities)  # [N] activated
        self.colors = t(np.concatenate([splats.sh0[:, None, :], splats.shN], axis=1))  # [N, K, 3] SH

    def __call__(self, T_world_cam: np.ndarray, K: np.ndarray, width: int, height: int, *, depth: bool = False) -> np.ndarray:
        """[H, W, 3] float RGB in [0, 1], or with ``depth=True`` the [H, W] expected depth
        (NaN where the splats leave the pixel nearly empty)."""
        import torch

        from reconstruct.raster import rasterize

        assert T_world_cam.shape == (4, 4) and K.shape == (3, 3), (T_world_cam.shape, K.shape)
        viewmat = torch.as_tensor(np.linalg.inv(T_world_cam), dtype=torch.float32, device=self.device)[None]
        Ks = torch.as_tensor(K, dtype=torch.float32, device=self.device)[None]
        bg = torch.tensor([self.background], dtype=torch.float32, device=self.device)  # [1, 3]
        with torch.no_grad():
            images, alphas, _ = rasterize(
                self.means, self.quats, self.scales, self.opacities, self.colors, viewmat, Ks,
                int(width), int(height), sh_degree=self.sh_degree, backgrounds=bg,
                render_mode="ED" if depth else "RGB", backend=self.backend,
            )
        if depth:
            d = images[0, ..., 0].float().cpu().numpy()  # [H, W]
            a = alphas[0, ..., 0].float().cpu().numpy()
            return np.where(a > 0.5, d, np.nan).astype(np.float32)
        return images[0, ..., :3].clamp(0.0, 1.0).float().cpu().numpy()


def colorize_depth(depth: np.ndarray) -> np.ndarray:
    """[H, W] depth (NaN = empty) -> [H, W, 3] uint8 turbo image, near = red, far = blue, empty =
    black; the color range spans the 2nd to 98th percentile of the valid depths."""
    import matplotlib

    d = np.asarray(depth, dtype=np.float64).reshape(depth.shape[0], depth.shape[1])
    valid = np.isfinite(d)
    out = np.zeros((*d.shape, 3), np.uint8)
    if not valid.any():
        return out
    lo, hi = np.percentile(d[valid], [2.0, 98.0])
    t = np.clip((d - lo) / max(hi - lo, 1e-9), 0.0, 1.0)
    rgb = matplotlib.colormaps["turbo"](1.0 - t)[..., :3]
    out[valid] = (rgb[valid] * 255.0 + 0.5).astype(np.uint8)
    return out


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float [0, 1] or uint8 image [H, W, 3] -> uint8 [H, W, 3]."""
    if image.dtype == np.uint8:
        return image
    return (np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def timed_render(
    render_fn: Callable[..., np.ndarray],
    T_world_cam: np.ndarray,
    K: np.ndarray,
    width: int,
    height: int,
    *,
    depth: bool = False,
) -> tuple[np.ndarray, float]:
    """Call ``render_fn`` and return (uint8 [H, W, 3] image, seconds taken); depth is colorized."""
    t0 = time.perf_counter()
    if depth:
        out = colorize_depth(np.asarray(render_fn(T_world_cam, K, width, height, depth=True)))
    else:
        out = to_uint8(np.asarray(render_fn(T_world_cam, K, width, height)))
    seconds = time.perf_counter() - t0
    assert out.shape == (height, width, 3), (out.shape, height, width)
    return out, seconds
