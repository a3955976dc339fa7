"""glTF 2.0 binary (.glb) with ``KHR_gaussian_splatting``: one POINTS primitive, float attributes.

Layout: the 12-byte GLB header (``glTF``, version 2, total length), a JSON chunk (padded with
spaces to 4 bytes) and a BIN chunk (padded with zeros). One buffer view and one accessor per
attribute, each view starting on a 4-byte boundary:

- ``POSITION`` VEC3 float (with the min / max glTF requires)
- ``COLOR_0`` VEC4 unsigned byte normalized: ``SH_C0 * f_dc + 0.5`` and opacity, the fallback
  color of a reader that draws points
- ``KHR_gaussian_splatting:ROTATION`` VEC4 float, unit quaternion x y z w
- ``KHR_gaussian_splatting:SCALE`` VEC3 float, linear standard deviations (``exp`` of ours)
- ``KHR_gaussian_splatting:OPACITY`` SCALAR float, linear 0..1 (``sigmoid`` of ours)
- ``KHR_gaussian_splatting:SH_DEGREE_0_COEF_0`` VEC3 float (r g b of f_dc)
- ``KHR_gaussian_splatting:SH_DEGREE_l_COEF_n`` VEC3 float for every n of each degree 1..3 present

The primitive's extension object is ``{"kernel": "ellipse", "colorSpace": "srgb_rec709_display",
"sortingMethod": "cameraDistance", "projection": "perspective"}``.

Axes: glTF is right-handed with +Y up; our splats are RDF (the 3DGS .ply frame). Writing turns the
scene 180 degrees about x, as spz.py does for RUB: positions (x, -y, -z), quaternion
(w, x, -y, -z), and the SH coefficients odd in y+z change sign. Reading applies the same map back.

The reader takes any accessor layout the core spec allows (byte strides, offsets, the normalized
integer types the extension permits for rotation, scale and opacity); sparse accessors and
external buffers are refused with a one-line error.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from reconstruct.splats import SH_C0, Splats
from scenes.errors import ReconError

from .spz import SH_FLIP_RDF_RUB

EXT = "KHR_gaussian_splatting"
GLB_MAGIC, JSON_CHUNK, BIN_CHUNK = 0x46546C67, 0x4E4F534A, 0x004E4942
FLOAT, UNSIGNED_BYTE = 5126, 5121
COMPONENTS = {5120: "i1", 5121: "u1", 5122: "<i2", 5123: "<u2", 5125: "<u4", 5126: "<f4"}
NORMALIZE = {5120: 127.0, 5121: 255.0, 5122: 32767.0, 5123: 65535.0}
WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}
COEFS = (3, 5, 7)
"""SH coefficients of degree 1, 2, 3."""
FLIP = np.array([1.0, -1.0, -1.0])
_ALPHA_LO, _ALPHA_HI = 1e-30, 1.0 - 1e-7
"""Linear opacity is clipped into the open interval so its logit is finite (float32 stores no
value between 1 - 6e-8 and 1)."""


def _sh_names(degree: int) -> list[str]:
    return [f"{EXT}:SH_DEGREE_{d}_COEF_{c}" for d in range(1, degree + 1) for c in range(COEFS[d - 1])]


def encode(splats: Splats) -> bytes:
    """The .glb bytes of ``splats`` (converted to glTF's +Y-up frame)."""
    n = len(splats)
    if n == 0:
        raise ReconError(None, "cannot write a .glb with zero splats")
    means = (splats.means.astype(np.float64) * FLIP).astype(np.float32)  # [N, 3]
    q = splats.quats.astype(np.float64)
    length = np.linalg.norm(q, axis=1, keepdims=True)
    q = np.where(length > 0, q / np.where(length > 0, length, 1.0), np.array([1.0, 0, 0, 0]))
    xyzw = (q * np.array([1.0, 1.0, -1.0, -1.0]))[:, [1, 2, 3, 0]].astype(np.float32)  # [N, 4]
    opacity = splats.opacities.astype(np.float32)  # [N]
    rgba = np.concatenate([np.clip(splats.sh0 * SH_C0 + 0.5, 0, 1), opacity[:, None]], axis=1)
    k1 = splats.shN.shape[1]
    sh = splats.shN.astype(np.float32) * SH_FLIP_RDF_RUB[:k1, None]  # [N, K-1, 3]
    attrs: list[tuple[str, np.ndarray, int, str, bool]] = [
        ("POSITION", means, FLOAT, "VEC3", False),
        ("COLOR_0", np.round(rgba * 255).astype(np.uint8), UNSIGNED_BYTE, "VEC4", True),
        (f"{EXT}:ROTATION", xyzw, FLOAT, "VEC4", False),
        (f"{EXT}:SCALE", np.exp(splats.log_scales.astype(np.float64)).astype(np.float32), FLOAT, "VEC3", False),
        (f"{EXT}:OPACITY", opacity, FLOAT, "SCALAR", False),
        (f"{EXT}:SH_DEGREE_0_COEF_0", splats.sh0.astype(np.float32), FLOAT, "VEC3", False),
    ] + [(name, sh[:, i], FLOAT, "VEC3", False) for i, name in enumerate(_sh_names(splats.sh_degree))]
    if not all(np.isfinite(a).all() for _, a, *_ in attrs):
        raise ReconError(None, "cannot write a .glb: splats have non-finite values (or scales overflow)")
    views, accessors, attributes, chunks, offset = [], [], {}, [], 0
    for i, (name, arr, ctype, atype, normalized) in enumerate(attrs):
        raw = np.ascontiguousarray(arr).tobytes()
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": len(raw), "target": 34962})
        acc = {"bufferView": i, "componentType": ctype, "count": n, "type": atype}
        if normalized:
            acc["normalized"] = True
        if name == "POSITION":
            acc["min"], acc["max"] = arr.min(0).tolist(), arr.max(0).tolist()
        accessors.append(acc)
        attributes[name] = i
        pad = -len(raw) % 4
        chunks.append(raw + bytes(pad))
        offset += len(raw) + pad
    gltf = {
        "asset": {"version": "2.0", "generator": "recon"},
        "extensionsUsed": [EXT],
        "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": attributes, "mode": 0, "extensions": {EXT: {
            "kernel": "ellipse", "colorSpace": "srgb_rec709_display",
            "sortingMethod": "cameraDistance", "projection": "perspective"}}}]}],
        "buffers": [{"byteLength": offset}], "bufferViews": views, "accessors": accessors,
    }
    text = json.dumps(gltf, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    body = b"".join(chunks)
    total = 12 + 8 + len(text) + 8 + len(body)
    return b"".join([struct.pack("<III", GLB_MAGIC, 2, total), struct.pack("<II", len(text), JSON_CHUNK), text,
                     struct.pack("<II", len(body), BIN_CHUNK), body])


# ----------------------------------------------------------------------------- decode

def _chunks(path: Path, data: bytes) -> tuple[dict, bytes]:
    """GLB bytes -> (the JSON document, the BIN chunk or b"")."""
    if len(data) < 20:
        raise ReconError(path, f"truncated .glb: {len(data)} bytes")
    magic, version, total = struct.unpack_from("<III", data)
    if magic != GLB_MAGIC:
        raise ReconError(path, "not a .glb file (missing glTF magic)")
    if version != 2:
        raise ReconError(path, f".glb version {version} is not supported (2)")
    if total != len(data):
        raise ReconError(path, f".glb header says {total} bytes, file has {len(data)}"
                               + (" (truncated)" if total > len(data) else ""))
    offset, found = 12, []
    while offset < total:
        if offset + 8 > total:
            raise ReconError(path, f".glb chunk header at byte {offset} runs past the end")
        length, kind = struct.unpack_from("<II", data, offset)
        if offset + 8 + length > total:
            raise ReconError(path, f".glb chunk at byte {offset} claims {length} bytes, past the end of the file")
        found.append((kind, data[offset + 8:offset + 8 + length]))
        offset += 8 + length  # chunk lengths include their padding
    if not found or found[0][0] != JSON_CHUNK:
        raise ReconError(path, ".glb does not start with a JSON chunk")
    try:
        doc = json.loads(found[0][1].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ReconError(path, f".glb JSON chunk is not valid JSON ({str(err).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise ReconError(path, ".glb JSON chunk is not an object")
    bins = [c for k, c in found[1:] if k == BIN_CHUNK]
    return doc, bins[0] if bins else b""


def _list(path: Path, doc: dict, key: str) -> list:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ReconError(path, f".glb JSON {key} must be a list of objects")
    return value


def _int(path: Path, obj: dict, key: str, what: str, default: int | None = None, lo: int = 0) -> int:
    value = obj.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise ReconError(path, f".glb {what}.{key} must be an integer >= {lo}, got {value!r}")
    return value


def _accessor(path: Path, doc: dict, binary: bytes, index: object, name: str, n: int | None) -> np.ndarray:
    """Attribute ``name`` at accessor ``index`` -> [count, width] float64 (normalized ints scaled)."""
    accessors, views = _list(path, doc, "accessors"), _list(path, doc, "bufferViews")
    buffers = _list(path, doc, "buffers")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(accessors):
        raise ReconError(path, f".glb attribute {name} points at accessor {index!r}, which does not exist")
    acc = accessors[index]
    what = f"accessor {index} ({name})"
    if "sparse" in acc:
        raise ReconError(path, f".glb {what} is sparse, which this reader does not support")
    ctype, atype = acc.get("componentType"), acc.get("type")
    if ctype not in COMPONENTS or atype not in WIDTH:
        raise ReconError(path, f".glb {what} has component type {ctype!r} / type {atype!r}")
    count = _int(path, acc, "count", what, lo=1)
    if n is not None and count != n:
        raise ReconError(path, f".glb {what} has {count} elements, POSITION has {n}")
    view_index = _int(path, acc, "bufferView", what)
    if view_index >= len(views):
        raise ReconError(path, f".glb {what} points at buffer view {view_index}, which does not exist")
    view = views[view_index]
    vwhat = f"bufferView {view_index}"
    buffer = _int(path, view, "buffer", vwhat)
    if buffer >= len(buffers) or buffer != 0 or "uri" in buffers[0]:
        raise ReconError(path, f".glb {vwhat} uses buffer {buffer}; only the embedded BIN chunk is supported")
    dtype = np.dtype(COMPONENTS[ctype])
    width = WIDTH[atype]
    elem = dtype.itemsize * width
    stride = view.get("byteStride", elem)
    if not isinstance(stride, int) or isinstance(stride, bool) or stride < elem or stride % dtype.itemsize:
        raise ReconError(path, f".glb {vwhat} byteStride {stride!r} does not fit {atype} elements")
    start = _int(path, view, "byteOffset", vwhat, 0) + _int(path, acc, "byteOffset", what, 0)
    vlen = _int(path, view, "byteLength", vwhat, lo=1)
    end_view = _int(path, view, "byteOffset", vwhat, 0) + vlen
    need = start + stride * (count - 1) + elem
    if need > end_view or end_view > len(binary):
        raise ReconError(path, f".glb {what} needs bytes up to {need}, its view / the BIN chunk end at "
                               f"{min(end_view, len(binary))}")
    raw = np.lib.stride_tricks.as_strided(
        np.frombuffer(binary, np.uint8, count=need - start, offset=start), shape=(count, elem),
        strides=(stride, 1)).copy()
    values = raw.view(dtype).reshape(count, width).astype(np.float64)
    if acc.get("normalized") and ctype in NORMALIZE:
        values = np.maximum(values / NORMALIZE[ctype], -1.0)
    return values


def decode(path: Path, data: bytes) -> Splats:
    doc, binary = _chunks(path, data)
    meshes = _list(path, doc, "meshes")
    if not all(isinstance(m.get("primitives", []), list) for m in meshes):
        raise ReconError(path, ".glb mesh primitives must be lists")
    prims = [p for mesh in meshes for p in mesh.get("primitives", [])
             if isinstance(p, dict) and isinstance(p.get("extensions"), dict) and EXT in p["extensions"]]
    if not prims:
        raise ReconError(path, f".glb has no primitive with the {EXT} extension (not a splat file)")
    if len(prims) > 1:
        raise ReconError(path, f".glb has {len(prims)} {EXT} primitives; this reader takes one")
    prim = prims[0]
    ext = prim["extensions"][EXT]
    if prim.get("mode", 4) != 0:
        raise ReconError(path, f".glb {EXT} primitive has mode {prim.get('mode', 4)!r}, must be 0 (POINTS)")
    if not isinstance(ext, dict) or ext.get("kernel", "ellipse") != "ellipse":
        raise ReconError(path, f".glb {EXT} kernel {ext.get('kernel') if isinstance(ext, dict) else ext!r} "
                               "is not supported (ellipse)")
    attrs = prim.get("attributes")
    if not isinstance(attrs, dict):
        raise ReconError(path, ".glb primitive has no attributes object")
    for required in ("POSITION", f"{EXT}:ROTATION", f"{EXT}:SCALE", f"{EXT}:OPACITY", f"{EXT}:SH_DEGREE_0_COEF_0"):
        if required not in attrs:
            raise ReconError(path, f".glb {EXT} primitive lacks the {required} attribute")

    def get(name: str, width: int, n: int | None) -> np.ndarray:
        values = _accessor(path, doc, binary, attrs[name], name, n)
        if values.shape[1] != width:
            raise ReconError(path, f".glb attribute {name} has {values.shape[1]} components, expected {width}")
        if not np.isfinite(values).all():
            raise ReconError(path, f".glb attribute {name} has non-finite values")
        return values

    means = get("POSITION", 3, None)
    n = len(means)
    xyzw = get(f"{EXT}:ROTATION", 4, n)
    scale = get(f"{EXT}:SCALE", 3, n)
    opacity = get(f"{EXT}:OPACITY", 1, n)[:, 0]
    sh0 = get(f"{EXT}:SH_DEGREE_0_COEF_0", 3, n)
    if (scale < 0).any():
        raise ReconError(path, f".glb {EXT}:SCALE has negative values (it stores linear scales)")
    if ((opacity < 0) | (opacity > 1)).any():
        raise ReconError(path, f".glb {EXT}:OPACITY has values outside 0..1 (it stores linear opacity)")
    degree = 0
    while degree < 3 and f"{EXT}:SH_DEGREE_{degree + 1}_COEF_0" in attrs:
        degree += 1
    names = _sh_names(degree)
    missing = [m for m in names if m not in attrs]
    extra = [a for a in attrs if a.startswith(f"{EXT}:SH_DEGREE_") and a not in names
             and a != f"{EXT}:SH_DEGREE_0_COEF_0"]
    if missing or extra:
        raise ReconError(path, f".glb SH degrees are incomplete: {'missing ' + missing[0] if missing else 'stray ' + extra[0]}")
    shN = np.stack([get(m, 3, n) for m in names], axis=1) if names else np.zeros((n, 0, 3))
    quats = xyzw[:, [3, 0, 1, 2]] * np.array([1.0, 1.0, -1.0, -1.0])
    alpha = np.clip(opacity, _ALPHA_LO, _ALPHA_HI)
    with np.errstate(divide="ignore"):
        log_scales = np.log(np.maximum(scale, 1e-30))
    return Splats(
        means=(means * FLIP).astype(np.float32), quats=quats.astype(np.float32),
        log_scales=log_scales.astype(np.float32),
        opacity_logits=np.log(alpha / (1.0 - alpha)).astype(np.float32),
        sh0=sh0.astype(np.float32),
        shN=np.ascontiguousarray(shN * SH_FLIP_RDF_RUB[:len(names), None], dtype=np.float32),
    )
