"""Niantic .spz: version 3 (a gzip stream of a 16-byte header and attribute planes) and version 4
(a plaintext 32-byte header, a table of contents and one zstd frame per attribute plane).

Version 3 header (little endian, inside the gzip stream)::

    uint32 magic 0x5053474e ("NGSP")   uint32 version (3)   uint32 N
    uint8 sh_degree   uint8 fractional_bits (12)   uint8 flags (0x1 antialiased)   uint8 reserved 0

then, plane after plane (all N splats of one attribute before the next attribute):

- positions  N x 3 x 3 bytes: signed 24-bit fixed point, ``round(p * 2^12)``, little endian
- alphas     N bytes: ``round(sigmoid(opacity) * 255)``
- colors     N x 3 bytes: ``round(f_dc * 0.15 * 255 + 127.5)`` (f_dc itself, not SH_C0-scaled)
- scales     N x 3 bytes: ``round((log_scale + 10) * 16)``
- rotations  N x 4 bytes (v3): quaternion x y z w normalized, largest |component| index in bits
  31-30, the other three in index order as (sign bit, 9-bit ``|c| / sqrt(1/2) * 511``), with the
  quaternion negated so the dropped component is positive; the uint32 stored little endian.
  (v2, read only: 3 bytes ``x y z`` as ``q * 127.5 + 127.5`` with w >= 0.)
- sh         N x (K-1) x 3 bytes, coefficient-major with the color channel innermost (our
  ``shN[i, k, c]`` order): ``round(f * 128) + 128`` snapped to buckets of 8 for degree 1 and 16
  for higher degrees (Niantic's 5 and 4 bits), clamped to 0..255; decoded ``(b - 128) / 128``.

Version 4 (plaintext, little endian)::

    uint32 magic "NGSP"   uint32 version (4)   uint32 N
    uint8 sh_degree (0..4)   uint8 fractional_bits   uint8 flags (0x1 antialiased, 0x2 extensions)
    uint8 stream_count   uint32 toc_offset (32 unless extension records sit in between)   12 bytes 0

then at ``toc_offset`` one 16-byte entry per stream (uint64 compressed size, uint64 uncompressed
size) and the streams back to back: the same planes as v3 in the same order, each its own zstd
frame, a plane of size 0 (the SH of degree 0) not stored. Extension records (flag 0x2, between
the header and the table) are skipped. SH degree 4 planes hold 24 coefficients; reading keeps the
first 15 (our splats stop at degree 3).

Axes: spz stores RUB (x right, y up, z back, as OpenGL / three.js); our splats are RDF (OpenCV,
the 3DGS .ply frame). RDF -> RUB is a 180 degree turn about x: positions (x, -y, -z); quaternion
(w, x, -y, -z); SH coefficients of basis functions odd in y+z change sign
(indices 0 1 3 6 8 10 11 13 of the 15 higher-order coefficients). Reading applies the same map
back (it is its own inverse). Niantic's library and splat-transform read the file the same way,
and the gunzipped payload equals Niantic's own v3 writer byte for byte (tests check both).
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from pathlib import Path

import numpy as np

from reconstruct.splats import Splats
from scenes.errors import ReconError

MAGIC = 0x5053474E
VERSION = 3
FRACTIONAL_BITS = 12
COLOR_SCALE = 0.15
HEADER = struct.Struct("<IIIBBBB")
HEADER_V4 = struct.Struct("<IIIBBBBI12x")
TOC_ENTRY = struct.Struct("<QQ")
ZSTD_LEVEL = 12
MAX_ZSTD_RATIO = 32768
"""A zstd RLE block turns 4 bytes into at most 128 KiB; sizes claiming more than that are bogus."""
MAX_DEFLATE_RATIO = 1032
"""DEFLATE cannot expand data by more than ~1032:1; a header claiming more points than that is bogus."""

SH_FLIP_RDF_RUB = np.ones(15, np.float32)
SH_FLIP_RDF_RUB[[0, 1, 3, 6, 8, 10, 11, 13]] = -1.0
"""[15] sign of each higher-order SH coefficient under (x, y, z) -> (x, -y, -z)."""

_ALPHA_EPS = 0.25 / 255.0


def _round_half_away(v: np.ndarray) -> np.ndarray:
    """C's std::round (halves away from zero); numpy's round is half-to-even."""
    return np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))


def _to_u8(v: np.ndarray) -> np.ndarray:
    return np.clip(_round_half_away(v), 0, 255).astype(np.uint8)


def _pack_rotation(quats_wxyz: np.ndarray) -> np.ndarray:
    """[N, 4] wxyz (already in RUB) -> [N, 4] uint8, v3 smallest-three code in spz's xyzw order."""
    q = quats_wxyz[:, [1, 2, 3, 0]].astype(np.float32)  # -> x y z w
    length = np.sqrt((q * q).sum(axis=1, keepdims=True))
    q = np.where(length > 0, q / np.where(length > 0, length, 1), np.array([0, 0, 0, 1], np.float32))
    rows = np.arange(len(q))
    largest = np.zeros(len(q), np.int64)
    for i in range(1, 4):
        largest = np.where(np.abs(q[:, i]) > np.abs(q[rows, largest]), i, largest)
    negate = q[rows, largest] < 0
    code = largest.astype(np.uint32)
    sqrt1_2 = np.float32(0.70710678118654752)
    for i in range(4):
        keep = largest != i
        negbit = ((q[:, i] < 0) ^ negate).astype(np.uint32)
        mag = (np.float32(511) * (np.abs(q[:, i]) / sqrt1_2) + np.float32(0.5)).astype(np.uint32)
        mag = np.minimum(mag, 511)
        code = np.where(keep, (code << np.uint32(10)) | (negbit << np.uint32(9)) | mag, code)
    return code.astype("<u4").view(np.uint8).reshape(len(q), 4)


def _unpack_rotation(raw: np.ndarray) -> np.ndarray:
    """[N, 4] uint8 v3 codes -> [N, 4] float64 xyzw."""
    code = raw.copy().view("<u4").reshape(-1).astype(np.uint32)
    largest = (code >> np.uint32(30)).astype(np.int64)
    out = np.zeros((len(code), 4), np.float64)
    sum_sq = np.zeros(len(code))
    shift = np.zeros(len(code), np.uint32)
    for i in range(3, -1, -1):
        keep = largest != i
        part = code >> shift
        mag = (part & np.uint32(511)).astype(np.float64)
        neg = ((part >> np.uint32(9)) & np.uint32(1)).astype(bool)
        val = np.sqrt(0.5) * mag / 511.0
        val = np.where(neg, -val, val)
        out[:, i] = np.where(keep, val, 0.0)
        sum_sq += np.where(keep, val * val, 0.0)
        shift = np.where(keep, shift + np.uint32(10), shift)
    out[np.arange(len(code)), largest] = np.sqrt(np.maximum(0.0, 1.0 - sum_sq))
    return out


def _quantize_sh(values: np.ndarray, bucket: int) -> np.ndarray:
    q = _round_half_away(values.astype(np.float32) * np.float32(128.0)).astype(np.int64) + 128
    q = (q + bucket // 2) // bucket * bucket
    return np.clip(q, 0, 255).astype(np.uint8)


def planes(splats: Splats, *, sh1_bits: int = 5, sh_rest_bits: int = 4) -> list[bytes]:
    """The six attribute planes (positions, alphas, colors, scales, rotations, sh) in file order."""
    n, k1 = len(splats), splats.shN.shape[1]
    flip = np.array([1.0, -1.0, -1.0], np.float32)
    means = splats.means.astype(np.float32) * flip
    fixed = _round_half_away(means * np.float32(1 << FRACTIONAL_BITS))
    limit = 1 << 23
    if n and (not np.isfinite(fixed).all() or np.abs(fixed).max() >= limit):
        raise ReconError(None, f".spz stores positions as 24-bit fixed point with {FRACTIONAL_BITS} "
                               f"fractional bits: coordinates must stay within +-{limit >> FRACTIONAL_BITS}")
    fixed = fixed.astype(np.int32).reshape(-1)
    positions = np.stack([(fixed >> s) & 0xFF for s in (0, 8, 16)], axis=1).astype(np.uint8)
    alpha = np.float32(1) / (np.float32(1) + np.exp(-splats.opacity_logits.astype(np.float32)))
    alphas = _to_u8(alpha * np.float32(255))
    colors = _to_u8(splats.sh0.astype(np.float32) * np.float32(COLOR_SCALE * 255.0) + np.float32(127.5))
    scales = _to_u8((splats.log_scales.astype(np.float32) + np.float32(10)) * np.float32(16))
    q = splats.quats.astype(np.float32) * np.array([1.0, 1.0, -1.0, -1.0], np.float32)
    rotations = _pack_rotation(q)
    sh = np.zeros((n, k1, 3), np.uint8)
    if k1:
        rub = splats.shN.astype(np.float32) * SH_FLIP_RDF_RUB[:k1, None]
        sh[:, :3] = _quantize_sh(rub[:, :3], 1 << (8 - sh1_bits))
        sh[:, 3:] = _quantize_sh(rub[:, 3:], 1 << (8 - sh_rest_bits))
    return [positions.tobytes(), alphas.tobytes(), colors.tobytes(), scales.tobytes(),
            rotations.tobytes(), sh.tobytes()]


def payload(splats: Splats, *, sh1_bits: int = 5, sh_rest_bits: int = 4) -> bytes:
    """The uncompressed v3 header + planes (what gzip wraps)."""
    header = HEADER.pack(MAGIC, VERSION, len(splats), splats.sh_degree, FRACTIONAL_BITS, 0, 0)
    return header + b"".join(planes(splats, sh1_bits=sh1_bits, sh_rest_bits=sh_rest_bits))


def encode(splats: Splats, *, version: int = 3) -> bytes:
    """The .spz file. Version 3: gzip at zlib's default level 6 (as Niantic's library), mtime 0 so
    equal splats give equal bytes with one zlib build. Version 4: NGSP header, table of contents
    and the non-empty planes as zstd frames (level ``ZSTD_LEVEL``, content size recorded)."""
    if version == 3:
        return gzip.compress(payload(splats), compresslevel=6, mtime=0)
    if version != 4:
        raise ReconError(None, f".spz version {version} cannot be written (3 or 4)")
    import zstandard

    raw = [p for p in planes(splats) if p]
    cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True, write_checksum=False)
    packed = [cctx.compress(p) for p in raw]
    header = HEADER_V4.pack(MAGIC, 4, len(splats), splats.sh_degree, FRACTIONAL_BITS, 0, len(raw),
                            HEADER_V4.size)
    toc = b"".join(TOC_ENTRY.pack(len(c), len(r)) for c, r in zip(packed, raw))
    return header + toc + b"".join(packed)


def _bytes_per_point(version: int, sh_degree: int) -> int:
    return 9 + 1 + 3 + 3 + (4 if version >= 3 else 3) + 3 * ((sh_degree + 1) ** 2 - 1)


def decompress(path: Path, data: bytes) -> bytes:
    """The gzip payload, after checking the header's count against what the file can hold."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        head = d.decompress(data, HEADER.size)
    except zlib.error as err:
        raise ReconError(path, f"corrupt gzip stream in .spz ({err})") from None
    if len(head) < HEADER.size:
        raise ReconError(path, "truncated .spz: the gzip stream ends inside the 16-byte header")
    magic, version, n, degree, frac, flags, reserved = HEADER.unpack(head)
    if magic != MAGIC:
        raise ReconError(path, f"not an .spz file (magic 0x{magic:08x}, expected 0x{MAGIC:08x})")
    if version not in (2, 3):
        raise ReconError(path, f".spz version {version} is not supported (2 or 3)")
    if degree > 3:
        raise ReconError(path, f".spz SH degree {degree} is not supported (0..3)")
    if flags & ~0x1:
        raise ReconError(path, f".spz flags 0x{flags:02x} ask for extensions this reader does not know")
    if frac > 23:
        raise ReconError(path, f".spz fractional bits {frac} leave no integer bits")
    need = n * _bytes_per_point(version, degree)
    if need > len(data) * MAX_DEFLATE_RATIO + 1024:
        raise ReconError(path, f".spz header claims {n} splats ({need} bytes), more than "
                               f"{len(data)} compressed bytes can hold")
    try:
        body = d.decompress(d.unconsumed_tail, need + 1)
    except zlib.error as err:
        raise ReconError(path, f"corrupt gzip stream in .spz ({err})") from None
    if len(body) < need:
        raise ReconError(path, f"truncated .spz: header promises {n} splats ({need} bytes), "
                               f"stream holds {len(body)}")
    if len(body) > need or d.unconsumed_tail:
        raise ReconError(path, f".spz holds more data than its header's {n} splats")
    if not d.eof:
        raise ReconError(path, "truncated .spz: gzip stream has no end")
    return head + body


def _unzstd(path: Path, name: str, frame: bytes, size: int) -> bytes:
    """One zstd frame that must decompress to exactly ``size`` bytes; memory grows only with the
    output actually produced (a bogus size in the table allocates nothing)."""
    import zstandard

    out = bytearray()
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(frame), read_across_frames=False)
        while len(out) <= size:
            chunk = reader.read(min(1 << 20, size + 1 - len(out)))
            if not chunk:
                break
            out += chunk
    except zstandard.ZstdError as err:
        raise ReconError(path, f"corrupt zstd stream in .spz {name} plane ({err})") from None
    if len(out) != size:
        raise ReconError(path, f".spz {name} plane decompresses to {'more than ' if len(out) > size else ''}"
                               f"{len(out) if len(out) <= size else size} bytes, the table says {size}")
    return bytes(out)


PLANE_NAMES = ("positions", "alphas", "colors", "scales", "rotations", "sh")


def read_v4(path: Path, data: bytes) -> tuple[int, int, int, list[bytes]]:
    """A v4 file -> (N, sh_degree, fractional_bits, the six planes, an empty one for degree 0)."""
    if len(data) < HEADER_V4.size:
        raise ReconError(path, f"truncated .spz: {len(data)} bytes, the v4 header alone is {HEADER_V4.size}")
    magic, version, n, degree, frac, flags, count, toc = HEADER_V4.unpack_from(data)
    if version != 4:
        raise ReconError(path, f".spz with a plaintext NGSP header must be version 4, got {version}")
    if degree > 4:
        raise ReconError(path, f".spz SH degree {degree} is not supported (0..4)")
    if flags & ~0x3:
        raise ReconError(path, f".spz flags 0x{flags:02x} ask for features this reader does not know")
    if frac > 23:
        raise ReconError(path, f".spz fractional bits {frac} leave no integer bits")
    sizes = [n * 9, n, n * 3, n * 3, n * 4, n * ((degree + 1) ** 2 - 1) * 3]
    stored = [i for i, size in enumerate(sizes) if size]
    if count != len(stored):
        raise ReconError(path, f".spz table lists {count} streams, {n} splats of SH degree {degree} need {len(stored)}")
    if toc < HEADER_V4.size or (toc > HEADER_V4.size and not flags & 0x2):
        raise ReconError(path, f".spz table of contents at byte {toc} (expected {HEADER_V4.size})")
    offset = toc + count * TOC_ENTRY.size
    if offset > len(data):
        raise ReconError(path, f"truncated .spz: the table of contents ends at byte {offset}, file has {len(data)}")
    out = [b""] * 6
    for j, i in enumerate(stored):
        csize, usize = TOC_ENTRY.unpack_from(data, toc + j * TOC_ENTRY.size)
        if usize != sizes[i]:
            raise ReconError(path, f".spz {PLANE_NAMES[i]} plane is {usize} bytes, {n} splats need {sizes[i]}")
        if offset + csize > len(data):
            raise ReconError(path, f"truncated .spz: {PLANE_NAMES[i]} plane ends at byte {offset + csize}, "
                                   f"file has {len(data)}")
        if usize > csize * MAX_ZSTD_RATIO + 1024:
            raise ReconError(path, f".spz {PLANE_NAMES[i]} plane claims {usize} bytes from {csize} compressed")
        out[i] = _unzstd(path, PLANE_NAMES[i], data[offset:offset + csize], usize)
        offset += csize
    if offset != len(data):
        raise ReconError(path, f".spz has {len(data) - offset} bytes after its last stream")
    return n, degree, frac, out


def decode(path: Path, data: bytes) -> Splats:
    if data[:4] == b"NGSP":
        n, degree, frac, raw_planes = read_v4(path, data)
        version = 4
    else:
        raw = decompress(path, data)
        _, version, n, degree, frac, _, _ = HEADER.unpack(raw[:HEADER.size])
        body = raw[HEADER.size:]
        k1 = (degree + 1) ** 2 - 1
        sizes = [n * 9, n, n * 3, n * 3, n * (4 if version >= 3 else 3), n * k1 * 3]
        raw_planes, offset = [], 0
        for size in sizes:
            raw_planes.append(body[offset:offset + size])
            offset += size
    pos_b, alpha_b, color_b, scale_b, rot_b, sh_b = (np.frombuffer(p, np.uint8) for p in raw_planes)
    k_file = (degree + 1) ** 2 - 1
    degree = min(degree, 3)
    k1 = (degree + 1) ** 2 - 1
    sh_b = sh_b.reshape(n, k_file, 3)[:, :k1] if n else sh_b.reshape(0, k1, 3)
    p = pos_b.reshape(n * 3, 3).astype(np.int32)
    fixed = p[:, 0] | (p[:, 1] << 8) | (p[:, 2] << 16)
    fixed = np.where(fixed & 0x800000, fixed - (1 << 24), fixed)
    flip = np.array([1.0, -1.0, -1.0])
    means = fixed.reshape(n, 3).astype(np.float64) / (1 << frac) * flip
    alpha = np.clip(alpha_b.astype(np.float64) / 255.0, _ALPHA_EPS, 1.0 - _ALPHA_EPS)
    colors = (color_b.reshape(n, 3).astype(np.float64) / 255.0 - 0.5) / COLOR_SCALE
    log_scales = scale_b.reshape(n, 3).astype(np.float64) / 16.0 - 10.0
    if version >= 3:
        xyzw = _unpack_rotation(rot_b.reshape(n, 4))
    else:
        xyz = rot_b.reshape(n, 3).astype(np.float64) / 127.5 - 1.0
        xyzw = np.concatenate([xyz, np.sqrt(np.maximum(0.0, 1.0 - (xyz ** 2).sum(1, keepdims=True)))], 1)
    quats = xyzw[:, [3, 0, 1, 2]] * np.array([1.0, 1.0, -1.0, -1.0])
    shN = (sh_b.astype(np.float64) - 128.0) / 128.0 * SH_FLIP_RDF_RUB[:k1, None]
    return Splats(
        means=means.astype(np.float32), quats=quats.astype(np.float32),
        log_scales=log_scales.astype(np.float32),
        opacity_logits=np.log(alpha / (1.0 - alpha)).astype(np.float32),
        sh0=colors.astype(np.float32), shN=np.ascontiguousarray(shN, dtype=np.float32),
    )
