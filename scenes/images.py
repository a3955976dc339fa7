"""Image files of a scene: picking the right downscaled folder, checking sizes, lazy loading.

Every reader describes its images the same way: the files to read, their size on disk, and the
size the scene serves them at. ``FrameLoader`` then turns frame i into a [H, W, 3] float32
array: decode, composite alpha on the background, undistort, box-filter resize.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from scenes.distortion import needs_undistortion, undistort_image
from scenes.errors import ReconError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_FOLDER_RE = re.compile(r"^images(?:_(\d+))?$")


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by file name."""
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: p.name)


def image_folders(root: Path) -> dict[int, Path]:
    """{downscale factor: folder} for ``images`` (1) and ``images_N`` (N) under ``root``."""
    found: dict[int, Path] = {}
    if root.is_dir():
        for p in root.iterdir():
            m = _FOLDER_RE.match(p.name)
            if m and p.is_dir():
                found[int(m.group(1) or 1)] = p
    return found


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header; ReconError when missing or not an image."""
    if not path.is_file():
        raise ReconError(path, "image file is missing")
    try:
        with Image.open(path) as im:
            return int(im.width), int(im.height)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ReconError(path, f"unreadable image ({type(err).__name__})") from None


def uniform_size(paths: Sequence[Path]) -> tuple[int, int]:
    """Check every file exists and is readable and all share one size; return (width, height)."""
    if not paths:
        raise ValueError("no image paths")
    size = image_size(paths[0])
    for p in paths[1:]:
        s = image_size(p)
        if s != size:
            raise ReconError(p, f"image is {s[0]}x{s[1]} but {paths[0].name} is {size[0]}x{size[1]}; sizes must match")
    return size


def check_resample_args(root: Path, downscale: float | None, resolution: int | None) -> None:
    if downscale is not None and resolution is not None:
        raise ReconError(root, "give --downscale or --resolution, not both")
    if downscale is not None and not (np.isfinite(downscale) and downscale > 0):
        raise ReconError(root, f"--downscale must be a positive number, got {downscale}")
    if resolution is not None and resolution < 1:
        raise ReconError(root, f"--resolution must be a positive width in pixels, got {resolution}")


def requested_factor(full_w: int, downscale: float | None, resolution: int | None, default: float) -> float:
    """The downscale factor relative to full resolution that the user asked for."""
    if resolution is not None:
        return full_w / resolution
    if downscale is not None:
        return float(downscale)
    return float(default)


def pick_factor(root: Path, available: Sequence[int], factor: float) -> int:
    """The coarsest stored factor that is not coarser than ``factor`` (never upsample)."""
    usable = [f for f in available if f <= factor * (1 + 1e-9)]
    if not usable:
        have = ", ".join(f"images_{f}" if f > 1 else "images" for f in sorted(available))
        raise ReconError(root, f"no image folder fine enough for downscale {factor:g} (have {have})")
    return max(usable)


@dataclass(frozen=True)
class Resample:
    """Sizes involved in serving one scene's images."""

    source_size: tuple[int, int]
    """(width, height) of the files as stored."""
    target_size: tuple[int, int]
    """(width, height) the scene serves."""
    downscale: float
    """Full-resolution width / served width."""

    @property
    def resized(self) -> bool:
        return self.source_size != self.target_size


def plan_resample(
    folder: Path,
    *,
    full_size: tuple[int, int],
    folder_factor: int,
    source_size: tuple[int, int],
    factor: float,
    resolution: int | None,
) -> Resample:
    """Served size for images stored at ``source_size`` in a folder downscaled by ``folder_factor``.

    Checks that the stored size agrees with ``full_size / folder_factor`` (within a pixel or 1%).
    """
    full_w, full_h = full_size
    src_w, src_h = source_size
    exp_w, exp_h = full_w / folder_factor, full_h / folder_factor
    if abs(src_w - exp_w) > max(1.0, 0.01 * exp_w) or abs(src_h - exp_h) > max(1.0, 0.01 * exp_h):
        raise ReconError(
            folder, f"images are {src_w}x{src_h} but the cameras expect about {exp_w:.0f}x{exp_h:.0f} here"
        )
    if resolution is not None:
        target = (int(resolution), max(1, int(round(src_h * resolution / src_w))))
    elif abs(factor - folder_factor) < 1e-9:
        target = (src_w, src_h)
    else:
        r = folder_factor / factor
        target = (max(1, int(round(src_w * r))), max(1, int(round(src_h * r))))
    return Resample(source_size=(src_w, src_h), target_size=target, downscale=full_w / target[0])


def decode(path: Path, background: tuple[float, float, float]) -> np.ndarray:
    """[h, w, 3] float32 in [0, 1]; alpha composited over ``background``."""
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float32) / 65535.0
                arr = np.repeat(arr[..., None], 3, axis=2)
                return np.clip(arr, 0.0, 1.0)
            has_alpha = mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info)
            arr = np.asarray(im.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise ReconError(path, "image file is missing") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ReconError(path, f"cannot decode image ({err})".replace("\n", " ")) from None
    if has_alpha:
        rgb, a = arr[..., :3], arr[..., 3:4]
        arr = rgb * a + np.asarray(background, dtype=np.float32) * (1.0 - a)
    return np.ascontiguousarray(arr, dtype=np.float32)


def box_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize [h, w, C] float32 to (width, height) = ``size`` with PIL's box (area) filter."""
    w, h = size
    chans = [np.asarray(Image.fromarray(image[..., c]).resize((w, h), Image.Resampling.BOX)) for c in range(image.shape[2])]
    return np.stack(chans, axis=2).astype(np.float32)


class FrameLoader:
    """Callable ``i -> [H, W, 3] float32`` for ``SceneData.loader`` (holds no cache itself)."""

    def __init__(
        self,
        paths: Sequence[Path],
        resample: Resample,
        *,
        background: tuple[float, float, float] = (0.0, 0.0, 0.0),
        Ks: np.ndarray | None = None,
        coeffs: np.ndarray | None = None,
        model: str = "pinhole",
    ) -> None:
        """``Ks`` [F, 3, 3] at the served size and ``coeffs`` [F, 6] describe the lens (for undistortion).

        Images are resized first and undistorted at the served size (as nerfstudio does with its
        images_N folders): the warp is smooth, and remapping the small image is much cheaper.
        """
        self.paths = tuple(paths)
        self.resample = resample
        self.background = background
        self.Ks = Ks
        self.coeffs = coeffs
        self.model = model

    def __call__(self, i: int) -> np.ndarray:
        path = self.paths[i]
        img = decode(path, self.background)
        if (img.shape[1], img.shape[0]) != self.resample.source_size:
            w, h = self.resample.source_size
            raise ReconError(path, f"image is {img.shape[1]}x{img.shape[0]}, expected {w}x{h}")
        if self.resample.resized:
            img = box_resize(img, self.resample.target_size)
        if self.coeffs is not None and self.Ks is not None and needs_undistortion(self.coeffs[i], self.model):
            img = undistort_image(img, self.Ks[i], self.coeffs[i], self.model, fill=self.background)
        return np.clip(img, 0.0, 1.0).astype(np.float32, copy=False)
