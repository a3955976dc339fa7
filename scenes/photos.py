"""A folder of photos without poses: find them, check they decode, read EXIF focal lengths.

Pixels are used as stored: EXIF orientation is ignored everywhere (here, in pose estimation and
in the readers), so sizes, intrinsics and images always agree with each other.
Focal length in pixels, when EXIF allows it: from the 35 mm equivalent
(``f_px = f35 / 36 mm * long side``), else from the lens focal length and the focal-plane
resolution (``f_px = f_mm * pixels per mm``, rescaled when the file was resized).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from scenes.errors import ReconError
from scenes.images import IMAGE_SUFFIXES, list_images

#: EXIF tags (Exif IFD 0x8769) this module reads.
_EXIF_IFD = 0x8769
_FOCAL_LENGTH = 0x920A
_FOCAL_35MM = 0xA405
_FOCAL_PLANE_XRES = 0xA20E
_FOCAL_PLANE_UNIT = 0xA210
_PIXEL_X_DIM = 0xA002
_MAKE, _MODEL = 0x010F, 0x0110
#: Millimetres per focal-plane resolution unit (2 = inch, 3 = cm, 4 = mm, 5 = micrometre).
_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}
FULL_FRAME_LONG_SIDE_MM = 36.0


@dataclass(frozen=True)
class Photo:
    """One photo of a pose-free folder."""

    path: Path
    width: int
    height: int
    focal_mm: float | None
    """Lens focal length from EXIF (mm), None when absent."""
    focal_35mm: float | None
    """35 mm equivalent focal length from EXIF (mm), None when absent."""
    focal_px: float | None
    """Focal length in pixels derived from EXIF (see the module docstring), None when unknown."""
    camera: str | None
    """EXIF make and model, None when absent."""

    def to_json(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def photo_folder(path: Path) -> Path | None:
    """The folder holding a pose-free scene's photos (``path`` itself, else ``path/images``), or None.

    It must hold at least 2 files with an image suffix (one image is no scene of any format).
    """
    for folder in (path, path / "images"):
        if folder.is_dir() and sum(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir()) >= 2:
            return folder
    return None


def _positive(value) -> float | None:
    """A positive finite number from an EXIF value (number, rational, or (num, den) pair), else None."""
    try:
        if isinstance(value, tuple) and len(value) == 2:
            value = float(value[0]) / float(value[1])
        v = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return v if v > 0 and v == v and v != float("inf") else None


def _exif_focal(im: Image.Image, width: int, height: int) -> tuple[float | None, float | None, float | None, str | None]:
    """(focal_mm, focal_35mm, focal_px, camera) from the file's EXIF; Nones when absent."""
    try:
        exif = im.getexif()
        ifd = exif.get_ifd(_EXIF_IFD)
    except Exception:  # Pillow raises several types on malformed EXIF blocks
        return None, None, None, None
    make, model = (str(exif.get(t, "")).strip("\x00 ") for t in (_MAKE, _MODEL))
    camera = " ".join(s for s in (make, model) if s) or None
    f_mm = _positive(ifd.get(_FOCAL_LENGTH))
    f35 = _positive(ifd.get(_FOCAL_35MM))
    f_px = None
    if f35 is not None:
        f_px = f35 / FULL_FRAME_LONG_SIDE_MM * max(width, height)
    elif f_mm is not None:
        xres = _positive(ifd.get(_FOCAL_PLANE_XRES))
        unit = _UNIT_MM.get(int(ifd.get(_FOCAL_PLANE_UNIT, 2) or 2))
        if xres is not None and unit is not None:
            f_px = f_mm * xres / unit
            orig_w = _positive(ifd.get(_PIXEL_X_DIM))
            if orig_w is not None:
                f_px *= width / orig_w
    return f_mm, f35, f_px, camera


def read_photo(path: Path) -> Photo:
    """Decode ``path`` fully (truncated files fail here) and read its size and EXIF focal length."""
    try:
        with Image.open(path) as im:
            width, height = int(im.width), int(im.height)
            focal = _exif_focal(im, width, height)
            im.load()
    except FileNotFoundError:
        raise ReconError(path, "photo is missing") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ReconError(path, f"unreadable or truncated photo ({err})".replace("\n", " ")) from None
    if width < 16 or height < 16:
        raise ReconError(path, f"photo is only {width}x{height} pixels")
    return Photo(path, width, height, *focal)


def list_photos(folder: str | Path) -> list[Photo]:
    """Every photo of a pose-free folder (or of its images/), sorted by name, each checked to decode.

    Raises ReconError naming the file for an unreadable or truncated photo, and naming the
    folder when it holds fewer than 2 photos.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ReconError(root, "photo folder does not exist")
    where = photo_folder(root) or root
    photos = [read_photo(p) for p in list_images(where)]
    if len(photos) < 2:
        raise ReconError(where, f"has {len(photos)} photo(s); at least 2 overlapping photos are needed")
    return photos


def one_camera(photos: list[Photo]) -> bool:
    """True when the photos look like one camera: same size, same EXIF camera and focal length."""
    keys = {(p.width, p.height, p.camera, None if p.focal_px is None else round(p.focal_px, 3)) for p in photos}
    return len(keys) == 1
