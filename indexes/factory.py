"""Default FAISS index choices by collection size, and the build constants factory strings cannot express.

Factory strings are faiss's own configuration language and are passed on verbatim; this module only picks defaults.
Search-parameter defaults live in `indexes.params`.
"""

from __future__ import annotations

import math
import re

from indexes.errors import IndexLayerError

#: Up to this many vectors exact search is cheap enough (1e5 x 1280 float32 is ~0.5 GB scanned per query batch)
#: and its recall is 1 by construction, so nothing approximate earns its place.
EXACT_MAX_VECTORS = 100_000
#: Up to this many vectors an in-memory HNSW graph (exact float32 storage + ~32 links per vector) stays affordable.
HNSW_MAX_VECTORS = 2_000_000
#: faiss's factory default efConstruction is 40; 80 measured here (100k x 128 clustered, HNSW32, efSearch=64)
#: raised recall@10 from 0.83 to 0.93 for 1.5x the build time. Factory strings cannot express it, so
#: `indexes.building.new_index` sets it on every HNSW graph it builds.
HNSW_EF_CONSTRUCTION = 80
#: OPQ rotation training iterations: faiss's 50 took over 5 minutes for OPQ80 on 8.7k x 1280 vectors on 2 cores.
OPQ_ITERATIONS = 10

_IVF_NLIST = re.compile(r"IVF(\d+)")


def factory_nlist(factory: str) -> int | None:
    """Inverted lists of a factory string ("IVF4096_HNSW32,SQ8" -> 4096); None without an IVF."""
    match = _IVF_NLIST.search(factory)
    return int(match.group(1)) if match else None


def ivf_nlist(n: int) -> int:
    """Inverted lists for `n` vectors: the power of two nearest 4*sqrt(n) (faiss's guideline is 4..16 sqrt(n))."""
    return max(1, 2 ** round(math.log2(max(1.0, 4 * math.sqrt(max(n, 1))))))


def choose_factory(n: int, dim: int) -> str:
    """Pick a factory string for a collection of `n` vectors of dimension `dim`.

    Exact "Flat" up to EXACT_MAX_VECTORS, "HNSW32" up to HNSW_MAX_VECTORS, then "IVF{nlist},Flat" with nlist from
    `ivf_nlist`. A simple size rule; `indexes.tuning.choose_index` chooses by measured recall and speed instead.
    Pair it with `indexes.params.default_search_params`.

    Raises:
        IndexLayerError: for a negative `n` or a `dim` below 1.
    """
    if n < 0:
        raise IndexLayerError(f"collection size must be >= 0, got {n}")
    if dim < 1:
        raise IndexLayerError(f"vector dimension must be >= 1, got {dim}")
    if n <= EXACT_MAX_VECTORS:
        return "Flat"
    if n <= HNSW_MAX_VECTORS:
        return "HNSW32"
    return f"IVF{ivf_nlist(n)},Flat"
