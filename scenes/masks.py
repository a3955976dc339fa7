"""Per-frame object masks: decode a mask file into a boolean [H, W] array at the served size.

Masks are stored as 8-bit grey or RGB(A) images with white = object (IDR / NeuS / DTU layout);
anti-aliased edges are resized as coverage (box filter) and thresholded at one half.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from scenes.errors import ReconError


def decode_mask(path: Path) -> np.ndarray:
    """[h, w] float32 coverage in [0, 1] (mean of the colour channels; alpha ignored)."""
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise ReconError(path, "mask file is missing") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ReconError(path, f"cannot decode mask ({err})".replace("\n", " ")) from None
    return arr


class MaskLoader:
    """Callable ``i -> [H, W] bool`` for ``SceneData.mask_loader`` (holds no cache itself)."""

    def __init__(self, paths: Sequence[Path], source_size: tuple[int, int], target_size: tuple[int, int]) -> None:
        """``source_size`` / ``target_size``: (width, height) of the files and of the served frames."""
        self.paths = tuple(paths)
        self.source_size = source_size
        self.target_size = target_size

    def __call__(self, i: int) -> np.ndarray:
        path = self.paths[i]
        cov = decode_mask(path)  # [h, w]
        if (cov.shape[1], cov.shape[0]) != self.source_size:
            w, h = self.source_size
            raise ReconError(path, f"mask is {cov.shape[1]}x{cov.shape[0]}, expected {w}x{h}")
        if self.source_size != self.target_size:
            cov = np.asarray(Image.fromarray(cov).resize(self.target_size, Image.Resampling.BOX), dtype=np.float32)
        return cov >= 0.5
