"""The index chosen by measurement: the factory string and search parameters that reach a recall target, fastest
first, within a memory budget, measured on a sample of the collection's own vectors and extrapolated to its size.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import faiss
import numpy as np

from indexes import factory as _factory
from indexes.blas import blas_from_small_batches
from indexes.building import build_index
from indexes.errors import IndexLayerError
from indexes.evaluation import ExactScores, exact_neighbors, exact_scorer, recall_at_k
from indexes.memory import estimate_memory, format_bytes
from indexes.params import default_search_params, param_sweep, set_params

logger = logging.getLogger(__name__)

#: Recall@10 against exact search that a chosen index must reach on held-out queries.
TARGET_RECALL = 0.95
#: Below this many sample vectors (after holding out queries) a measurement says nothing about a large collection.
MIN_SAMPLE = 1_000
#: HNSW graph degree of the HNSW candidate (faiss's usual choice; 32 links, 64 on the bottom layer).
HNSW_M = 32

#: From this many inverted lists on, the flat scan of the centroids costs as much as the probed lists (1280-d,
#: nprobe 16: 4096 centroids read 21 MB per query, the lists ~20 MB), so an HNSW quantizer is a candidate too.
HNSW_QUANTIZER_MIN_LISTS = 2048


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


def candidate_factories(n: int, d: int, n_sample: int) -> list[tuple[str, str]]:
    """(factory for the full collection, factory measured on the sample) pairs, the families the tuner tries.

    IVF candidates are measured at the same number of vectors per list as the full collection would have
    (nlist scaled down with the sample): per-query scan work and the probed fraction then match the full size,
    and only the coarse-quantizer cost differs, which `choose_index` measures separately.
    """
    nlist = _factory.ivf_nlist(n)
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
        return IndexChoice(factory, default_search_params(factory), None, None, memory, **base_info)  # type: ignore[arg-type]

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


def single_query_seconds(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Search each query alone, as a user's query arrives; returns per-query seconds (Q,) and ids (Q, k).

    Runs with faiss's BLAS switch as VectorIndex.search sets it (see `indexes.blas`), so the times are the engine's.
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    times = np.empty(len(q))
    ids = np.empty((len(q), k), dtype=np.int64)
    with blas_from_small_batches():
        index.search(q[:1], k)  # warm-up: first touch of the lists, lazy allocations
        for i in range(len(q)):
            t0 = time.perf_counter()
            _, found = index.search(q[i : i + 1], k)
            times[i] = time.perf_counter() - t0
            ids[i] = found[0]
    return times, ids
