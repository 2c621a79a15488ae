"""Default FAISS index choices (factory string and search parameters by collection size) and GPU discovery.

Factory strings are faiss's own configuration language and are passed on verbatim; this module only picks defaults.
"""

from __future__ import annotations

import logging
import math
import re

import faiss

from indexes.errors import IndexLayerError

logger = logging.getLogger(__name__)

#: Up to this many vectors exact search is cheap enough (1e5 x 1280 float32 is ~0.5 GB scanned per query batch)
#: and its recall is 1 by construction, so nothing approximate earns its place.
EXACT_MAX_VECTORS = 100_000
#: Up to this many vectors an in-memory HNSW graph (exact float32 storage + ~32 links per vector) stays affordable.
HNSW_MAX_VECTORS = 2_000_000
#: faiss's factory default efConstruction is 40; 80 measured here (100k x 128 clustered, HNSW32, efSearch=64)
#: raised recall@10 from 0.83 to 0.93 for 1.5x the build time. Factory strings cannot express it, so
#: VectorIndex.create sets it on every HNSW graph it builds.
HNSW_EF_CONSTRUCTION = 80
#: OPQ rotation training iterations: faiss's 50 took over 5 minutes for OPQ80 on 8.7k x 1280 vectors on 2 cores.
OPQ_ITERATIONS = 10
#: efSearch default: recall@10 >= 0.9 on the data above with efConstruction=80.
HNSW_EF_SEARCH = 64

_IVF_NLIST = re.compile(r"IVF(\d+)")
_PROBE = re.compile(r"(?:nprobe|efSearch)=(\d+)")


def factory_nlist(factory: str) -> int | None:
    """Inverted lists of a factory string ("IVF4096_HNSW32,SQ8" -> 4096); None without an IVF."""
    match = _IVF_NLIST.search(factory)
    return int(match.group(1)) if match else None


def params_probe(params: str) -> int | None:
    """The knob of a search-parameter string, nprobe or efSearch ("nprobe=16,quantizer_efSearch=64" -> 16)."""
    match = _PROBE.search(params)
    return int(match.group(1)) if match else None


def choose_factory(n: int, dim: int) -> str:
    """Pick a factory string for a collection of `n` vectors of dimension `dim`.

    Exact "Flat" up to EXACT_MAX_VECTORS, "HNSW32" up to HNSW_MAX_VECTORS, then "IVF{nlist},Flat" with nlist the
    power of two nearest 4*sqrt(n) (faiss's guideline is 4..16 sqrt(n)). A simple size rule for now; choosing by
    measured recall/QPS is left to a later issue. Pair it with `default_search_params`.

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
    nlist = 2 ** round(math.log2(4 * math.sqrt(n)))
    return f"IVF{nlist},Flat"


def default_search_params(factory: str) -> str:
    """faiss ParameterSpace string that gives a factory's index a sensible recall/speed trade-off.

    IVF: nprobe = round(sqrt(nlist)) (e.g. 32 of 1024 lists); HNSW: efSearch=HNSW_EF_SEARCH; anything else
    (Flat, PQ, ...) has nothing to tune and gets "".
    """
    nlist = factory_nlist(factory)
    if nlist is not None:
        return ivf_params(factory, max(1, min(nlist, round(math.sqrt(nlist)))))
    if "HNSW" in factory:
        return f"efSearch={HNSW_EF_SEARCH}"
    return ""


def ivf_params(factory: str, nprobe: int) -> str:
    """The search params that probe `nprobe` lists of an IVF `factory`. An HNSW coarse quantizer ("IVF4096_HNSW32")
    must return nprobe centroids, so its beam is widened with them: quantizer_efSearch = max(64, 2 * nprobe)."""
    if re.search(r"IVF\d+_HNSW", factory):
        return f"nprobe={nprobe},quantizer_efSearch={max(HNSW_EF_SEARCH, 2 * nprobe)}"
    return f"nprobe={nprobe}"


def gpu_count() -> int:
    """Number of GPUs faiss can use: 0 for a faiss-cpu build, a machine without CUDA, or any failure to ask."""
    if not hasattr(faiss, "StandardGpuResources"):
        return 0
    try:
        return int(faiss.get_num_gpus())
    except Exception as exc:  # a broken CUDA setup must read as "no GPU", never as a crash at import or create
        logger.debug("faiss.get_num_gpus() failed, assuming no GPU: %s", exc)
        return 0
