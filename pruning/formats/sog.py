"""PlayCanvas SOG v2: ``meta.json`` plus lossless WebP textures, bundled as a ``.sog`` zip or left
as a folder.

Every texture is W x H RGBA8 with ``W = ceil(sqrt(N) / 4) * 4`` and ``H = ceil(N / W / 4) * 4``;
texel ``t`` (row major) holds one splat, texels ``N..W*H-1`` are padding. The files:

- ``means_l.webp`` / ``means_u.webp``: low / high byte (rgb = x y z) of the 16-bit value
  ``round(65535 * (l - min) / (max - min))`` of ``l = sign(p) * log(|p| + 1)`` per axis, with
  ``meta.means.mins`` / ``maxs`` the per-axis min and max of ``l``; alpha 255.
- ``quats.webp``: the normalized quaternion (w x y z), negated so its largest-|c| component is
  positive; rgb = the other three in index order as ``round(255 * (c * sqrt(2) * 0.5 + 0.5))``,
  alpha = 252 + index of the largest.
- ``scales.webp``: rgb = indices into ``meta.scales.codebook`` (256 log scales, one 1-D k-means
  over all 3N values); alpha 255.
- ``sh0.webp``: rgb = indices into ``meta.sh0.codebook`` (256 f_dc values, same k-means),
  alpha = ``round(sigmoid(opacity) * 255)``.
- ``shN_centroids.webp`` / ``shN_labels.webp`` (SH degree >= 1): a k-means palette of
  ``meta.shN.count = min(64, 2^floor(log2(N / 1024))) * 1024`` SH vectors; labels texel rg =
  16-bit palette index (little endian), b 0, alpha 255; the centroid texture is
  ``64 * C`` wide (C = 3, 8 or 15 coefficients) and ``ceil(count / 64)`` high, palette entry ``e``
  coefficient ``j`` at texel ``((e % 64) * C + j, e // 64)`` with rgb = indices into
  ``meta.shN.codebook`` (256 values) for the r g b channel of that coefficient.

Frame: the 3DGS .ply frame (RDF), as our splats; no axis conversion. Texel order: splats follow
a Morton (Z-curve) order of their stored positions written row by row (``layout="morton"``, the
default; the other orders of pruning.formats._sog_layout are kept for size comparisons). The SH
palette texture is ordered by palette index and does not depend on the layout.

``quantize(splats)`` is SOG's quantization of finished splats (k-means codebooks, as a converter
does); ``pack(SogData)`` writes given codes without quantizing again (what `recon compress`
writes from the fine-tuned state, pruning.sog_quantize).

The zip stores entries uncompressed (WebP is already compressed), ``meta.json`` first, with a
fixed timestamp so equal splats give equal bytes.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from reconstruct.splats import Splats
from scenes.errors import ReconError

from ._kmeans import codebook_1d, kmeans
from ._sog_layout import LAYOUTS, grid_size, texel_order

SH_COEFFS = {0: 0, 1: 3, 2: 8, 3: 15}
FILES = {"means": ["means_l.webp", "means_u.webp"], "scales": ["scales.webp"], "quats": ["quats.webp"],
         "sh0": ["sh0.webp"], "shN": ["shN_centroids.webp", "shN_labels.webp"]}
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
MAX_META_BYTES = 64 << 20
_ALPHA_EPS = 0.25 / 255.0
__all__ = ["LAYOUTS", "SogData", "grid_size", "texel_order"]


# ----------------------------------------------------------------------------- webp

def _webp(texels: np.ndarray, width: int, height: int) -> bytes:
    """texels [M <= W*H, 4] uint8 -> lossless WebP of the W x H image (padding texels zero)."""
    from PIL import Image

    img = np.zeros((width * height, 4), np.uint8)
    img[:len(texels)] = texels
    buf = io.BytesIO()
    # exact=True keeps rgb under alpha 0 (sh0 texels of fully transparent splats)
    Image.fromarray(img.reshape(height, width, 4), "RGBA").save(
        buf, format="WEBP", lossless=True, quality=100, method=4, exact=True)
    return buf.getvalue()


def _unwebp(path: Path, name: str, data: bytes, count: int, *, width: int | None = None) -> np.ndarray:
    """Lossless WebP bytes -> [W*H, 4] uint8 texels, after checking the size against ``count``."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=["WEBP"]) as img:
            w, h = img.size
            if width is not None and w != width:
                raise ReconError(path, f"SOG texture {name} is {w} wide, expected {width}")
            if w * h < count:
                raise ReconError(path, f"SOG texture {name} is {w}x{h}, too small for {count} texels")
            if w * h > 2 * count + 65536:
                raise ReconError(path, f"SOG texture {name} is {w}x{h}, far larger than {count} texels need")
            rgba = np.asarray(img.convert("RGBA"), np.uint8)
    except ReconError:
        raise
    except Exception as err:  # Pillow raises several types for corrupt images
        raise ReconError(path, f"SOG texture {name} is not a readable WebP ({type(err).__name__}: "
                               f"{str(err).splitlines()[0] if str(err) else 'corrupt'})") from None
    return rgba.reshape(-1, 4)


# ----------------------------------------------------------------------------- stored values

@dataclass(frozen=True)
class SogData:
    """What a SOG file stores for N splats, in splat order (the texel layout is applied when
    packing): integer codes and the codebooks they index. ``decode`` is the reader's arithmetic,
    so a file packed from a SogData reads back as exactly ``decode()``."""

    means_q: np.ndarray
    """[N, 3] uint16 positions on the 16-bit grid of the log transform."""
    means_min: np.ndarray
    """[3] float64 per-axis minimum of ``sign(p) * log(|p| + 1)`` (meta.means.mins)."""
    means_max: np.ndarray
    """[3] float64 per-axis maximum (meta.means.maxs)."""
    quats: np.ndarray
    """[N, 4] uint8 smallest-three texels (rgb the other three components, alpha 252 + index)."""
    scales_codebook: np.ndarray
    """[<= 256] float32 ascending log scales."""
    scales: np.ndarray
    """[N, 3] uint8 indices into ``scales_codebook``."""
    sh0_codebook: np.ndarray
    """[<= 256] float32 ascending f_dc values."""
    sh0: np.ndarray
    """[N, 3] uint8 indices into ``sh0_codebook``."""
    alpha: np.ndarray
    """[N] uint8 ``round(255 * sigmoid(opacity))``."""
    shN_codebook: np.ndarray | None = None
    """[<= 256] float32 ascending SH coefficient values (SH degree >= 1)."""
    shN_palette: np.ndarray | None = None
    """[P, C, 3] uint8 indices into ``shN_codebook``: palette entry, coefficient, rgb channel."""
    shN_labels: np.ndarray | None = None
    """[N] uint16 palette entry of each splat."""

    def __len__(self) -> int:
        return len(self.means_q)

    @property
    def sh_degree(self) -> int:
        return 0 if self.shN_palette is None else {3: 1, 8: 2, 15: 3}[self.shN_palette.shape[1]]

    def subset(self, order: np.ndarray) -> "SogData":
        """The splats ``order`` picks, in that order (codebooks and palette unchanged)."""
        pick = {k: getattr(self, k)[order] for k in ("means_q", "quats", "scales", "sh0", "alpha")}
        if self.shN_labels is not None:
            pick["shN_labels"] = self.shN_labels[order]
        return replace(self, **pick)

    def decode_means(self) -> np.ndarray:
        """[N, 3] float64 positions."""
        span = self.means_max - self.means_min
        lt = self.means_min + np.where(span != 0, span, 1.0) * self.means_q.astype(np.float64) / 65535.0
        return np.sign(lt) * np.expm1(np.abs(lt))

    def decode(self) -> Splats:
        """Float32 splats, as our reader returns them from the file."""
        n = len(self)
        qt = self.quats
        tag = qt[:, 3].astype(np.int64) - 252
        others = _OTHERS[tag]
        small = (qt[:, :3].astype(np.float64) / 255.0 * 2.0 - 1.0) / np.sqrt(2.0)
        rows = np.arange(n)
        quats = np.zeros((n, 4))
        quats[rows[:, None], others] = small
        quats[rows, tag] = np.sqrt(np.maximum(0.0, 1.0 - (small * small).sum(axis=1)))
        alpha = np.clip(self.alpha / 255.0, _ALPHA_EPS, 1.0 - _ALPHA_EPS)
        shN = np.zeros((n, 0, 3))
        if self.shN_palette is not None and self.shN_labels is not None and self.shN_codebook is not None:
            shN = self.shN_codebook.astype(np.float64)[self.shN_palette[self.shN_labels.astype(np.int64)]]
        return Splats(
            means=self.decode_means().astype(np.float32), quats=quats.astype(np.float32),
            log_scales=self.scales_codebook[self.scales].astype(np.float32),
            opacity_logits=np.log(alpha / (1.0 - alpha)).astype(np.float32),
            sh0=self.sh0_codebook[self.sh0].astype(np.float32), shN=np.ascontiguousarray(shN, dtype=np.float32),
        )


_OTHERS = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])


def _log_t(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log(np.abs(x) + 1.0)


def _quats_texels(quats: np.ndarray) -> np.ndarray:
    """[N, 4] wxyz -> [N, 4] uint8 smallest-three texels."""
    q = quats.astype(np.float64)
    length = np.linalg.norm(q, axis=1, keepdims=True)
    q = np.where(length > 0, q / np.where(length > 0, length, 1.0), np.array([1.0, 0, 0, 0]))
    largest = np.argmax(np.abs(q), axis=1)
    rows = np.arange(len(q))
    q = q * np.where(q[rows, largest] < 0, -1.0, 1.0)[:, None]
    small = q[rows[:, None], _OTHERS[largest]] * np.sqrt(2.0)
    out = np.empty((len(q), 4), np.uint8)
    out[:, :3] = np.clip(np.round(255.0 * (small * 0.5 + 0.5)), 0, 255)
    out[:, 3] = 252 + largest
    return out


def palette_size(n: int) -> int:
    """Number of shN palette entries for ``n`` splats (the size splat-transform uses)."""
    if n <= 0:
        return 0
    return int(min(64, 2.0 ** math.floor(math.log2(n / 1024))) * 1024)


def _check(splats: Splats) -> None:
    if len(splats) == 0:
        raise ReconError(None, "cannot write a .sog with zero splats")
    if not all(np.isfinite(a).all() for a in (splats.means, splats.quats, splats.log_scales,
                                              splats.opacity_logits, splats.sh0, splats.shN)):
        raise ReconError(None, "cannot write a .sog: splats have non-finite values")


def quantize(splats: Splats, *, iterations: int = 10, palette: int | None = None) -> SogData:
    """SOG's quantization of finished splats (what a converter does after training): 1-D k-means
    codebooks of 256 entries, a k-means SH palette of ``palette`` entries (default
    ``palette_size(N)``, splat-transform's)."""
    _check(splats)
    n = len(splats)
    lt = _log_t(splats.means.astype(np.float64))  # [N, 3]
    mins, maxs = lt.min(axis=0), lt.max(axis=0)
    span = maxs - mins
    q16 = np.round(65535.0 * np.divide(lt - mins, span, out=np.zeros_like(lt), where=span > 0))
    scale_cb, scale_idx = codebook_1d(splats.log_scales)
    color_cb, color_idx = codebook_1d(splats.sh0)
    alpha = np.round(255.0 / (1.0 + np.exp(-splats.opacity_logits.astype(np.float64))))
    sh: dict = {}
    c = SH_COEFFS[splats.sh_degree]
    if c:
        count = palette or palette_size(n)
        vectors = splats.shN.transpose(0, 2, 1).reshape(n, 3 * c)  # [N, 3C] channel-major, as f_rest
        centroids, labels = kmeans(vectors, count, iterations)  # [count, 3C], [N]
        sh_cb, sh_idx = codebook_1d(centroids)  # sh_idx [count, 3C]
        sh = dict(shN_codebook=sh_cb, shN_palette=sh_idx.reshape(len(centroids), 3, c).transpose(0, 2, 1).copy(),
                  shN_labels=labels.astype(np.uint16))
    return SogData(np.clip(q16, 0, 65535).astype(np.uint16), mins, maxs, _quats_texels(splats.quats),
                   scale_cb, scale_idx, color_cb, color_idx, alpha.astype(np.uint8), **sh)


def pack(data: SogData, *, layout: str = "morton") -> dict[str, bytes]:
    """The SOG files by name: ``meta.json`` first, then the WebP textures, splats in ``layout``'s
    texel order (pruning.formats._sog_layout)."""
    n = len(data)
    width, height = grid_size(n)
    s = data.subset(texel_order(data.decode_means(), layout))
    out: dict[str, bytes] = {}
    opaque = np.full((n, 1), 255, np.uint8)
    q16 = s.means_q
    out["means_l.webp"] = _webp(np.concatenate([(q16 & 0xFF).astype(np.uint8), opaque], 1), width, height)
    out["means_u.webp"] = _webp(np.concatenate([(q16 >> 8).astype(np.uint8), opaque], 1), width, height)
    out["quats.webp"] = _webp(s.quats, width, height)
    out["scales.webp"] = _webp(np.concatenate([s.scales, opaque], 1), width, height)
    out["sh0.webp"] = _webp(np.concatenate([s.sh0, s.alpha[:, None]], 1), width, height)

    def numbers(a: np.ndarray) -> list[float]:
        return [float(v) for v in np.asarray(a).reshape(-1)]

    def codebook(a: np.ndarray) -> list[float]:  # the shortest text that reads back as the same float32
        return [float(str(v)) for v in np.asarray(a, np.float32).reshape(-1)]

    meta = {
        "version": 2, "asset": {"generator": "recon"}, "count": n,
        "means": {"mins": numbers(s.means_min), "maxs": numbers(s.means_max), "files": FILES["means"]},
        "scales": {"codebook": codebook(s.scales_codebook), "files": FILES["scales"]},
        "quats": {"files": FILES["quats"]},
        "sh0": {"codebook": codebook(s.sh0_codebook), "files": FILES["sh0"]},
    }
    if s.shN_palette is not None and s.shN_labels is not None and s.shN_codebook is not None:
        count, c = s.shN_palette.shape[:2]
        cent = np.zeros((math.ceil(count / 64) * 64, c, 4), np.uint8)
        cent[:count, :, :3] = s.shN_palette
        cent[:count, :, 3] = 255
        out["shN_centroids.webp"] = _webp(cent.reshape(-1, 4), 64 * c, math.ceil(count / 64))
        labels = s.shN_labels.astype(np.int64)
        lab = np.zeros((n, 4), np.uint8)
        lab[:, 0], lab[:, 1], lab[:, 3] = labels & 0xFF, labels >> 8, 255
        out["shN_labels.webp"] = _webp(lab, width, height)
        meta["shN"] = {"count": int(count), "bands": s.sh_degree, "codebook": codebook(s.shN_codebook),
                       "files": FILES["shN"]}
    return {"meta.json": json.dumps(meta, separators=(",", ":")).encode(), **out}


def files(splats: Splats, *, layout: str = "morton", iterations: int = 10) -> dict[str, bytes]:
    """The SOG files of finished splats (``pack(quantize(splats))``)."""
    return pack(quantize(splats, iterations=iterations), layout=layout)


def zip_files(parts: dict[str, bytes]) -> bytes:
    """The bundled ``.sog``: a zip of ``parts``, entries stored, fixed timestamps."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in parts.items():
            zf.writestr(zipfile.ZipInfo(name, ZIP_TIME), data)
    return buf.getvalue()


def encode(splats: Splats, *, layout: str = "morton", iterations: int = 10) -> bytes:
    """The bundled ``.sog`` of finished splats."""
    return zip_files(files(splats, layout=layout, iterations=iterations))


def write_data(path: str | Path, data: SogData, *, layout: str = "morton") -> Path:
    """Write already-quantized values (a SogData) as a bundled ``.sog``, atomically; nothing is
    quantized again, so the file reads back as ``data.decode()``."""
    from scenes.fileio import atomic_write_bytes

    path = Path(path)
    atomic_write_bytes(path, zip_files(pack(data, layout=layout)))
    return path


def write_folder(meta_path: str | Path, splats: Splats, **kwargs) -> Path:
    """Write the unbundled form: ``meta_path`` (meta.json) and the textures next to it."""
    from reconstruct.plyio import write_atomic

    meta_path = Path(meta_path)
    parts = files(splats, **kwargs)
    for name, data in parts.items():
        if name != "meta.json":
            write_atomic(meta_path.parent / name, data)
    write_atomic(meta_path, parts["meta.json"])  # last, so a reader never sees meta before textures
    return meta_path


# ----------------------------------------------------------------------------- decode

def _numbers(path: Path, meta: dict, key: str, field: str, length: int | None, max_len: int = 256) -> np.ndarray:
    value = meta[key].get(field) if isinstance(meta.get(key), dict) else None
    if not isinstance(value, list) or not value or (length is not None and len(value) != length) \
            or len(value) > max_len or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               for v in value):
        want = f"{length} numbers" if length else f"1..{max_len} numbers"
        raise ReconError(path, f"SOG meta.json {key}.{field} must be a list of {want}")
    arr = np.asarray(value, np.float64)
    if not np.isfinite(arr).all():
        raise ReconError(path, f"SOG meta.json {key}.{field} has non-finite values")
    return arr


def parse_meta(path: Path, raw: bytes) -> dict:
    """meta.json bytes -> the checked dict (version 2, count, every section and file name)."""
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ReconError(path, f"SOG meta.json is not valid JSON ({str(err).splitlines()[0]})") from None
    if not isinstance(meta, dict):
        raise ReconError(path, "SOG meta.json is not a JSON object")
    if "version" not in meta:
        raise ReconError(path, "SOG v1 (meta.json without a version) is not supported, only version 2")
    if meta["version"] != 2:
        raise ReconError(path, f"SOG version {meta['version']!r} is not supported (2)")
    count = meta.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
        raise ReconError(path, f"SOG meta.json count must be a positive integer, got {count!r}")
    sections = ["means", "scales", "quats", "sh0"] + (["shN"] if "shN" in meta else [])
    for key in sections:
        part = meta.get(key)
        names = part.get("files") if isinstance(part, dict) else None
        if not isinstance(names, list) or len(names) != len(FILES[key]) or not all(
                isinstance(f, str) and f and "/" not in f and "\\" not in f and f not in (".", "..")
                for f in names):
            raise ReconError(path, f"SOG meta.json {key}.files must list {len(FILES[key])} file names")
    _numbers(path, meta, "means", "mins", 3)
    _numbers(path, meta, "means", "maxs", 3)
    _numbers(path, meta, "scales", "codebook", None)
    _numbers(path, meta, "sh0", "codebook", None)
    if "shN" in meta:
        sh = meta["shN"]
        if sh.get("bands") not in (1, 2, 3) or isinstance(sh.get("bands"), bool):
            raise ReconError(path, f"SOG meta.json shN.bands must be 1, 2 or 3, got {sh.get('bands')!r}")
        pc = sh.get("count")
        if not isinstance(pc, int) or isinstance(pc, bool) or not 1 <= pc <= 65536:
            raise ReconError(path, f"SOG meta.json shN.count must be 1..65536, got {pc!r}")
        _numbers(path, meta, "shN", "codebook", None)
    return meta


def _check_index(path: Path, what: str, codebook: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``idx`` unchanged after checking every index is inside ``codebook``."""
    if idx.size and int(idx.max()) >= len(codebook):
        raise ReconError(path, f"SOG {what} index {int(idx.max())} is past its {len(codebook)}-entry codebook")
    return idx


def decode_files(path: Path, meta_raw: bytes, load) -> Splats:
    """Splats from meta.json bytes and ``load(name) -> bytes`` for the textures it names."""
    meta = parse_meta(path, meta_raw)
    n = meta["count"]

    def tex(key: str, i: int = 0, **kw) -> np.ndarray:
        name = meta[key]["files"][i]
        texels = n
        if key == "shN" and i == 0:  # the palette texture holds count x C texels
            texels = meta["shN"]["count"] * SH_COEFFS[meta["shN"]["bands"]]
        return _unwebp(path, name, load(name), texels, **kw)

    lo, hi = tex("means", 0)[:n], tex("means", 1)[:n]
    q16 = lo[:, :3].astype(np.uint16) + (hi[:, :3].astype(np.uint16) << 8)
    qt = tex("quats")[:n]
    tag = qt[:, 3].astype(np.int64) - 252
    if ((tag < 0) | (tag > 3)).any():
        raise ReconError(path, f"SOG quats texel alpha {int(qt[(tag < 0) | (tag > 3), 3][0])} is not 252..255")
    scales_cb, sh0_cb = np.asarray(meta["scales"]["codebook"]), np.asarray(meta["sh0"]["codebook"])
    scales = _check_index(path, "scales", scales_cb, tex("scales")[:n, :3])
    c0 = tex("sh0")[:n]
    sh0 = _check_index(path, "sh0", sh0_cb, c0[:, :3])
    sh: dict = {}
    if "shN" in meta:
        bands, count = meta["shN"]["bands"], meta["shN"]["count"]
        c = SH_COEFFS[bands]
        cent = tex("shN", 0, width=64 * c)  # [rows * 64 * C, 4]
        lab = tex("shN", 1)[:n]
        labels = lab[:, 0].astype(np.int64) | (lab[:, 1].astype(np.int64) << 8)
        if labels.max() >= count:
            raise ReconError(path, f"SOG shN label {int(labels.max())} is past the {count}-entry palette")
        if labels.max() >= len(cent) // c:
            raise ReconError(path, f"SOG shN label {int(labels.max())} is past the centroid texture")
        palette = cent[:(len(cent) // c) * c, :3].reshape(-1, c, 3)  # [entries, C, rgb]
        sh_cb = np.asarray(meta["shN"]["codebook"])
        _check_index(path, "shN", sh_cb, palette[np.unique(labels)])  # the entries the splats use
        sh = dict(shN_codebook=sh_cb, shN_palette=palette, shN_labels=labels.astype(np.uint16))
    data = SogData(q16, np.asarray(meta["means"]["mins"], np.float64), np.asarray(meta["means"]["maxs"], np.float64),
                   qt, scales_cb, scales, sh0_cb, sh0, c0[:, 3].copy(), **sh)
    splats = data.decode()
    if not np.isfinite(splats.means).all():
        raise ReconError(path, "SOG positions overflow (means mins/maxs out of range)")
    return splats


def is_sog_zip(data: bytes) -> bool:
    """Zip magic and a ``meta.json`` entry."""
    if data[:4] != b"PK\x03\x04":
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return "meta.json" in zf.namelist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        return False


def decode(path: Path, data: bytes) -> Splats:
    """Splats from the bytes of a bundled ``.sog``."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise ReconError(path, f"not a readable .sog zip ({err})") from None

    limit = [MAX_META_BYTES]

    def load(name: str) -> bytes:
        """One entry, read through at most ``limit`` bytes of output whatever its header claims
        (a deflated entry could otherwise expand without bound)."""
        try:
            info = zf.getinfo(name)
        except KeyError:
            raise ReconError(path, f".sog has no {name}") from None
        try:
            with zf.open(info) as f:
                raw = f.read(limit[0] + 1)
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError, RuntimeError) as err:
            raise ReconError(path, f".sog entry {name} is corrupt "
                                   f"({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
        if len(raw) > limit[0]:
            raise ReconError(path, f".sog entry {name} is larger than {limit[0]} bytes")
        return raw

    with zf:
        if "meta.json" not in zf.NameToInfo:
            raise ReconError(path, "zip has no meta.json (not a .sog)")
        raw_meta = load("meta.json")
        count = parse_meta(path, raw_meta)["count"]
        # a lossless WebP of T texels stays below ~4.3 T bytes; T <= 2 * count + 65536 per texture
        limit[0] = 5 * 4 * (2 * count + 65536 * 15) + (1 << 20)
        return decode_files(path, raw_meta, load)


def read_folder(meta_path: Path) -> Splats:
    """Splats from an unbundled SOG folder, given its meta.json."""
    from reconstruct.plyio import read_bytes

    meta_path = Path(meta_path)

    def load(name: str) -> bytes:
        return read_bytes(meta_path.parent / name)

    raw = read_bytes(meta_path)
    if len(raw) > MAX_META_BYTES:
        raise ReconError(meta_path, f"SOG meta.json is {len(raw)} bytes, not a SOG meta file")
    return decode_files(meta_path, raw, load)
