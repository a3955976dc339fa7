"""The one scene record every reader returns.

Conventions: cameras are OpenCV (x right, y down, z forward); ``T_world_cam`` maps camera
coordinates to (normalized) world coordinates; intrinsics are given at the output resolution
(after downscale). The normalization applied to the dataset's own world frame is kept so poses
and points can be mapped back: ``x_world = T_world_orig @ x_orig`` (a similarity: scale * R, t).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np

SceneFormat = Literal["blender", "llff", "colmap", "nerfstudio", "dtu", "photos", "synthetic"]
"""``photos`` is a folder of photos without poses: ``detect_format`` names it, no reader returns it."""


@dataclass(frozen=True)
class SceneData:
    """A reconstructed-from-photos scene: frames, cameras, optional sparse points, split."""

    format: SceneFormat
    """Which reader produced it."""
    root: Path
    """Folder the scene was read from."""
    image_paths: tuple[Path, ...]
    """One image file per frame, in frame order (empty paths allowed for in-memory scenes)."""
    Ks: np.ndarray
    """[F, 3, 3] float64 pinhole intrinsics at (width, height)."""
    T_world_cam: np.ndarray
    """[F, 4, 4] float64 camera-to-world, OpenCV convention, normalized world."""
    width: int
    """Image width in pixels after downscale."""
    height: int
    """Image height in pixels after downscale."""
    train_ids: tuple[int, ...]
    """Frame indices used for training."""
    test_ids: tuple[int, ...]
    """Frame indices held out for evaluation."""
    near: float
    """Near bound of the content along camera z (normalized units)."""
    far: float
    """Far bound of the content along camera z (normalized units)."""
    T_world_orig: np.ndarray = field(default_factory=lambda: np.eye(4))
    """[4, 4] similarity mapping the dataset's frame to the normalized world frame."""
    scale: float = 1.0
    """Scale factor inside ``T_world_orig``."""
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Background color for compositing (white for Blender)."""
    distortion: np.ndarray | None = None
    """[F, 6] OpenCV k1 k2 p1 p2 k3 k4 of the source images (images are served undistorted)."""
    points: np.ndarray | None = None
    """[P, 3] float64 sparse points from the dataset (normalized world); may see test views."""
    point_colors: np.ndarray | None = None
    """[P, 3] uint8 colors of ``points``."""
    downscale: float = 1.0
    """Factor the source images were divided by."""
    loader: Callable[[int], np.ndarray] | None = field(default=None, repr=False, compare=False)
    """Loads frame i as [H, W, 3] float32 in [0, 1] at (width, height); readers set it."""
    _cache: dict = field(default_factory=dict, repr=False, compare=False)
    camera_model: str = "pinhole"
    """Lens model of the source images: "pinhole", "opencv" or "opencv_fisheye" (``distortion``'s meaning)."""
    mask_loader: Callable[[int], np.ndarray] | None = field(default=None, repr=False, compare=False)
    """Loads frame i's object mask as [H, W] bool (True = object) at (width, height); None = no masks."""

    @property
    def n_frames(self) -> int:
        return len(self.T_world_cam)

    @property
    def has_points(self) -> bool:
        return self.points is not None and len(self.points) > 0

    @property
    def has_masks(self) -> bool:
        return self.mask_loader is not None

    def mask(self, i: int) -> np.ndarray:
        """Object mask of frame ``i`` as [H, W] bool (True = object), loaded on first use and cached."""
        key = ("mask", i)
        if key not in self._cache:
            if self.mask_loader is None:
                raise ValueError("scene has no object masks")
            m = self.mask_loader(i)
            assert m.shape == (self.height, self.width) and m.dtype == np.bool_, (m.shape, m.dtype)
            self._cache[key] = m
        return self._cache[key]

    def image(self, i: int) -> np.ndarray:
        """Frame ``i`` as [H, W, 3] float32 in [0, 1], loaded on first use and cached."""
        if i not in self._cache:
            if self.loader is None:
                raise ValueError("scene has no image loader")
            img = self.loader(i)
            assert img.shape == (self.height, self.width, 3), (img.shape, self.height, self.width)
            self._cache[i] = img
        return self._cache[i]

    def images(self, ids: tuple[int, ...] | list[int]) -> np.ndarray:
        """[len(ids), H, W, 3] float32 stack of frames."""
        return np.stack([self.image(i) for i in ids])
