"""Index sizes: reading a memory budget ("4G"), writing one for people, the bytes an index of a factory string will
take (formulas per family, checked against built indexes in the tests) and the bytes a built one serializes to."""

from __future__ import annotations

import math
import re
from typing import Any

import faiss

from indexes.errors import IndexLayerError

_FAISS: Any = faiss  # attributes that faiss's bundled stubs lack (PyCallbackIOWriter)
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
_OPQ = re.compile(r"^OPQ(\d+)(?:_(\d+))?$")
_HNSW = re.compile(r"^HNSW(\d+)(?:_?Flat)?$")
_IVF = re.compile(r"^IVF(\d+)(?:_HNSW(\d+))?$")
_PQ = re.compile(r"^PQ(\d+)(?:x(\d+))?(fs)?$")


def parse_memory(text: str | int) -> int:
    """Bytes from a size such as "4G", "512M", "1.5GiB" or "1000000" (binary units: 1K = 1024 bytes).

    Raises:
        IndexLayerError: anything else, zero or negative.
    """
    if isinstance(text, bool):
        raise IndexLayerError(f"cannot read {text!r} as a memory size (e.g. 4G, 512M, 1000000)")
    if isinstance(text, int):
        value = float(text)
    else:
        match = _MEMORY.match(str(text))
        if match is None:
            raise IndexLayerError(f"cannot read {text!r} as a memory size (e.g. 4G, 512M, 1000000)")
        value = float(match.group(1)) * _UNITS[match.group(2).upper()]
    if value < 1:
        raise IndexLayerError(f"a memory size must be at least 1 byte, got {text!r}")
    return int(value)


def format_bytes(n: float) -> str:
    """Human-readable binary size, for messages."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def estimate_memory(factory: str, n: int, d: int, *, with_ids: bool = True) -> int:
    """Bytes an index of `n` vectors of dimension `d` takes (its serialized size; RAM adds a little, see below).

    Per family (n vectors, d dims, 4-byte floats):
      - Flat: 4nd.
      - HNSW{M}: 4nd + n * (4 * (2M + M/(M-1)) + 12): full vectors, int32 links (2M on layer 0, M per upper layer,
        with on average 1/(M-1) upper layers per vector), a level (int32) and an offset (int64) per vector.
      - IVF{nlist},Flat: 4nd + 8n list ids + 4 * nlist * d coarse centroids (IVF{nlist}_HNSW{M}: plus the HNSW
        links of the centroids).
      - IVF{nlist},PQ{m}[x{b}]: n * ceil(m*b/8) codes + 8n ids + centroids + 4 * m * 2^b * (d/m) codebooks;
        the fast-scan layout (x4fs) pads every list to blocks of 32 codes (on average 16 wasted per list).
      - ...,Refine(SQ8) adds nd (one byte a component), ...,RFlat adds 4nd; OPQ{m}[_{dout}] adds a 4 * d * dout
        rotation and runs the rest at dout.
    `with_ids` adds the 8n-byte id map that VectorIndex wraps around non-IVF indexes (its in-memory reverse map
    costs another ~40 bytes per vector in RAM and is not saved).

    Raises:
        IndexLayerError: a factory string outside these families.
    """
    parts = [p.strip() for p in _split_factory(factory)]
    total = 0.0
    dim = d
    if parts and (m := _OPQ.match(parts[0])):
        dout = int(m.group(2) or d)
        total += 4.0 * d * dout + 4.0 * dout
        dim = dout
        parts = parts[1:]
    refine = 0.0
    if parts and parts[-1] in ("RFlat", "Refine(Flat)"):
        refine, parts = 4.0 * n * d, parts[:-1]
    elif parts and parts[-1] == "Refine(SQ8)":
        refine, parts = 1.0 * n * d + 8.0 * d, parts[:-1]
    ivf = False
    if len(parts) == 1 and parts[0] == "Flat":
        total += 4.0 * n * dim
    elif len(parts) == 1 and (m := _HNSW.match(parts[0])):
        links = int(m.group(1))
        total += 4.0 * n * dim + n * (4.0 * (2 * links + links / max(links - 1, 1)) + 12)
    elif len(parts) == 2 and (m := _IVF.match(parts[0])):
        ivf = True
        nlist = int(m.group(1))
        total += 4.0 * nlist * dim + 8.0 * n
        if m.group(2):  # an HNSW graph over the centroids, as for HNSW{M} below
            links = int(m.group(2))
            total += nlist * (4.0 * (2 * links + links / max(links - 1, 1)) + 12)
        code = parts[1]
        if code == "Flat":
            total += 4.0 * n * dim
        elif code == "SQ8":
            total += 1.0 * n * dim + 8.0 * dim
        elif pq := _PQ.match(code):
            m_sub, nbits = int(pq.group(1)), int(pq.group(2) or 8)
            code_bytes = math.ceil(m_sub * nbits / 8)
            padded = n + 16.0 * nlist if pq.group(3) else n
            total += padded * code_bytes + 4.0 * (2**nbits) * dim
        else:
            raise IndexLayerError(f"no memory formula for the factory {factory!r}")
    else:
        raise IndexLayerError(f"no memory formula for the factory {factory!r}")
    total += refine
    if with_ids and (not ivf or refine):
        total += 8.0 * n
    return int(total)


class _ByteCounter:
    """A faiss write callback that only counts: an index's size without a second copy of it in memory."""

    def __init__(self) -> None:
        self.nbytes = 0

    def __call__(self, chunk: bytes) -> int:
        self.nbytes += len(chunk)
        return len(chunk)


def serialized_bytes(index: Any) -> int:
    """Bytes `faiss.write_index` writes for `index`, counted without holding them (a 1M x 1280 Flat is 5 GB)."""
    counter = _ByteCounter()
    writer = _FAISS.PyCallbackIOWriter(counter)
    faiss.write_index(index, writer)
    del writer
    return counter.nbytes


def _split_factory(factory: str) -> list[str]:
    """Split a factory string on top-level commas (not those inside "Refine(...)")."""
    parts, depth, current = [], 0, ""
    for ch in factory:
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += (ch == "(") - (ch == ")")
        current += ch
    parts.append(current)
    return parts
