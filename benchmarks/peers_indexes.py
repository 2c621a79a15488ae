"""Index choice and HNSW side by side on the search suite's vectors (Caltech-101 embeddings grown by perturbed copies,
queries from the test photos): the engine's tuner against autofaiss under the same memory budget, and the engine's
HNSW build (faiss) against hnswlib with the same graph degree and construction beam. Recall@10 against exact search,
single-query QPS at one thread, build time and memory, each pair measured in this process on the same arrays.
"""

from __future__ import annotations

import gc
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from benchmarks.record import rss_bytes
from benchmarks.search_data import Dataset
from indexes.building import build_index
from indexes.calibration import calibrate
from indexes.evaluation import exact_neighbors, exact_neighbors_chunked, recall_at_k
from indexes.factory import HNSW_EF_CONSTRUCTION
from indexes.memory import parse_memory, serialized_bytes
from indexes.params import EF_SEARCH_SWEEP, param_sweep, params_probe, set_params
from indexes.tuning import HNSW_M, TARGET_RECALL, choose_index, single_query_seconds

logger = logging.getLogger(__name__)

K = 10
#: The engine's tuning sample and held-out queries, and its full-size check (simsearch.collection.index_tuning).
TUNE_SAMPLE = 20_000
TUNE_QUERIES = 200
CALIBRATION_QUERIES = 200
CHUNK = 50_000
#: Recall levels at which the two HNSW builds' single-query QPS are compared (interpolated on each sweep).
MATCHED_RECALLS = (0.95, 0.99, 0.995, 0.999)


@dataclass
class Vectors:
    """One size of the search suite's data set, held whole (autofaiss takes an array), with the exact top-10."""

    base: np.ndarray
    queries: np.ndarray
    truth: np.ndarray

    @classmethod
    def make(cls, data: Dataset, n: int, n_queries: int) -> Vectors:
        base = np.concatenate(list(data.chunks(n)))
        queries = np.ascontiguousarray(data.queries[:n_queries])
        return cls(base, queries, exact_neighbors(base, queries, K))


@dataclass
class Timing:
    single_queries: int
    build_threads: int


def measure(index: Any, vectors: Vectors, timing: Timing, params: str = "") -> dict[str, Any]:
    """Recall@10 against exact search on every query and single-query QPS at one faiss thread; faiss threads are
    left at `timing.build_threads`."""
    set_params(index, params)
    faiss.omp_set_num_threads(1)
    seconds, _ = single_query_seconds(index, vectors.queries[: timing.single_queries], K)
    _, found = index.search(vectors.queries, K)
    faiss.omp_set_num_threads(timing.build_threads)
    return {
        "search_params": params,
        "recall_at_10": round(recall_at_k(found, vectors.truth, K), 4),
        "qps_1": round(len(seconds) / float(seconds.sum()), 1),
        "p50_ms": round(float(np.median(seconds)) * 1000, 3),
    }


class _Searchable:
    """What `indexes.calibrate` asks of an index, over a bare faiss index."""

    def __init__(self, index: Any) -> None:
        self.index = index

    def set_search_params(self, params: str) -> None:
        set_params(self.index, params)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return scores, ids


def _train_rows(base: np.ndarray, factory: str, seed: int) -> np.ndarray | None:
    """Training vectors as the search suite draws them: 40 per list, at least 20k for PQ codebooks, at most n."""
    from benchmarks.suites.search import train_rows

    count = train_rows(factory, len(base))
    if not count:
        return None
    pick = np.sort(np.random.default_rng(seed).choice(len(base), size=count, replace=False))
    return base[pick]


def simsearch_choice(vectors: Vectors, budget: int, timing: Timing, *, exact_max: int | None) -> dict[str, Any]:
    """What the engine does for a collection of these vectors: the tuner on a seeded sample of stored vectors, the
    choice built over all of them, then the full-size check that raises nprobe/efSearch until the recall goal is met on
    stored vectors left out of their own results. `exact_max=0` forces measurement where the engine keeps Flat."""
    base = vectors.base
    n, d = base.shape
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    sample = base[np.sort(rng.choice(n, size=min(n, TUNE_SAMPLE), replace=False))]
    choice = choose_index(sample, n, max_memory=budget, n_queries=TUNE_QUERIES, exact_max=exact_max)
    tune_s = time.perf_counter() - started
    del sample
    gc.collect()
    rss0 = rss_bytes(os.getpid())
    built = build_index(choice.factory, d, _train_rows(base, choice.factory, 7), base)
    params, check = choice.search_params, None
    check_started = time.perf_counter()
    if choice.measured:
        own = np.sort(np.random.default_rng(1).choice(n, size=min(n // 2, CALIBRATION_QUERIES), replace=False))
        chunks = ((np.arange(s, min(n, s + CHUNK)), base[s : s + CHUNK]) for s in range(0, n, CHUNK))
        truth = exact_neighbors_chunked(base[own], chunks, K, exclude=own)
        check = calibrate(_Searchable(built.index), choice.factory, params, base[own], truth, own=own)
        params = check.search_params
    check_s = time.perf_counter() - check_started
    row = {
        "side": "simsearch" if exact_max is None else "simsearch (measured)",
        "factory": choice.factory,
        **measure(built.index, vectors, timing, params),
        "build_s": round(tune_s + built.build_s + check_s, 1),
        "tune_s": round(tune_s, 1),
        "train_add_s": round(built.build_s, 1),
        "check_s": round(check_s, 1),
        "index_mib": round(serialized_bytes(built.index) / 2**20, 1),
        "rss_delta_mib": round((rss_bytes(os.getpid()) - rss0) / 2**20, 1),
        "predicted_recall_at_10": choice.recall_at_10,
        "full_size_check": None if check is None else {"recall_at_10": check.recall_at_10, "reached": check.reached},
    }
    del built
    gc.collect()
    return row


def autofaiss_choice(vectors: Vectors, budget_text: str, timing: Timing, reach: float | None) -> dict[str, Any]:
    """autofaiss's `build_index` on the same array under the same budget (its index choice and its search params,
    tuned for its default 10 ms query-time limit), then its index's own parameter swept up to `reach` recall."""
    from autofaiss import build_index as autofaiss_build

    gc.collect()
    rss0 = rss_bytes(os.getpid())
    started = time.perf_counter()
    index, infos = autofaiss_build(
        vectors.base,
        save_on_disk=False,
        index_path=None,
        index_infos_path=None,
        max_index_memory_usage=budget_text,
        current_memory_available="16G",
        metric_type="ip",
        nb_cores=timing.build_threads,
        verbose=logging.WARNING,
    )
    build_s = time.perf_counter() - started
    if index is None:
        return {"side": "autofaiss", "error": "autofaiss built no index under this budget"}
    key = str((infos or {}).get("index_key", ""))
    own_params = str((infos or {}).get("index_param", ""))
    row: dict[str, Any] = {
        "side": "autofaiss",
        "factory": key,
        **measure(index, vectors, timing, own_params),
        "build_s": round(build_s, 1),
        "index_mib": round(serialized_bytes(index) / 2**20, 1),
        "rss_delta_mib": round((rss_bytes(os.getpid()) - rss0) / 2**20, 1),
    }
    if reach is not None and row["recall_at_10"] < reach:
        row["raised_to_reach"] = _raise(index, key, own_params, vectors, timing, reach)
    faiss.omp_set_num_threads(timing.build_threads)
    del index
    gc.collect()
    return row


def _raise(index: Any, key: str, start: str, vectors: Vectors, timing: Timing, reach: float) -> dict[str, Any] | None:
    """The first setting of the index's own sweep above `start` whose recall@10 reaches `reach`."""
    first = params_probe(start.split(",")[0]) if start else None
    for params in param_sweep(key):
        if first is not None and (params_probe(params) or 0) <= first:
            continue
        row = measure(index, vectors, timing, params)
        if row["recall_at_10"] >= reach:
            return row
    return None


def index_choice(vectors: Vectors, budget_text: str, timing: Timing, *, forced: bool) -> dict[str, Any]:
    """The engine's choice (and, with `forced`, the tuner's measured choice where the engine keeps Flat) against
    autofaiss's; autofaiss's index is also raised to the best recall the engine's sides reached."""
    budget = parse_memory(budget_text)
    sides = [simsearch_choice(vectors, budget, timing, exact_max=None)]
    if forced and sides[0]["factory"] == "Flat":
        sides.append(simsearch_choice(vectors, budget, timing, exact_max=0))
    approximate = [s["recall_at_10"] for s in sides if s["factory"] != "Flat"]
    peer = autofaiss_choice(vectors, budget_text, timing, max(approximate) if approximate else None)
    sides.append(peer)
    versus = {
        side["side"]: {
            "qps_ratio": round(side["qps_1"] / peer["qps_1"], 3),
            "recall_difference": round(side["recall_at_10"] - peer["recall_at_10"], 4),
        }
        for side in sides[:-1]
        if "qps_1" in peer
    }
    return {
        "n": len(vectors.base),
        "dim": vectors.base.shape[1],
        "memory_budget": budget_text,
        "sides": sides,
        "versus_autofaiss": versus,
    }


# ---------------------------------------------------------------------------------------------------------- HNSW


def hnsw_pair(vectors: Vectors, timing: Timing) -> dict[str, Any]:
    """The engine's HNSW (faiss, M 32, efConstruction as `indexes.building` sets it) and hnswlib with the same M
    and ef_construction, both built with `timing.build_threads` threads, swept over efSearch/ef; QPS at one thread."""
    d = vectors.base.shape[1]
    faiss.omp_set_num_threads(timing.build_threads)
    rss0 = rss_bytes(os.getpid())
    built = build_index(f"HNSW{HNSW_M}", d, None, vectors.base)
    ours: dict[str, Any] = {
        "library": f"faiss {faiss.__version__} (simsearch's HNSW{HNSW_M})",
        "build_s": round(built.build_s, 1),
        "index_mib": round(serialized_bytes(built.index) / 2**20, 1),
        "rss_delta_mib": round((rss_bytes(os.getpid()) - rss0) / 2**20, 1),
        "sweep": [{"ef": ef, **measure(built.index, vectors, timing, f"efSearch={ef}")} for ef in EF_SEARCH_SWEEP],
    }
    del built
    gc.collect()
    peer = _hnswlib(vectors, timing)
    return {
        "n": len(vectors.base),
        "dim": d,
        "m": HNSW_M,
        "ef_construction": HNSW_EF_CONSTRUCTION,
        "build_threads": timing.build_threads,
        "sides": [ours, peer],
        "at_goal": {side["library"]: _first_reaching(side["sweep"], TARGET_RECALL) for side in (ours, peer)},
        "matched": [
            {
                "recall_at_10": recall,
                "qps_1": {side["library"]: qps_at_recall(side["sweep"], recall) for side in (ours, peer)},
            }
            for recall in MATCHED_RECALLS
        ],
    }


def qps_at_recall(sweep: list[dict[str, Any]], recall: float) -> float | None:
    """Single-query QPS at `recall`, linear between the two sweep settings around it; the first setting's QPS when
    that one already reaches it (a lower bound), None when no setting does."""
    previous: dict[str, Any] | None = None
    for row in sweep:
        if row["recall_at_10"] >= recall:
            if previous is None or previous["recall_at_10"] >= row["recall_at_10"]:
                return float(row["qps_1"])
            share = (recall - previous["recall_at_10"]) / (row["recall_at_10"] - previous["recall_at_10"])
            return round(float(previous["qps_1"] + share * (row["qps_1"] - previous["qps_1"])), 1)
        if previous is None or row["recall_at_10"] > previous["recall_at_10"]:
            previous = row
    return None


def _hnswlib(vectors: Vectors, timing: Timing) -> dict[str, Any]:
    import hnswlib

    n, d = vectors.base.shape
    gc.collect()
    rss0 = rss_bytes(os.getpid())
    started = time.perf_counter()
    index = hnswlib.Index(space="ip", dim=d)
    index.init_index(max_elements=n, M=HNSW_M, ef_construction=HNSW_EF_CONSTRUCTION, random_seed=0)
    index.add_items(vectors.base, np.arange(n), num_threads=timing.build_threads)
    build_s = time.perf_counter() - started
    rss = rss_bytes(os.getpid()) - rss0
    with tempfile.TemporaryDirectory(prefix="peers-hnswlib-") as tmp:
        path = os.path.join(tmp, "index.bin")
        index.save_index(path)
        size = os.path.getsize(path)
    index.set_num_threads(1)
    sweep = []
    q = vectors.queries
    for ef in EF_SEARCH_SWEEP:
        index.set_ef(max(ef, K))
        single = q[: timing.single_queries]
        index.knn_query(single[:1], k=K)  # warm-up, as for faiss
        times = np.empty(len(single))
        for i in range(len(single)):
            t0 = time.perf_counter()
            index.knn_query(single[i : i + 1], k=K)
            times[i] = time.perf_counter() - t0
        found, _ = index.knn_query(q, k=K, num_threads=1)
        sweep.append(
            {
                "ef": ef,
                "search_params": f"ef={max(ef, K)}",
                "recall_at_10": round(recall_at_k(found.astype(np.int64), vectors.truth, K), 4),
                "qps_1": round(len(times) / float(times.sum()), 1),
                "p50_ms": round(float(np.median(times)) * 1000, 3),
            }
        )
    return {
        "library": f"hnswlib {_version('hnswlib')}",
        "build_s": round(build_s, 1),
        "index_mib": round(size / 2**20, 1),
        "rss_delta_mib": round(rss / 2**20, 1),
        "sweep": sweep,
    }


def _first_reaching(sweep: list[dict[str, Any]], recall: float) -> dict[str, Any] | None:
    return next((row for row in sweep if row["recall_at_10"] >= recall), None)


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "absent"
