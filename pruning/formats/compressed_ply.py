"""PlayCanvas / SuperSplat compressed .ply: 16 bytes a splat (+ 1 byte per SH coefficient).

Layout (binary little endian), elements in this order:

- ``chunk`` x ceil(N/256), 18 float32: ``min_x min_y min_z max_x max_y max_z
  min_scale_x min_scale_y min_scale_z max_scale_x max_scale_y max_scale_z
  min_r min_g min_b max_r max_g max_b`` (readers also take the older 12-float chunk, whose
  colors are absolute 0..1 instead of chunk-normalized).
- ``vertex`` x N, 4 uint32: ``packed_position packed_rotation packed_scale packed_color``.
- ``sh`` x N (only for SH degree >= 1), uchar ``f_rest_0..f_rest_{3(K-1)-1}``, channel-major like
  the standard .ply.

Splats are sorted in Morton (Z-curve) order of their centers quantized to 1024 cells per axis of
the scene box (ties of more than 256 splats in one cell are re-sorted inside that cell's box), then
cut into chunks of 256 consecutive splats; chunk ``i`` holds splats ``256 i .. 256 i + 255``.

Per splat, with ``unorm(v, b) = clamp(floor(v * (2^b - 1) + 0.5), 0, 2^b - 1)`` and ``norm(v)``
the value mapped to 0..1 by its chunk's min/max (0 when the chunk's range is below 1e-5):

- position: ``unorm(norm(x), 11) << 21 | unorm(norm(y), 10) << 11 | unorm(norm(z), 11)``
- scale: the same 11/10/11 packing of the log scales (chunk min/max clamped to [-20, 20])
- color: ``r g b a`` bytes, high to low; rgb = unorm(norm(f_dc * SH_C0 + 0.5), 8),
  a = unorm(sigmoid(opacity), 8)
- rotation: quaternion (rot_0..3 = w x y z) normalized; index of the largest |component| in
  bits 31-30 (quaternion negated when that component is negative), the other three components in
  index order as 10 bits each of ``unorm(c * sqrt(2)/2 + 0.5, 10)``.
- SH byte: ``clamp(trunc((f / 8 + 0.5) * 256), 0, 255)``; decoded as ``(n - 0.5) * 8`` with
  ``n = (byte + 0.5) / 256`` (0 and 255 map to the ends, -4 and 4).

This is the layout splat-transform 2.7 writes and reads (the arithmetic here follows its float64
evaluation so our bodies match its output byte for byte, which the tests check).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reconstruct.splats import SH_C0, Splats
from scenes.errors import ReconError

from reconstruct import plyio as _plyio

CHUNK_SIZE = 256
CHUNK_PROPS_12 = ("min_x", "min_y", "min_z", "max_x", "max_y", "max_z",
                  "min_scale_x", "min_scale_y", "min_scale_z",
                  "max_scale_x", "max_scale_y", "max_scale_z")
CHUNK_PROPS_18 = CHUNK_PROPS_12 + ("min_r", "min_g", "min_b", "max_r", "max_g", "max_b")
VERTEX_PROPS = ("packed_position", "packed_rotation", "packed_scale", "packed_color")

_ALPHA_EPS = 0.25 / 255.0
"""Decoded alpha is kept in [eps, 1 - eps] so the logit is finite and re-encodes to the same byte."""


# ----------------------------------------------------------------------------- ordering

def _part1by2(v: np.ndarray) -> np.ndarray:
    """Spread the low 10 bits of ``v`` so bit i lands at bit 3i (uint32 arithmetic)."""
    v = v.astype(np.uint32) & np.uint32(0x3FF)
    v = (v ^ (v << np.uint32(16))) & np.uint32(0xFF0000FF)
    v = (v ^ (v << np.uint32(8))) & np.uint32(0x0300F00F)
    v = (v ^ (v << np.uint32(4))) & np.uint32(0x030C30C3)
    v = (v ^ (v << np.uint32(2))) & np.uint32(0x09249249)
    return v


def morton_codes(means: np.ndarray) -> np.ndarray | None:
    """[N] 30-bit Morton codes of [N, 3] centers quantized to 1024 cells per axis of their box,
    or None when the box is degenerate (all identical) or non-finite (then order is kept)."""
    p = means.astype(np.float64)
    lo, hi = p.min(axis=0), p.max(axis=0)
    length = hi - lo
    if not np.isfinite(length).all() or (length == 0).all():
        return None
    mul = np.divide(1024.0, length, out=np.zeros(3), where=length != 0)
    cells = np.minimum(1023.0, (p - lo) * mul).astype(np.uint32)  # truncation toward zero
    return (_part1by2(cells[:, 2]) << np.uint32(2)) + (_part1by2(cells[:, 1]) << np.uint32(1)) \
        + _part1by2(cells[:, 0])


def morton_order(means: np.ndarray) -> np.ndarray:
    """[N] int64 permutation putting [N, 3] centers in Morton order; runs of more than 256 splats
    sharing one code are ordered again inside their own (smaller) box."""
    order = np.arange(len(means), dtype=np.int64)
    if len(means) == 0:
        return order
    stack = [order]
    result = order
    # Iterative version of the recursive refinement: each entry is a view into ``result``.
    while stack:
        idx = stack.pop()
        codes = morton_codes(means[idx])
        if codes is None:
            continue
        perm = np.argsort(codes, kind="stable")
        idx[:] = idx[perm]
        codes = codes[perm]
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        ends = np.r_[starts[1:], len(codes)]
        for s, e in zip(starts, ends):
            if e - s > CHUNK_SIZE:
                stack.append(idx[s:e])
    return result


# ----------------------------------------------------------------------------- packing helpers

def _unorm(v: np.ndarray, bits: int) -> np.ndarray:
    t = (1 << bits) - 1
    return np.clip(np.floor(v * t + 0.5), 0, t).astype(np.uint32)


def _normalize(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """x [C, 256] mapped to [0, 1] by per-chunk lo/hi [C, 1] (0 for ranges below 1e-5)."""
    span = hi - lo
    t = np.divide(x - lo, span, out=np.zeros_like(x), where=span >= 1e-5)
    t = np.where(x <= lo, 0.0, np.where(x >= hi, 1.0, t))
    return t


def _pack_111011(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    return (_unorm(a, 11) << np.uint32(21)) | (_unorm(b, 10) << np.uint32(11)) | _unorm(c, 11)


def pack_rotation(quats: np.ndarray) -> np.ndarray:
    """[N, 4] wxyz quaternions -> [N] uint32 smallest-three codes (2-bit index, 3 x 10 bits)."""
    q = quats.astype(np.float64)
    length2 = (q * q).sum(axis=1)
    zero = length2 == 0
    q = np.where(zero[:, None], np.array([1.0, 0.0, 0.0, 0.0]), q)
    q = q * (1.0 / np.sqrt(np.where(zero, 1.0, length2)))[:, None]
    largest = np.zeros(len(q), np.int64)
    for i in range(1, 4):  # first index wins ties, like a strict '>' scan
        largest = np.where(np.abs(q[:, i]) > np.abs(q[np.arange(len(q)), largest]), i, largest)
    sign = np.where(q[np.arange(len(q)), largest] < 0, -1.0, 1.0)
    q = q * sign[:, None]
    code = largest.astype(np.uint32)
    norm = np.sqrt(2.0) * 0.5
    for i in range(4):
        keep = largest != i
        packed = _unorm(q[:, i] * norm + 0.5, 10)
        code = np.where(keep, (code << np.uint32(10)) | packed, code)
    return code.astype(np.uint32)


def unpack_rotation(code: np.ndarray) -> np.ndarray:
    """[N] uint32 smallest-three codes -> [N, 4] float64 unit wxyz quaternions."""
    code = code.astype(np.uint32)
    norm = 1.0 / (np.sqrt(2.0) * 0.5)
    abc = [((code >> np.uint32(shift)) & np.uint32(1023)).astype(np.float64) / 1023.0
           for shift in (20, 10, 0)]
    abc = [(v - 0.5) * norm for v in abc]
    m = np.sqrt(np.maximum(0.0, 1.0 - (abc[0] ** 2 + abc[1] ** 2 + abc[2] ** 2)))
    which = (code >> np.uint32(30)).astype(np.int64)
    out = np.empty((len(code), 4), np.float64)
    for w in range(4):
        sel = which == w
        others = [i for i in range(4) if i != w]
        out[sel, w] = m[sel]
        for j, i in enumerate(others):
            out[sel, i] = abc[j][sel]
    return out


# ----------------------------------------------------------------------------- encode

def encode(splats: Splats) -> bytes:
    """The full compressed .ply file as bytes (Morton-ordered; see module docstring)."""
    n = len(splats)
    if n == 0:
        raise ReconError(None, "cannot write a compressed .ply with zero splats")
    order = morton_order(splats.means)
    s = splats.subset(order)
    n_chunks = -(-n // CHUNK_SIZE)
    pad = n_chunks * CHUNK_SIZE - n

    def chunked(a: np.ndarray) -> np.ndarray:
        """[N] float64 -> [C, 256], the final chunk padded by repeating its last splat."""
        a = np.concatenate([a, np.repeat(a[-1:], pad)]) if pad else a
        return a.reshape(n_chunks, CHUNK_SIZE)

    chunk = np.zeros((n_chunks, 18), np.float32)
    fields = []
    # positions
    for axis in range(3):
        v = chunked(s.means[:, axis].astype(np.float64))
        lo, hi = v.min(axis=1, keepdims=True), v.max(axis=1, keepdims=True)
        chunk[:, axis], chunk[:, 3 + axis] = lo[:, 0], hi[:, 0]
        fields.append(_normalize(v, lo, hi))
    position = _pack_111011(*fields)
    # log scales, chunk range clamped to [-20, 20]
    fields = []
    for axis in range(3):
        v = chunked(s.log_scales[:, axis].astype(np.float64))
        lo = np.clip(v.min(axis=1, keepdims=True), -20.0, 20.0)
        hi = np.clip(v.max(axis=1, keepdims=True), -20.0, 20.0)
        chunk[:, 6 + axis], chunk[:, 9 + axis] = lo[:, 0], hi[:, 0]
        fields.append(_normalize(v, lo, hi))
    scale = _pack_111011(*fields)
    # colors: 0..1 values rounded to float32 before their chunk range is taken
    fields = []
    for c in range(3):
        v = chunked((s.sh0[:, c].astype(np.float64) * SH_C0 + 0.5).astype(np.float32).astype(np.float64))
        lo, hi = v.min(axis=1, keepdims=True), v.max(axis=1, keepdims=True)
        chunk[:, 12 + c], chunk[:, 15 + c] = lo[:, 0], hi[:, 0]
        fields.append(_normalize(v, lo, hi))
    alpha = chunked(1.0 / (1.0 + np.exp(-s.opacity_logits.astype(np.float64))))
    color = (_unorm(fields[0], 8) << np.uint32(24)) | (_unorm(fields[1], 8) << np.uint32(16)) \
        | (_unorm(fields[2], 8) << np.uint32(8)) | _unorm(alpha, 8)

    vertex = np.empty(n, np.dtype([(p, "<u4") for p in VERTEX_PROPS]))
    vertex["packed_position"] = position.reshape(-1)[:n]
    vertex["packed_rotation"] = pack_rotation(s.quats)
    vertex["packed_scale"] = scale.reshape(-1)[:n]
    vertex["packed_color"] = color.reshape(-1)[:n]

    elements = [("chunk", chunk.view(np.dtype([(p, "<f4") for p in CHUNK_PROPS_18])).reshape(n_chunks)),
                ("vertex", vertex)]
    k1 = s.shN.shape[1]
    if k1:
        rest = np.transpose(s.shN, (0, 2, 1)).reshape(n, 3 * k1).astype(np.float64)  # channel-major
        sh_bytes = np.clip(np.trunc((rest / 8.0 + 0.5) * 256.0), 0, 255).astype(np.uint8)
        sh = np.ascontiguousarray(sh_bytes).view(np.dtype([(f"f_rest_{i}", "u1") for i in range(3 * k1)]))
        elements.append(("sh", sh.reshape(n)))
    return _plyio.ply_bytes(elements, comments=["Generated by recon (PlayCanvas compressed ply layout)"])


# ----------------------------------------------------------------------------- decode

def _check_layout(path: Path, header: _plyio.PlyHeader) -> tuple[int, int]:
    """Validate elements/properties; returns (N, number of f_rest bytes per splat)."""
    names = [e.name for e in header.elements]
    extra = [x for x in names if x not in ("chunk", "vertex", "sh")]
    if extra or names[:2] != ["chunk", "vertex"]:
        raise ReconError(path, f"compressed .ply elements are {' '.join(names)}; "
                               "expected chunk, vertex and optionally sh")
    chunk, vertex, sh = header.element("chunk"), header.element("vertex"), header.element("sh")
    assert chunk is not None and vertex is not None  # names[:2] == ["chunk", "vertex"] checked above
    if chunk.names not in (list(CHUNK_PROPS_12), list(CHUNK_PROPS_18)) or any(t != "f4" for _, t in chunk.properties):
        raise ReconError(path, "compressed .ply chunk element must have the 12 or 18 float properties "
                               f"min_x..max_b; found {' '.join(chunk.names)}")
    if vertex.names != list(VERTEX_PROPS) or any(t != "u4" for _, t in vertex.properties):
        raise ReconError(path, "compressed .ply vertex element must be uint packed_position packed_rotation "
                               f"packed_scale packed_color; found {' '.join(vertex.names)}")
    if chunk.count != -(-vertex.count // CHUNK_SIZE):
        raise ReconError(path, f"compressed .ply has {chunk.count} chunks for {vertex.count} splats "
                               f"(expected {-(-vertex.count // CHUNK_SIZE)})")
    n_rest = 0
    if sh is not None:
        n_rest = len(sh.properties)
        if sh.names != [f"f_rest_{i}" for i in range(n_rest)] or any(t != "u1" for _, t in sh.properties):
            raise ReconError(path, "compressed .ply sh element must be uchar f_rest_0..f_rest_{M-1}")
        if n_rest not in (9, 24, 45):
            raise ReconError(path, f"compressed .ply sh element has {n_rest} coefficients "
                                   "(expected 9, 24 or 45)")
        if sh.count != vertex.count:
            raise ReconError(path, f"compressed .ply has {sh.count} sh rows for {vertex.count} splats")
    return vertex.count, n_rest


def decode(path: Path, data: bytes, header: _plyio.PlyHeader) -> Splats:
    """Float splats from a compressed .ply (in the file's Morton order)."""
    n, n_rest = _check_layout(path, header)
    body = _plyio.read_elements(path, data, header)
    chunk, vertex = body["chunk"], body["vertex"]
    ci = np.arange(n) // CHUNK_SIZE

    def lerp(suffix: str, t: np.ndarray) -> np.ndarray:
        """Chunk min/max named ``min_<suffix>``/``max_<suffix>`` interpolated at t [N]."""
        lo = chunk[f"min_{suffix}"].astype(np.float64)[ci]
        hi = chunk[f"max_{suffix}"].astype(np.float64)[ci]
        return lo * (1.0 - t) + hi * t

    def unorm(v: np.ndarray, shift: int, bits: int) -> np.ndarray:
        return ((v >> np.uint32(shift)) & np.uint32((1 << bits) - 1)).astype(np.float64) / ((1 << bits) - 1)

    pos, scl, col = vertex["packed_position"], vertex["packed_scale"], vertex["packed_color"]
    layout = ((21, 11), (11, 10), (0, 11))  # (shift, bits) of x, y, z in an 11/10/11 word
    means = np.stack([lerp(a, unorm(pos, shift, bits)) for a, (shift, bits) in zip("xyz", layout)], axis=1)
    log_scales = np.stack([lerp(f"scale_{a}", unorm(scl, shift, bits))
                           for a, (shift, bits) in zip("xyz", layout)], axis=1)
    rgb = [unorm(col, shift, 8) for shift in (24, 16, 8)]
    assert chunk.dtype.names is not None
    if "min_r" in chunk.dtype.names:
        rgb = [lerp(c, t) for c, t in zip("rgb", rgb)]
    sh0 = (np.stack(rgb, axis=1) - 0.5) / SH_C0
    alpha = np.clip(unorm(col, 0, 8), _ALPHA_EPS, 1.0 - _ALPHA_EPS)
    opacity = np.log(alpha / (1.0 - alpha))
    quats = unpack_rotation(vertex["packed_rotation"])
    k1 = n_rest // 3
    if k1:
        raw = body["sh"].view(np.uint8).reshape(n, n_rest).astype(np.float64)
        frac = np.where(raw == 0, 0.0, np.where(raw == 255, 1.0, (raw + 0.5) / 256.0))
        shN = ((frac - 0.5) * 8.0).reshape(n, 3, k1).transpose(0, 2, 1)
    else:
        shN = np.zeros((n, 0, 3))
    out = Splats(
        means=means.astype(np.float32), quats=quats.astype(np.float32),
        log_scales=log_scales.astype(np.float32), opacity_logits=opacity.astype(np.float32),
        sh0=sh0.astype(np.float32), shN=np.ascontiguousarray(shN, dtype=np.float32),
    )
    from reconstruct.ply import check_finite

    check_finite(path, out)
    return out
