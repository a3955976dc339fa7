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
a Morton (Z-curve) order of their centers written row by row (``layout="morton"``, the
default); ``"morton2d"`` lays the same sequence along a 2-D Z-curve over texel coordinates and
``"random"`` shuffles (both kept for size comparisons: on a smooth 16k-splat scene,
``_scenes.surface_splats``, the row-by-row order gave the smallest textures, 24% below random and
3% below ``morton2d``, whose jumps between curve blocks break WebP's left/top predictors; the
SH palette texture is ordered by palette index and does not depend on the layout).

The zip stores entries uncompressed (WebP is already compressed), ``meta.json`` first, with a
fixed timestamp so equal splats give equal bytes.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path

import numpy as np

from reconstruct.splats import Splats
from scenes.errors import ReconError

from ._kmeans import codebook_1d, kmeans
from .compressed_ply import morton_order

SH_COEFFS = {0: 0, 1: 3, 2: 8, 3: 15}
FILES = {"means": ["means_l.webp", "means_u.webp"], "scales": ["scales.webp"], "quats": ["quats.webp"],
         "sh0": ["sh0.webp"], "shN": ["shN_centroids.webp", "shN_labels.webp"]}
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
MAX_META_BYTES = 64 << 20
_ALPHA_EPS = 0.25 / 255.0
LAYOUTS = ("morton", "morton2d", "random")


# ----------------------------------------------------------------------------- layout

def grid_size(n: int) -> tuple[int, int]:
    """(width, height) of the textures for ``n`` splats, both multiples of 4."""
    width = max(4, math.ceil(math.sqrt(n) / 4) * 4)
    height = max(4, math.ceil(n / width / 4) * 4)
    return width, height


def _part1by1(v: np.ndarray) -> np.ndarray:
    """Spread the low 16 bits of ``v`` so bit i lands at bit 2i (uint64 arithmetic)."""
    v = v.astype(np.uint64) & np.uint64(0xFFFF)
    for shift, mask in ((8, 0x00FF00FF), (4, 0x0F0F0F0F), (2, 0x33333333), (1, 0x55555555)):
        v = (v | (v << np.uint64(shift))) & np.uint64(mask)
    return v


def texel_order(means: np.ndarray, layout: str = "morton", seed: int = 0) -> np.ndarray:
    """[N] int64: texel t holds splat ``order[t]``, for [N, 3] centers."""
    n = len(means)
    if layout == "random":
        return np.random.default_rng(seed).permutation(n).astype(np.int64)
    seq = morton_order(means)
    if layout == "morton":
        return seq
    if layout != "morton2d":
        raise ReconError(None, f"unknown SOG layout {layout!r} (one of {', '.join(LAYOUTS)})")
    width, _ = grid_size(n)
    cells = np.arange(n, dtype=np.int64)
    z = _part1by1(cells % width) | (_part1by1(cells // width) << np.uint64(1))
    order = np.empty(n, np.int64)
    order[np.argsort(z, kind="stable")] = seq  # the i-th cell along the 2-D curve gets seq[i]
    return order


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


# ----------------------------------------------------------------------------- encode

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
    others = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])[largest]  # [N, 3]
    small = q[rows[:, None], others] * np.sqrt(2.0)
    out = np.empty((len(q), 4), np.uint8)
    out[:, :3] = np.clip(np.round(255.0 * (small * 0.5 + 0.5)), 0, 255)
    out[:, 3] = 252 + largest
    return out


def palette_size(n: int) -> int:
    """Number of shN palette entries for ``n`` splats (the size splat-transform uses)."""
    if n <= 0:
        return 0
    return int(min(64, 2.0 ** math.floor(math.log2(n / 1024))) * 1024)


def files(splats: Splats, *, layout: str = "morton", iterations: int = 10) -> dict[str, bytes]:
    """The SOG files by name: ``meta.json`` first, then the WebP textures."""
    n = len(splats)
    if n == 0:
        raise ReconError(None, "cannot write a .sog with zero splats")
    if not all(np.isfinite(a).all() for a in (splats.means, splats.quats, splats.log_scales,
                                              splats.opacity_logits, splats.sh0, splats.shN)):
        raise ReconError(None, "cannot write a .sog: splats have non-finite values")
    width, height = grid_size(n)
    order = texel_order(splats.means, layout)
    s = splats.subset(order)
    out: dict[str, bytes] = {}

    lt = _log_t(s.means.astype(np.float64))  # [N, 3]
    mins, maxs = lt.min(axis=0), lt.max(axis=0)
    span = maxs - mins
    q16 = np.round(65535.0 * np.divide(lt - mins, span, out=np.zeros_like(lt), where=span > 0))
    q16 = np.clip(q16, 0, 65535).astype(np.uint16)
    opaque = np.full((n, 1), 255, np.uint8)
    out["means_l.webp"] = _webp(np.concatenate([(q16 & 0xFF).astype(np.uint8), opaque], 1), width, height)
    out["means_u.webp"] = _webp(np.concatenate([(q16 >> 8).astype(np.uint8), opaque], 1), width, height)

    out["quats.webp"] = _webp(_quats_texels(s.quats), width, height)

    scale_cb, scale_idx = codebook_1d(s.log_scales)
    out["scales.webp"] = _webp(np.concatenate([scale_idx, opaque], 1), width, height)

    color_cb, color_idx = codebook_1d(s.sh0)
    alpha = np.round(255.0 / (1.0 + np.exp(-s.opacity_logits.astype(np.float64))))
    out["sh0.webp"] = _webp(np.concatenate([color_idx, alpha.astype(np.uint8)[:, None]], 1), width, height)

    meta = {
        "version": 2, "asset": {"generator": "recon"}, "count": n,
        "means": {"mins": mins.tolist(), "maxs": maxs.tolist(), "files": FILES["means"]},
        "scales": {"codebook": scale_cb.tolist(), "files": FILES["scales"]},
        "quats": {"files": FILES["quats"]},
        "sh0": {"codebook": color_cb.tolist(), "files": FILES["sh0"]},
    }
    c = SH_COEFFS[s.sh_degree]
    if c:
        count = palette_size(n)
        vectors = s.shN.transpose(0, 2, 1).reshape(n, 3 * c)  # [N, 3C] channel-major, as f_rest
        centroids, labels = kmeans(vectors, count, iterations)  # [count, 3C], [N]
        sh_cb, sh_idx = codebook_1d(centroids)  # sh_idx [count, 3C]
        cent = np.zeros((math.ceil(count / 64) * 64, c, 4), np.uint8)
        cent[:count, :, :3] = sh_idx.reshape(count, 3, c).transpose(0, 2, 1)
        cent[:count, :, 3] = 255
        out["shN_centroids.webp"] = _webp(cent.reshape(-1, 4), 64 * c, math.ceil(count / 64))
        lab = np.zeros((n, 4), np.uint8)
        lab[:, 0], lab[:, 1], lab[:, 3] = labels & 0xFF, labels >> 8, 255
        out["shN_labels.webp"] = _webp(lab, width, height)
        meta["shN"] = {"count": count, "bands": s.sh_degree, "codebook": sh_cb.tolist(), "files": FILES["shN"]}
    return {"meta.json": json.dumps(meta, separators=(",", ":")).encode(), **out}


def encode(splats: Splats, *, layout: str = "morton", iterations: int = 10) -> bytes:
    """The bundled ``.sog`` (a zip of ``files``)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in files(splats, layout=layout, iterations=iterations).items():
            zf.writestr(zipfile.ZipInfo(name, ZIP_TIME), data)
    return buf.getvalue()


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


def _lookup(path: Path, what: str, codebook: np.ndarray, idx: np.ndarray) -> np.ndarray:
    if idx.size and int(idx.max()) >= len(codebook):
        raise ReconError(path, f"SOG {what} index {int(idx.max())} is past its {len(codebook)}-entry codebook")
    return codebook[idx]


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
    q16 = lo[:, :3].astype(np.float64) + 256.0 * hi[:, :3]
    mins = np.asarray(meta["means"]["mins"], np.float64)
    span = np.asarray(meta["means"]["maxs"], np.float64) - mins
    lt = mins + np.where(span != 0, span, 1.0) * q16 / 65535.0
    means = np.sign(lt) * np.expm1(np.abs(lt))

    qt = tex("quats")[:n]
    tag = qt[:, 3].astype(np.int64) - 252
    if ((tag < 0) | (tag > 3)).any():
        raise ReconError(path, f"SOG quats texel alpha {int(qt[(tag < 0) | (tag > 3), 3][0])} is not 252..255")
    others = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])[tag]
    small = (qt[:, :3].astype(np.float64) / 255.0 * 2.0 - 1.0) / np.sqrt(2.0)
    rows = np.arange(n)
    quats = np.zeros((n, 4))
    quats[rows[:, None], others] = small
    quats[rows, tag] = np.sqrt(np.maximum(0.0, 1.0 - (small * small).sum(axis=1)))

    log_scales = _lookup(path, "scales", np.asarray(meta["scales"]["codebook"]), tex("scales")[:n, :3])
    c0 = tex("sh0")[:n]
    sh0 = _lookup(path, "sh0", np.asarray(meta["sh0"]["codebook"]), c0[:, :3])
    alpha = np.clip(c0[:, 3] / 255.0, _ALPHA_EPS, 1.0 - _ALPHA_EPS)

    shN = np.zeros((n, 0, 3))
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
        shN = _lookup(path, "shN", np.asarray(meta["shN"]["codebook"]), palette[labels])
    splats = Splats(
        means=means.astype(np.float32), quats=quats.astype(np.float32),
        log_scales=log_scales.astype(np.float32),
        opacity_logits=np.log(alpha / (1.0 - alpha)).astype(np.float32),
        sh0=sh0.astype(np.float32), shN=np.ascontiguousarray(shN, dtype=np.float32),
    )
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
