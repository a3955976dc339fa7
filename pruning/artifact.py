"""The compact artifact RUN/compressed/: codebook indices and codebooks, entropy-coded with zstandard.

Layout of the folder (both files written to a temp name and renamed; the header last):

- ``artifact.bin``: concatenated zstandard frames, one per array, in header order. Arrays whose
  items are wider than one byte are byte-shuffled first (all first bytes, then all second bytes,
  ...), which lets zstd see the slowly varying high bytes of fp16 values as runs.
- ``artifact.json``: {"format": "recon-compact", "version": 1, "n": N, "sh_degree": d,
  "attributes": {name: {"kind": "raw"|"vq"|"rvq", "dim": D}}, "arrays": [{"name", "dtype",
  "shape", "offset", "length", "shuffled"}], "payload_sha256": hex}.

Attributes (D = per-Gaussian width): means (raw fp16, D=3), opacities (raw fp16 logits, D=1),
scales (log scales, D=3), quats (wxyz, D=4), sh0 (D=3), shN (D=3*(K-1), rows flattened from
[K-1, 3]). Each is stored as
- raw: ``<name>`` [N, D] float16/float32,
- vq:  ``<name>.codes`` [N] uint8/16/32 and ``<name>.codebook`` [E, D] float16,
- rvq: ``<name>.codes`` [S, N] uint8/16 and ``<name>.codebooks`` [S, E, D] float16.
Decoding is in float32, summing RVQ stages in stage order, so it is deterministic: the same
artifact always decodes to bit-identical splats.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scenes.fileio import atomic_write_bytes

from reconstruct.splats import Splats
from scenes.errors import ReconError

FORMAT = "recon-compact"
VERSION = 1
HEADER = "artifact.json"
PAYLOAD = "artifact.bin"
ATTRIBUTES = ("means", "opacities", "scales", "quats", "sh0", "shN")
_DTYPES = {"float16", "float32", "uint8", "uint16", "uint32"}


def code_dtype(n_entries: int) -> np.dtype:
    """Smallest unsigned dtype that holds indices 0..n_entries-1."""
    if n_entries <= 256:
        return np.dtype(np.uint8)
    if n_entries <= 65536:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


@dataclass(frozen=True)
class Attribute:
    """One per-Gaussian attribute in one of the three storage kinds."""

    kind: str
    """"raw", "vq" or "rvq"."""
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    """raw: {"values": [N, D]}; vq: {"codes": [N], "codebook": [E, D]};
    rvq: {"codes": [S, N], "codebooks": [S, E, D]}."""

    def __post_init__(self) -> None:
        a = self.arrays
        if self.kind == "raw":
            assert set(a) == {"values"} and a["values"].ndim == 2, {k: v.shape for k, v in a.items()}
        elif self.kind == "vq":
            assert set(a) == {"codes", "codebook"}, set(a)
            assert a["codes"].ndim == 1 and a["codebook"].ndim == 2, (a["codes"].shape, a["codebook"].shape)
        elif self.kind == "rvq":
            assert set(a) == {"codes", "codebooks"}, set(a)
            assert a["codes"].ndim == 2 and a["codebooks"].ndim == 3, (a["codes"].shape, a["codebooks"].shape)
            assert a["codes"].shape[0] == a["codebooks"].shape[0], (a["codes"].shape, a["codebooks"].shape)
        else:
            raise AssertionError(f"unknown attribute kind {self.kind!r}")

    @property
    def n(self) -> int:
        a = self.arrays
        return {"raw": lambda: a["values"].shape[0], "vq": lambda: a["codes"].shape[0],
                "rvq": lambda: a["codes"].shape[1]}[self.kind]()

    @property
    def dim(self) -> int:
        a = self.arrays
        return {"raw": lambda: a["values"].shape[1], "vq": lambda: a["codebook"].shape[1],
                "rvq": lambda: a["codebooks"].shape[2]}[self.kind]()

    def decode(self) -> np.ndarray:
        """[N, D] float32 values."""
        a = self.arrays
        if self.kind == "raw":
            return a["values"].astype(np.float32)
        if self.kind == "vq":
            return a["codebook"].astype(np.float32)[a["codes"].astype(np.int64)]
        books = a["codebooks"].astype(np.float32)
        out = np.zeros((a["codes"].shape[1], books.shape[2]), np.float32)
        for s in range(books.shape[0]):
            out += books[s][a["codes"][s].astype(np.int64)]
        return out

    @staticmethod
    def raw(values: np.ndarray, dtype: str = "float16") -> "Attribute":
        v = np.asarray(values)
        v = v.reshape(v.shape[0], -1)
        return Attribute("raw", {"values": np.ascontiguousarray(v.astype(dtype))})

    @staticmethod
    def vq(codes: np.ndarray, codebook: np.ndarray, dtype: str = "float16") -> "Attribute":
        book = np.ascontiguousarray(np.asarray(codebook, dtype))
        return Attribute("vq", {"codes": np.asarray(codes).astype(code_dtype(book.shape[0])), "codebook": book})

    @staticmethod
    def rvq(codes: np.ndarray, codebooks: np.ndarray) -> "Attribute":
        books = np.ascontiguousarray(np.asarray(codebooks, np.float16))
        return Attribute("rvq", {"codes": np.ascontiguousarray(np.asarray(codes).astype(code_dtype(books.shape[1]))),
                                 "codebooks": books})


@dataclass(frozen=True)
class CompactSplats:
    """N Gaussians in compact form: one Attribute per name in ATTRIBUTES."""

    sh_degree: int
    attributes: dict[str, Attribute]

    def __post_init__(self) -> None:
        assert set(self.attributes) == set(ATTRIBUTES), set(self.attributes)
        n = self.attributes["means"].n
        k = (self.sh_degree + 1) ** 2 - 1
        dims = {"means": 3, "opacities": 1, "scales": 3, "quats": 4, "sh0": 3, "shN": 3 * k}
        for name, attr in self.attributes.items():
            assert attr.n == n, (name, attr.n, n)
            assert attr.dim == dims[name], (name, attr.dim, dims[name])

    @property
    def n(self) -> int:
        return self.attributes["means"].n

    def decode(self) -> Splats:
        """Full float32 splats."""
        a = {name: attr.decode() for name, attr in self.attributes.items()}
        n = self.n
        k = (self.sh_degree + 1) ** 2 - 1
        return Splats(
            means=a["means"], quats=a["quats"], log_scales=a["scales"],
            opacity_logits=a["opacities"].reshape(n), sh0=a["sh0"], shN=a["shN"].reshape(n, k, 3),
        )

    @staticmethod
    def from_splats(s: Splats, dtype: str = "float16") -> "CompactSplats":
        """Every attribute raw (fp16 by default): the artifact of a run that is pruned but not quantized."""
        n = len(s)
        return CompactSplats(s.sh_degree, {
            "means": Attribute.raw(s.means, dtype), "opacities": Attribute.raw(s.opacity_logits.reshape(n, 1), dtype),
            "scales": Attribute.raw(s.log_scales, dtype), "quats": Attribute.raw(s.quats, dtype),
            "sh0": Attribute.raw(s.sh0, dtype), "shN": Attribute.raw(s.shN.reshape(n, -1), dtype),
        })


def _shuffle(a: np.ndarray) -> bytes:
    """Byte planes of a contiguous array: [count, itemsize] bytes transposed."""
    raw = np.frombuffer(np.ascontiguousarray(a).tobytes(), np.uint8)
    if a.dtype.itemsize == 1:
        return raw.tobytes()
    return raw.reshape(-1, a.dtype.itemsize).T.copy().tobytes()


def _unshuffle(data: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    raw = np.frombuffer(data, np.uint8)
    if dtype.itemsize > 1:
        raw = raw.reshape(dtype.itemsize, -1).T.copy()
    return np.frombuffer(raw.tobytes(), dtype).reshape(shape).copy()


def save_artifact(directory: str | Path, compact: CompactSplats, *, level: int = 19) -> int:
    """Write ``compact`` into ``directory`` (created if needed). Returns total bytes of both files.

    Deterministic: the same CompactSplats always gives byte-identical files.
    """
    import zstandard

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cctx = zstandard.ZstdCompressor(level=level, write_checksum=True)
    chunks: list[bytes] = []
    entries = []
    offset = 0
    attrs_meta = {}
    for name in ATTRIBUTES:
        attr = compact.attributes[name]
        attrs_meta[name] = {"kind": attr.kind, "dim": attr.dim}
        for key in sorted(attr.arrays):
            arr = attr.arrays[key]
            assert arr.dtype.name in _DTYPES, (name, key, arr.dtype)
            frame = cctx.compress(_shuffle(arr))
            entries.append({"name": f"{name}.{key}", "dtype": arr.dtype.name, "shape": list(arr.shape),
                            "offset": offset, "length": len(frame), "shuffled": arr.dtype.itemsize > 1})
            chunks.append(frame)
            offset += len(frame)
    payload = b"".join(chunks)
    header = {"format": FORMAT, "version": VERSION, "n": compact.n, "sh_degree": compact.sh_degree,
              "attributes": attrs_meta, "arrays": entries,
              "payload_sha256": hashlib.sha256(payload).hexdigest()}
    header_bytes = (json.dumps(header, indent=1) + "\n").encode()
    atomic_write_bytes(directory / PAYLOAD, payload)
    atomic_write_bytes(directory / HEADER, header_bytes)
    return len(payload) + len(header_bytes)


def artifact_bytes(directory: str | Path) -> int:
    """Size on disk of the artifact (header + payload)."""
    directory = Path(directory)
    return (directory / HEADER).stat().st_size + (directory / PAYLOAD).stat().st_size


def read_compact(directory: str | Path) -> CompactSplats:
    """Read the artifact without decoding codebooks. Raises ReconError on any defect."""
    import zstandard

    directory = Path(directory)
    hpath, ppath = directory / HEADER, directory / PAYLOAD
    for p in (hpath, ppath):
        if not p.is_file():
            raise ReconError(p, "missing (not a compressed artifact folder; run `recon compress` first)")
    try:
        header = json.loads(hpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ReconError(hpath, f"not valid JSON: {err}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ReconError(hpath, f"not a {FORMAT} header")
    if header.get("version") != VERSION:
        raise ReconError(hpath, f"unsupported version {header.get('version')!r} (this reader knows {VERSION})")
    payload = ppath.read_bytes()
    if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
        raise ReconError(ppath, "payload checksum mismatch (truncated or modified)")
    dctx = zstandard.ZstdDecompressor()
    arrays: dict[str, dict[str, np.ndarray]] = {}
    try:
        for e in header["arrays"]:
            if e["dtype"] not in _DTYPES:
                raise ReconError(hpath, f"array {e['name']} has unsupported dtype {e['dtype']}")
            dtype = np.dtype(e["dtype"])
            shape = tuple(int(v) for v in e["shape"])
            expected = int(np.prod(shape)) * dtype.itemsize
            frame = payload[e["offset"] : e["offset"] + e["length"]]
            data = dctx.decompress(frame, max_output_size=max(expected, 1))
            if len(data) != expected:
                raise ReconError(ppath, f"array {e['name']} decodes to {len(data)} bytes, expected {expected}")
            name, key = e["name"].split(".", 1)
            arrays.setdefault(name, {})[key] = _unshuffle(data, dtype, shape)
        attributes = {name: Attribute(meta["kind"], arrays.get(name, {}))
                      for name, meta in header["attributes"].items()}
        return CompactSplats(int(header["sh_degree"]), attributes)
    except zstandard.ZstdError as err:
        raise ReconError(ppath, f"corrupt zstd frame: {err}") from None
    except (KeyError, ValueError, TypeError, AssertionError) as err:
        raise ReconError(hpath, f"inconsistent header: {err!r}") from None


def load_artifact(directory: str | Path) -> Splats:
    """Decode RUN/compressed/ back to full float32 splats."""
    return read_compact(directory).decode()
