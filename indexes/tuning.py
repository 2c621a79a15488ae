"""The index chosen by measurement: factory string and search parameters that reach a recall target, fastest first,
within a memory budget, measured on a sample of the collection's own vectors; and the measurement primitives (build
timing, recall against exact search, QPS, latency percentiles, index bytes) that the search benchmark shares.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import faiss
import numpy as np

from indexes import factory as _factory
from indexes.errors import IndexLayerError
from indexes.factory import OPQ_ITERATIONS
from indexes.vector_index import _ivf_below_transforms, apply_build_settings

logger = logging.getLogger(__name__)
_FAISS: Any = faiss  # attributes that faiss's bundled stubs lack (PyCallbackIOWriter)

#: Recall@10 against exact search that a chosen index must reach on held-out queries.
TARGET_RECALL = 0.95
#: Below this many sample vectors (after holding out queries) a measurement says nothing about a large collection.
MIN_SAMPLE = 1_000
#: HNSW graph degree of the HNSW candidate (faiss's usual choice; 32 links, 64 on the bottom layer).
HNSW_M = 32
#: Candidates refined with SQ8 codes re-rank this many times k PQ-fast-scan hits.
REFINE_K_FACTOR = 8

#: From this many inverted lists on, the flat scan of the centroids costs as much as the probed lists (1280-d,
#: nprobe 16: 4096 centroids read 21 MB per query, the lists ~20 MB), so an HNSW quantizer is a candidate too.
HNSW_QUANTIZER_MIN_LISTS = 2048

EF_SEARCH_SWEEP = (16, 32, 64, 128, 256, 512)
NPROBE_SWEEP = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
_OPQ = re.compile(r"^OPQ(\d+)(?:_(\d+))?$")
_HNSW = re.compile(r"^HNSW(\d+)(?:_?Flat)?$")
_IVF = re.compile(r"^IVF(\d+)(?:_HNSW(\d+))?$")
_PQ = re.compile(r"^PQ(\d+)(?:x(\d+))?(fs)?$")


# ---------------------------------------------------------------------------------------------------------- results


@dataclass
class IndexChoice:
    """What `choose_index` picked, with what it measured (`candidates_measured`: one dict per factory and param).

    recall_at_10 and qps are None when the choice was made without measuring (small collections keep "Flat").
    qps is single-query queries per second predicted for the full collection size (see `choose_index`).
    """

    factory: str
    search_params: str
    recall_at_10: float | None
    qps: float | None
    memory_bytes: int
    candidates_measured: list[dict[str, Any]] = field(default_factory=list)
    n: int = 0
    dim: int = 0
    sample_size: int = 0
    queries: int = 0
    max_memory: int | None = None
    target_recall: float = TARGET_RECALL
    measured: bool = False
    seconds: float = 0.0
    #: Other factories that reached the target on the sample, fastest first (best params each): what the engine
    #: falls back to when the choice misses the target at full size (see `calibrate`).
    alternatives: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Calibration:
    """What `calibrate` found on the full-size index: the cheapest params from the starting point on that reach the
    target (or the best seen when none does), with every setting it tried."""

    factory: str
    search_params: str
    recall_at_10: float
    reached: bool
    queries: int
    tried: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class SearchableIndex(Protocol):
    """What `calibrate` needs of an index (VectorIndex has it)."""

    def set_search_params(self, params: str) -> None: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class BuiltIndex:
    """A faiss index built by `build_index`, with its training and adding times in seconds."""

    index: Any
    factory: str
    train_s: float
    add_s: float

    @property
    def build_s(self) -> float:
        return self.train_s + self.add_s


# ---------------------------------------------------------------------------------------------------------- parsing


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


def ivf_nlist(n: int) -> int:
    """Inverted lists for `n` vectors: the power of two nearest 4*sqrt(n) (faiss's guideline is 4..16 sqrt(n))."""
    return max(1, 2 ** round(math.log2(max(1.0, 4 * math.sqrt(max(n, 1))))))


# ---------------------------------------------------------------------------------------------------------- memory


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


def rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * _page_size()
    except (OSError, ValueError, IndexError):
        return 0


def _page_size() -> int:
    import os

    return int(os.sysconf("SC_PAGE_SIZE"))


# ---------------------------------------------------------------------------------------------------------- building


def build_index(
    factory: str,
    d: int,
    train: np.ndarray | None,
    chunks: Any,
    *,
    with_ids: bool = True,
    opq_iterations: int = OPQ_ITERATIONS,
    centroids: np.ndarray | None = None,
) -> BuiltIndex:
    """Build `factory` (inner product) as VectorIndex does: HNSW efConstruction, an id map around non-IVF indexes.

    Args:
        factory: faiss factory string.
        d: dimension.
        train: (T, d) float32 training vectors for IVF/PQ/OPQ (ignored by indexes that need none).
        chunks: (N, d) float32 array, or an iterable of such arrays added in turn (so a caller never has to hold
            a whole data set twice: once as numpy, once inside the index).
        with_ids: wrap non-IVF indexes in IndexIDMap2 with ids 0..N-1, as VectorIndex stores them.
        opq_iterations: OPQ rotation training iterations (faiss's default of 50 took minutes at d=1280 here).
        centroids: (nlist, d) coarse centroids of an earlier IVF build on the same data (see `coarse_centroids`):
            an IVF without a transform in front then skips its k-means and trains only its codes. A benchmark
            comparing IVF variants at one nlist so trains the k-means once instead of once per variant.
    """
    try:
        index: Any = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise IndexLayerError(f"bad index factory string {factory!r}: {exc}") from exc
    apply_build_settings(index)
    if isinstance(index, faiss.IndexPreTransform):
        chain: Any = index.chain  # a SWIG vector; faiss's stubs call it a list
        for i in range(chain.size()):
            transform = faiss.downcast_VectorTransform(chain.at(i))
            if isinstance(transform, faiss.OPQMatrix):
                transform.niter = opq_iterations
    native = _ivf_below_transforms(index)
    ivf = _plain_ivf(index)
    if centroids is not None and ivf is not None and ivf.nlist == len(centroids):
        ivf.quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))  # faiss then skips the k-means
    if with_ids and not native:
        index = faiss.IndexIDMap2(index)
    t0 = time.perf_counter()
    if not index.is_trained:
        if train is None:
            raise IndexLayerError(f"{factory!r} needs training vectors")
        index.train(np.ascontiguousarray(train, dtype=np.float32))
    t1 = time.perf_counter()
    start = 0
    for chunk in [chunks] if isinstance(chunks, np.ndarray) else chunks:
        x = np.ascontiguousarray(chunk, dtype=np.float32)
        if with_ids and not native:
            index.add_with_ids(x, np.arange(start, start + len(x), dtype=np.int64))
        else:
            index.add(x)
        start += len(x)
    t2 = time.perf_counter()
    return BuiltIndex(index=index, factory=factory, train_s=t1 - t0, add_s=t2 - t1)


def coarse_centroids(index: Any) -> np.ndarray | None:
    """(nlist, d) centroids of an IVF index with no transform in front (None otherwise), for `build_index`."""
    ivf = _plain_ivf(index)
    if ivf is not None and ivf.quantizer.ntotal == ivf.nlist:
        return np.asarray(ivf.quantizer.reconstruct_n(0, ivf.nlist), dtype=np.float32)
    return None


def _plain_ivf(index: Any) -> Any:
    """The IVF of an index working in the input space (itself, or below an id map and/or a refine stage); None behind
    a transform."""
    node = index
    if isinstance(node, faiss.IndexIDMap | faiss.IndexIDMap2):
        node = faiss.downcast_index(node.index)
    if isinstance(node, faiss.IndexRefine):
        node = faiss.downcast_index(node.base_index)
    return node if isinstance(node, faiss.IndexIVF) else None


def set_params(index: Any, params: str) -> None:
    """Apply a faiss ParameterSpace string ("nprobe=16", "efSearch=64,..."); "" does nothing."""
    if params:
        space: Any = faiss.ParameterSpace()
        space.set_index_parameters(index, params)


def param_sweep(factory: str, nlist: int | None = None) -> list[str]:
    """Search-parameter strings to try for `factory`, cheapest (lowest recall) first; [""] when nothing to tune."""
    own = _factory.factory_nlist(factory)
    if own is None:
        return [f"efSearch={ef}" for ef in EF_SEARCH_SWEEP] if "HNSW" in factory else [""]
    lists = nlist or own
    probes = [p for p in NPROBE_SWEEP if p < lists] + [lists]
    extra = f",k_factor_rf={REFINE_K_FACTOR}" if "Refine" in factory or "RFlat" in factory else ""
    return [_factory.ivf_params(factory, p) + extra for p in probes]


# ---------------------------------------------------------------------------------------------------------- measuring


def exact_neighbors(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Ids (Q, k) int64 of the exact top-k inner products of `queries` (Q, d) in `base` (N, d), for ground truth."""
    flat = faiss.IndexFlatIP(base.shape[1])
    flat.add(np.ascontiguousarray(base, dtype=np.float32))
    _, ids = flat.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(base)))
    return ids


# ids (Q, m) -> their exact inner products (Q, m) with each row's query; see `exact_scorer`.
ExactScores = Callable[[np.ndarray], np.ndarray]
# Two float32 inner products of one pair of unit vectors, summed in another order, differ by about 1e-7.
_TIE_TOLERANCE = 1e-5


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int, *, exact_scores: ExactScores | None = None) -> float:
    """Mean fraction of each query's true top-k (truth (Q, >=k)) present in its found top-k (found (Q, >=k)).

    With `exact_scores` (see `exact_scorer`), a found id whose exact score ties the k-th true one counts as well:
    copies of one file share one vector, and which copy an index returns at the end of a list is arbitrary, so an
    exact index would otherwise measure below 1.
    """
    f, t = np.asarray(found)[:, :k], np.asarray(truth)[:, :k]
    hits = ((f[:, :, None] == t[:, None, :]) & (t[:, None, :] >= 0)).any(axis=2)
    if exact_scores is not None:
        valid = t >= 0
        last = np.where(valid.any(axis=1), valid.sum(axis=1) - 1, 0)
        kth = exact_scores(t[np.arange(len(t)), last][:, None])  # (Q, 1); rows with no truth get -inf
        hits |= (f >= 0) & (exact_scores(f) >= kth - _TIE_TOLERANCE)
        hits_per_query = np.minimum(hits.sum(axis=1), valid.sum(axis=1))
        return float(hits_per_query.mean() / k)
    return float(hits.sum(axis=1).mean() / k)


def exact_scorer(queries: np.ndarray, vectors_of: Callable[[np.ndarray], np.ndarray]) -> ExactScores:
    """A function from ids (Q, m) to the exact inner products (Q, m) of row q's query with those ids' vectors
    (-inf for -1), reading each distinct id's vector once through `vectors_of` (ids (U,) -> (U, d))."""
    q = np.ascontiguousarray(queries, dtype=np.float32)

    def scores(ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        valid = ids >= 0
        out = np.full(ids.shape, -np.inf, dtype=np.float32)
        if valid.any():
            unique, inverse = np.unique(ids[valid], return_inverse=True)
            vectors = np.asarray(vectors_of(unique), dtype=np.float32)
            rows = np.nonzero(valid)[0]
            out[valid] = np.einsum("nd,nd->n", q[rows], vectors[inverse])
        return out

    return scores


def single_query_seconds(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Search each query alone, as a user's query arrives; returns per-query seconds (Q,) and ids (Q, k)."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    times = np.empty(len(q))
    ids = np.empty((len(q), k), dtype=np.int64)
    index.search(q[:1], k)  # warm-up: first touch of the lists, lazy allocations
    for i in range(len(q)):
        t0 = time.perf_counter()
        _, found = index.search(q[i : i + 1], k)
        times[i] = time.perf_counter() - t0
        ids[i] = found[0]
    return times, ids


def batch_qps(index: Any, queries: np.ndarray, k: int, batch: int) -> tuple[float, np.ndarray]:
    """Queries per second searching `queries` in batches of `batch`; also the ids found (Q, k)."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    ids = np.empty((len(q), k), dtype=np.int64)
    t0 = time.perf_counter()
    for start in range(0, len(q), batch):
        _, ids[start : start + batch] = index.search(q[start : start + batch], k)
    return len(q) / max(time.perf_counter() - t0, 1e-12), ids


def latency_percentiles(seconds: np.ndarray) -> dict[str, float]:
    """p50/p95/p99 and mean of per-query seconds, in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99), "mean_ms": float(ms.mean())}


# ---------------------------------------------------------------------------------------------------------- choosing


def candidate_factories(n: int, d: int, n_sample: int) -> list[tuple[str, str]]:
    """(factory for the full collection, factory measured on the sample) pairs, the families the tuner tries.

    IVF candidates are measured at the same number of vectors per list as the full collection would have
    (nlist scaled down with the sample): per-query scan work and the probed fraction then match the full size,
    and only the coarse-quantizer cost differs, which `choose_index` measures separately.
    """
    nlist = ivf_nlist(n)
    nlist_s = max(1, min(nlist, round(nlist * n_sample / max(n, 1))))
    pairs = [("Flat", "Flat"), (f"HNSW{HNSW_M}", f"HNSW{HNSW_M}")]
    ivf = ["IVF{},Flat"]
    if nlist >= HNSW_QUANTIZER_MIN_LISTS:
        ivf.append(f"IVF{{}}_HNSW{HNSW_M},Flat")
    m8, m16 = _pq_sizes(d)
    if m8:
        ivf.append(f"IVF{{}},PQ{m8}x4fs,Refine(SQ8)")
        ivf.append(f"IVF{{}},PQ{m8}")
    if m16:
        ivf.append(f"OPQ{m16},IVF{{}},PQ{m16}")
    pairs += [(f.format(nlist), f.format(nlist_s)) for f in ivf]
    return pairs


def _pq_sizes(d: int) -> tuple[int | None, int | None]:
    """PQ sub-quantizer counts with 8 and 16 dimensions each (None when d does not split so)."""
    m8 = d // 8 if d % 8 == 0 and d >= 16 else None
    m16 = d // 16 if d % 16 == 0 and d >= 32 else None
    return m8, m16


def choose_index(
    sample: np.ndarray,
    n: int,
    *,
    max_memory: int | None = None,
    target_recall: float = TARGET_RECALL,
    n_queries: int = 200,
    k: int = 10,
    seed: int = 0,
    exact_max: int | None = None,
    queries: np.ndarray | None = None,
) -> IndexChoice:
    """Pick the factory and search params for a collection of `n` vectors from a sample of its own vectors.

    Flat stays (unmeasured) while `n <= exact_max` (default: the size rule's EXACT_MAX_VECTORS) and it fits the
    budget, or when the sample is too small to say anything (fewer than MIN_SAMPLE vectors besides the queries):
    then the size rule decides. Otherwise every candidate family whose estimated memory for `n` vectors fits
    `max_memory` is built on the sample and swept over its search parameter, cheapest first, stopping at the
    first setting that reaches `target_recall` (recall@k against exact search, on `n_queries` held-out sample
    vectors). Single-query time is measured with the current faiss threads and extrapolated to `n`: Flat
    linearly, IVF by swapping the coarse quantizer's measured cost at the sample's nlist for the full nlist's,
    HNSW by log(n)/log(sample). Among the settings that reach the target the fastest wins; if none does, the
    one with the best recall is returned (and a warning logged).

    Args:
        sample: (S, d) float32 unit vectors drawn from the collection (inner product = cosine, as the engine).
        n: the collection's size.
        max_memory: budget in bytes for the index (None: no limit).
        queries: (Q, d) query vectors to measure with instead of held-out sample vectors, when the caller has
            queries that look like the real ones (a query log; a benchmark's out-of-collection photos). Held-out
            stored vectors are easy queries where the collection holds near-copies of them.

    Raises:
        IndexLayerError: bad sample, or no candidate fits `max_memory` (the message names the smallest).
    """
    started = time.perf_counter()
    x = np.asarray(sample, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] < 1:
        raise IndexLayerError(f"the tuning sample must have shape (S, d), got {x.shape}")
    d = int(x.shape[1])
    exact_limit = _factory.EXACT_MAX_VECTORS if exact_max is None else exact_max
    flat_bytes = estimate_memory("Flat", n, d)
    base_info = {"n": n, "dim": d, "max_memory": max_memory, "target_recall": target_recall}
    if n <= exact_limit and (max_memory is None or flat_bytes <= max_memory):
        return IndexChoice("Flat", "", None, None, flat_bytes, **base_info)  # type: ignore[arg-type]
    n_queries = min(n_queries, max(len(x) // 10, 1)) if queries is None else 0
    if len(x) - n_queries < MIN_SAMPLE:
        factory = _factory.choose_factory(n, d)
        logger.info("tuning sample of %d vectors is too small to measure; size rule gives %s", len(x), factory)
        memory = estimate_memory(factory, n, d)
        if max_memory is not None and memory > max_memory:
            raise IndexLayerError(
                f"{factory} for {n} vectors needs about {format_bytes(memory)}, more than the budget of "
                f"{format_bytes(max_memory)}, and {len(x)} sample vectors are too few to measure a smaller index"
            )
        return IndexChoice(factory, _factory.default_search_params(factory), None, None, memory, **base_info)  # type: ignore[arg-type]

    if queries is None:
        order = np.random.default_rng(seed).permutation(len(x))
        queries, base = x[order[:n_queries]], x[order[n_queries:]]
    else:
        queries, base = np.asarray(queries, dtype=np.float32), x
        if queries.ndim != 2 or queries.shape[1] != d or len(queries) == 0:
            raise IndexLayerError(f"tuning queries must have shape (Q, {d}), got {queries.shape}")
    truth = exact_neighbors(base, queries, k)
    scores = exact_scorer(queries, lambda ids: base[ids])
    pairs = candidate_factories(n, d, len(base))
    fitting = [(full, small, estimate_memory(full, n, d)) for full, small in pairs]
    fitting = [(f, s, mem) for f, s, mem in fitting if max_memory is None or mem <= max_memory]
    if not fitting:
        smallest = min(((f, estimate_memory(f, n, d)) for f, _ in pairs), key=lambda t: t[1])
        raise IndexLayerError(
            f"no index for {n} vectors of dimension {d} fits in {format_bytes(max_memory or 0)}: the smallest "
            f"candidate, {smallest[0]}, needs about {format_bytes(smallest[1])}"
        )

    measured: list[dict[str, Any]] = []
    coarse_cache: dict[int, float] = {}
    # OPQ's rotation is the slowest thing to train by far; it only earns that when nothing cheaper reaches the target.
    plain = [c for c in fitting if not c[0].startswith("OPQ")]
    rotated = [c for c in fitting if c[0].startswith("OPQ")]
    for group in (plain, rotated):
        if any(r["recall_at_10"] >= target_recall for r in measured):
            break
        for full, small, memory in group:
            measured.extend(
                _measure_candidate(full, small, memory, base, queries, truth, scores, n, k, target_recall, coarse_cache)
            )
    if not measured:
        raise IndexLayerError(f"no candidate index could be built on the {len(base)}-vector sample")
    good = sorted((r for r in measured if r["recall_at_10"] >= target_recall), key=lambda r: -r["qps"])
    alternatives: list[dict[str, Any]] = []
    for r in good[1:]:
        if r["factory"] != good[0]["factory"] and all(a["factory"] != r["factory"] for a in alternatives):
            alternatives.append({k_: r[k_] for k_ in ("factory", "search_params", "recall_at_10", "qps")})
    if good:
        best = good[0]
    else:
        best = max(measured, key=lambda r: (r["recall_at_10"], r["qps"]))
        logger.warning(
            "no index reached recall@%d %.2f on the sample; best is %s %s at %.3f",
            k,
            target_recall,
            best["factory"],
            best["search_params"],
            best["recall_at_10"],
        )
    return IndexChoice(
        factory=best["factory"],
        search_params=best["search_params"],
        recall_at_10=best["recall_at_10"],
        qps=best["qps"],
        memory_bytes=best["memory_bytes"],
        candidates_measured=measured,
        sample_size=len(base),
        queries=len(queries),
        measured=True,
        seconds=round(time.perf_counter() - started, 3),
        alternatives=alternatives,
        **base_info,  # type: ignore[arg-type]
    )


def _measure_candidate(
    full: str,
    small: str,
    memory: int,
    base: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    exact_scores: ExactScores,
    n: int,
    k: int,
    target_recall: float,
    coarse_cache: dict[int, float],
) -> list[dict[str, Any]]:
    """Build `small` on the sample base and sweep its search parameter until it reaches the target."""
    d = base.shape[1]
    try:
        built = build_index(small, d, base, base, with_ids=False)
    except (RuntimeError, IndexLayerError) as exc:  # e.g. too few training points for this sample
        logger.info("tuning: %s not measured: %s", small, exc)
        return []
    rows = []
    for params in param_sweep(small):
        set_params(built.index, params)
        seconds, found = single_query_seconds(built.index, queries, k)
        recall = recall_at_k(found, truth, k, exact_scores=exact_scores)
        t_sample = float(np.median(seconds))
        full_params, t_full = _extrapolate(full, small, params, t_sample, len(base), n, d, coarse_cache)
        row = {
            "factory": full,
            "search_params": full_params,
            "recall_at_10": round(recall, 4),
            "qps": round(1.0 / t_full, 2),
            "measured_as": small,
            "measured_params": params,
            "qps_sample": round(1.0 / t_sample, 2),
            "memory_bytes": memory,
            "build_s": round(built.build_s, 3),
        }
        rows.append(row)
        logger.debug("tuning: %s", row)
        if recall >= target_recall:
            break
    return rows


def _extrapolate(
    full: str, small: str, params: str, t_sample: float, n_sample: int, n: int, d: int, cache: dict[int, float]
) -> tuple[str, float]:
    """Search params and single-query seconds for `n` vectors from what was measured on the sample.

    Flat scans n vectors: time grows linearly. IVF measured at the full size's list length scans as much per
    probe, so only the coarse quantizer differs (its cost at both nlists is measured). HNSW needs a wider beam
    as the graph grows (recall at a fixed efSearch falls with n): efSearch and time are scaled by
    log(n) / log(sample), a heuristic on the safe side of what the graph's depth alone would ask.
    """
    if n <= n_sample:
        return params, t_sample
    if full == "Flat":
        return params, t_sample * n / n_sample
    if "_HNSW" in full:  # IVF over an HNSW quantizer: a probe scans as much, and the graph's cost grows ~log(nlist)
        return params, t_sample
    if "HNSW" in full and "IVF" not in full:
        ratio = math.log(n) / math.log(max(n_sample, 2))
        match = re.search(r"efSearch=(\d+)", params)
        if match is None:
            return params, t_sample * ratio
        ef = int(match.group(1))
        wider = 8 * math.ceil(ef * ratio / 8)
        return params.replace(match.group(0), f"efSearch={wider}"), t_sample * wider / ef
    big, little = _factory.factory_nlist(full), _factory.factory_nlist(small)
    if big and little and big != little:
        return params, max(t_sample + _coarse_seconds(big, d, cache) - _coarse_seconds(little, d, cache), t_sample)
    return params, t_sample


def _coarse_seconds(nlist: int, d: int, cache: dict[int, float]) -> float:
    """Median single-query time of a flat search over `nlist` random centroids: an IVF's coarse-quantizer step."""
    if nlist not in cache:
        rng = np.random.default_rng(nlist)
        centroids = rng.standard_normal((nlist, d)).astype(np.float32)
        flat = faiss.IndexFlatIP(d)
        flat.add(centroids)
        seconds, _ = single_query_seconds(flat, centroids[:50], 8)
        cache[nlist] = float(np.median(seconds))
    return cache[nlist]


# ---------------------------------------------------------------------------------------------------------- checking


def exact_neighbors_chunked(
    queries: np.ndarray,
    chunks: Iterable[tuple[np.ndarray, np.ndarray]],
    k: int,
    *,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """Exact top-k ids (Q, k) by inner product over a collection read as (ids, vectors) chunks, never held whole.

    `exclude` (Q,) gives each query an id that must not count (the query's own, when queries are stored vectors):
    leave-one-out ground truth. Rows with fewer than k candidates end in -1.
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    heap: Any = faiss.ResultHeap(len(q), k, keep_max=True)
    for ids, vectors in chunks:
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            continue
        scores = q @ np.ascontiguousarray(vectors, dtype=np.float32).T  # (Q, c): one BLAS call per chunk
        if exclude is not None:
            scores[np.asarray(exclude)[:, None] == ids[None, :]] = -np.inf
        take = min(k, len(ids))
        top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        heap.add_result(np.ascontiguousarray(np.take_along_axis(scores, top, axis=1)), np.ascontiguousarray(ids[top]))
    heap.finalize()
    return np.asarray(heap.I, dtype=np.int64)  # unfilled slots keep faiss's id -1


def recall_leaving_out(
    found: np.ndarray, truth: np.ndarray, own: np.ndarray | None, k: int, *, exact_scores: ExactScores | None = None
) -> float:
    """recall@k of `found` (Q, >=k+1 when `own` is given) after dropping each query's own id from its results."""
    f = np.asarray(found)
    if own is not None:
        keep = f != np.asarray(own)[:, None]
        f = np.stack([row[mask][:k] for row, mask in zip(f, keep, strict=True)])
    return recall_at_k(f, truth, k, exact_scores=exact_scores)


def calibrate(
    index: SearchableIndex,
    factory: str,
    start_params: str,
    queries: np.ndarray,
    truth: np.ndarray,
    *,
    own: np.ndarray | None = None,
    k: int = 10,
    target_recall: float = TARGET_RECALL,
    exact_scores: ExactScores | None = None,
) -> Calibration:
    """Raise the search parameter of a built full-size index from `start_params` until recall@k reaches the target.

    The sample measurement extrapolates to the full size (HNSW's beam by a log-ratio heuristic, IVF by the lists'
    length); on data where near-copies cluster densely both were seen to overshoot by far (HNSW32 picked at
    efSearch 48 for 1M vectors, recall@10 0.15 there). This check measures the real thing once after the build.

    Args:
        index: the built index; its search params are left at the returned ones.
        factory: its factory string (what to sweep: efSearch or nprobe).
        start_params: the tuner's choice; the sweep starts at it and only goes up.
        queries: (Q, d) query vectors; `truth` (Q, >=k) their exact top-k ids at full size.
        own: (Q,) each query's own id when the queries are stored vectors: dropped from its results (the truth must
            leave it out too, see `exact_neighbors_chunked`).
        exact_scores: lets ties with the k-th true neighbour count (see `recall_at_k`).
    """
    sweep = _sweep_from(factory, start_params)
    extra = 1 if own is not None else 0
    tried: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    for params in sweep:
        index.set_search_params(params)
        _, found = index.search(queries, k + extra)
        recall = round(recall_leaving_out(found, truth, own, k, exact_scores=exact_scores), 4)
        row = {"search_params": params, "recall_at_10": recall}
        tried.append(row)
        if best is None or recall > best["recall_at_10"]:
            best = row
        if recall >= target_recall:
            return Calibration(factory, params, recall, True, len(queries), tried)
    assert best is not None  # the sweep is never empty
    index.set_search_params(best["search_params"])
    return Calibration(factory, best["search_params"], best["recall_at_10"], False, len(queries), tried)


def _sweep_from(factory: str, start_params: str) -> list[str]:
    """The factory's parameter sweep from `start_params` upwards (its first value >= the start's, then the rest)."""
    sweep = param_sweep(factory)
    if start_params in sweep:
        return sweep[sweep.index(start_params) :]
    first = _factory.params_probe(start_params)
    if first is None:
        return [start_params] if start_params and sweep == [""] else sweep
    rest = [p for p in sweep if (_factory.params_probe(p) or 0) > first]
    return [start_params, *rest]


# ---------------------------------------------------------------------------------------------------------- helpers


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
