"""Search suite: FAISS factory strings at 10k/100k/1M vectors of dimension 1280 (real Caltech-101 embeddings grown by
seeded perturbation, and clustered Gaussians): build time, memory, recall@1/@10 against exact search, QPS single and
batched, latency percentiles over a nprobe/efSearch sweep; Flat against the memory-bandwidth bound; the tuner's choice.
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from benchmarks.record import rss_bytes
from benchmarks.search_data import Dataset, make_dataset
from benchmarks.suites import BenchmarkError, percentiles_ms
from benchmarks.suites._search_report import goals, plot, table_rows
from indexes.blas import blas_from_small_batches
from indexes.building import build_index, coarse_centroids
from indexes.evaluation import recall_at_k
from indexes.factory import factory_nlist, ivf_nlist
from indexes.memory import estimate_memory, serialized_bytes
from indexes.params import param_sweep, params_probe, set_params
from indexes.tuning import TARGET_RECALL, choose_index, single_query_seconds

logger = logging.getLogger(__name__)

HELP = "FAISS indexes at 10k/100k/1M x 1280: recall vs exact, QPS, latency, memory, build; the tuner's choice"
K = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated collection sizes")
    parser.add_argument("--datasets", default="caltech,synthetic", help="caltech and/or synthetic")
    parser.add_argument(
        "--factories",
        default="default",
        help="';'-separated faiss factory strings ({nlist} is filled per size), or 'default' for Flat; HNSW32; "
        "IVF{nlist},Flat; IVF{nlist}_HNSW32,Flat; IVF{nlist}_HNSW32,SQ8; IVF{nlist},PQ160; "
        "IVF{nlist},PQ160x4fs,Refine(SQ8); OPQ80,IVF{nlist},PQ80",
    )
    parser.add_argument("--queries", type=int, default=500, help="queries for recall and batched QPS")
    parser.add_argument("--single-queries", type=int, default=200, help="queries timed one at a time (latency)")
    parser.add_argument("--batch", type=int, default=256, help="batch size of the batched QPS")
    parser.add_argument(
        "--single-threads",
        default="1,all",
        help="faiss thread counts the single-query timings run at, comma-separated ('all' = --threads); the first "
        "is the headline. On 2 cores one thread scanned Flat 1M x 1280 faster than two (see the record)",
    )
    parser.add_argument(
        "--sigma", type=float, help="norm of the noise added to real vectors [default: from their nearest neighbours]"
    )
    parser.add_argument("--tune-sample", type=int, default=20_000, help="vectors the tuner measures on")
    parser.add_argument("--no-tune", action="store_true", help="skip the tuner's choice")


# ---------------------------------------------------------------------------------------------------------- measuring


def copy_bandwidth(nbytes: int = 256 * 2**20, repeats: int = 5) -> float:
    """Best of `repeats` numpy copies of an `nbytes` array, in GB/s, counting bytes read plus bytes written (STREAM
    "copy" convention): the rate at which a scan of float32 vectors can at best stream them through the CPU."""
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * nbytes / best / 1e9


def default_factories(n: int, d: int) -> list[str]:
    nlist = ivf_nlist(n)
    out = ["Flat", "HNSW32", f"IVF{nlist},Flat", f"IVF{nlist}_HNSW32,Flat", f"IVF{nlist}_HNSW32,SQ8"]
    if d % 8 == 0:
        out += [f"IVF{nlist},PQ{d // 8}", f"IVF{nlist},PQ{d // 8}x4fs,Refine(SQ8)"]
    if d % 16 == 0:
        out.append(f"OPQ{d // 16},IVF{nlist},PQ{d // 16}")
    return out


def train_rows(factory: str, n: int) -> int:
    """Training vectors: 40 per inverted list (faiss warns below 39), at least 20k for the PQ codebooks, at most n."""
    nlist = factory_nlist(factory) or 0
    return min(n, max(40 * nlist, 20_000)) if nlist or "PQ" in factory else 0


def measure_factory(
    data: Dataset,
    n: int,
    factory: str,
    truth: np.ndarray,
    args: argparse.Namespace,
    shared: dict[int, np.ndarray],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Build one index, measure it over its parameter sweep, free it. Returns (build facts, one row per param).

    IVF variants at one nlist share the coarse centroids of the first one built (`shared`, by nlist): k-means over
    160k x 1280 took minutes per variant here, and sharing also makes the variants differ only in what they claim to.
    """
    gc.collect()
    rss0 = rss_bytes(os.getpid())
    train = data.rows(n, train_rows(factory, n), args.seed + 7) if train_rows(factory, n) else None
    nlist = factory_nlist(factory) or 0
    built = build_index(factory, data.d, train, data.chunks(n), centroids=shared.get(nlist))
    centroids = coarse_centroids(built.index)
    reused = nlist in shared and centroids is not None
    if centroids is not None:
        shared.setdefault(nlist, centroids)
    del train
    gc.collect()
    build = {
        "factory": factory,
        "shared_centroids": reused,
        "train_s": round(built.train_s, 3),
        "add_s": round(built.add_s, 3),
        "serialized_bytes": serialized_bytes(built.index),
        "estimated_bytes": estimate_memory(factory, n, data.d),
        "rss_delta_bytes": rss_bytes(os.getpid()) - rss0,
    }
    queries = data.queries[: args.queries]
    single = queries[: args.single_queries]
    rows: list[dict[str, Any]] = []
    for params in param_sweep(factory):
        set_params(built.index, params)
        single_rows: dict[str, float] = {}
        for i, threads in enumerate(args.single_thread_counts):
            faiss.omp_set_num_threads(threads)
            seconds, _ = single_query_seconds(built.index, single, K)
            suffix = "" if i == 0 else f"_t{threads}"  # the first thread count's keys are unsuffixed
            single_rows[f"qps_1{suffix}"] = round(len(seconds) / float(seconds.sum()), 1)
            single_rows.update(
                {key + suffix: round(v, 3) for key, v in percentiles_ms(seconds, points=(50, 95, 99)).items()}
            )
        faiss.omp_set_num_threads(args.batch_threads)
        qps_batch, found = batch_qps(built.index, queries, K, args.batch)
        row = {
            "recall_at_1": round(recall_at_k(found, truth, 1), 4),
            "recall_at_10": round(recall_at_k(found, truth, K), 4),
            **single_rows,
            f"qps_{args.batch}": round(qps_batch, 1),
        }
        rows.append({"search_params": params, **row})
        logger.info("search: %s n=%d %s %s", data.name, n, factory, row)
        if row["recall_at_10"] >= 0.999:
            break  # wider sweeps only cost time from here
    del built
    gc.collect()
    return build, rows


def batch_qps(index: Any, queries: np.ndarray, k: int, batch: int) -> tuple[float, np.ndarray]:
    """Queries per second searching `queries` in batches of `batch`, with faiss's BLAS switch set as VectorIndex sets
    it for a search; also the ids found (Q, k)."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    ids = np.empty((len(q), k), dtype=np.int64)
    with blas_from_small_batches():
        t0 = time.perf_counter()
        for start in range(0, len(q), batch):
            _, ids[start : start + batch] = index.search(q[start : start + batch], k)
        seconds = time.perf_counter() - t0
    return len(q) / max(seconds, 1e-12), ids


def measure_size(data: Dataset, n: int, args: argparse.Namespace, bandwidth: float) -> dict[str, Any]:
    started = time.perf_counter()
    factories = (
        default_factories(n, data.d)
        if args.factories == "default"
        else [f.strip().replace("{nlist}", str(ivf_nlist(n))) for f in args.factories.split(";") if f.strip()]
    )
    # Ground truth from an exact index built chunk by chunk (the data set never sits in memory twice).
    exact = build_index("Flat", data.d, None, data.chunks(n), with_ids=False)
    _, truth = exact.index.search(data.queries[: args.queries], K)
    del exact
    gc.collect()
    result: dict[str, Any] = {"n": n, "factories": [], "seconds": {}}
    shared: dict[int, np.ndarray] = {}
    for factory in factories:
        t0 = time.perf_counter()
        build, rows = measure_factory(data, n, factory, truth, args, shared)
        result["factories"].append({**build, "sweep": rows})
        result["seconds"][factory] = round(time.perf_counter() - t0, 1)
    flat = next((f for f in result["factories"] if f["factory"] == "Flat"), None)
    if flat is not None:
        # per thread count of the single-query timings: Flat against the bandwidth bound, and the fastest index at
        # the recall target against Flat at the same threads (the first count's entries are unsuffixed)
        for i, threads in enumerate(args.single_thread_counts):
            suffix = "" if i == 0 else f"_t{threads}"
            flat_ms = flat["sweep"][0]["mean_ms" + suffix]
            bound_ms = n * data.d * 4 / (bandwidth * 1e9) * 1000
            result["flat_vs_bandwidth" + suffix] = {
                "threads": threads,
                "bytes_scanned_per_query": n * data.d * 4,
                "bound_ms": round(bound_ms, 3),
                "flat_mean_ms": flat_ms,
                "ratio": round(flat_ms / bound_ms, 3),
            }
            flat_qps = flat["sweep"][0]["qps_1" + suffix]
            best = [
                (f["factory"], r)
                for f in result["factories"]
                if f["factory"] != "Flat"
                for r in f["sweep"]
                if r["recall_at_10"] >= TARGET_RECALL
            ]
            if best:
                name, row = max(best, key=lambda t: t[1]["qps_1" + suffix])
                result["best_at_target" + suffix] = {
                    "threads": threads,
                    "factory": name,
                    "search_params": row["search_params"],
                    "recall_at_10": row["recall_at_10"],
                    "qps_1": row["qps_1" + suffix],
                    "speedup_vs_flat": round(row["qps_1" + suffix] / flat_qps, 1),
                }
    if not args.no_tune:
        sample = data.rows(n, args.tune_sample, args.seed + 11)
        engine = choose_index(sample, n)  # what the engine does (Flat up to the exact limit)
        forced = choose_index(sample, n, exact_max=0)  # what measurement picks at any size
        # the same, measured with queries like the suite's (fresh ones, not those scored below) instead of
        # held-out sample vectors
        informed = choose_index(sample, n, exact_max=0, queries=data.tune_queries)
        result["tuner"] = {"engine": _choice_summary(engine)}
        for key, choice in (("measured", forced), ("measured_with_like_queries", informed)):
            result["tuner"][key] = {
                **_choice_summary(choice),
                "at_full_size": _lookup(result, choice.factory, choice.search_params),
                "raised_at_full_size": _raised(result, choice.factory, choice.search_params),
            }
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    return result


def _choice_summary(choice: Any) -> dict[str, Any]:
    return {
        "factory": choice.factory,
        "search_params": choice.search_params,
        "predicted_recall_at_10": choice.recall_at_10,
        "predicted_qps": choice.qps,
        "memory_bytes": choice.memory_bytes,
        "sample_size": choice.sample_size,
        "measured": choice.measured,
        "seconds": choice.seconds,
    }


def _raised(result: dict[str, Any], factory: str, params: str) -> dict[str, Any] | None:
    """What the engine's full-size check (indexes.calibrate) would settle on, read off this suite's sweep of the
    chosen factory with the suite's own queries: the first params from the choice upwards that reach the target."""
    for f in result["factories"]:
        if f["factory"] == factory:
            sweep = [r["search_params"] for r in f["sweep"]]
            chosen = params_probe(params) or 0
            start = next((i for i, p in enumerate(sweep) if (params_probe(p) or 0) >= chosen), len(sweep))
            for row in f["sweep"][start:]:
                if row["recall_at_10"] >= TARGET_RECALL:
                    return row
    return None


def _lookup(result: dict[str, Any], factory: str, params: str) -> dict[str, Any] | None:
    """The full-size row of the tuner's choice, when the suite measured that factory at those params."""
    for f in result["factories"]:
        if f["factory"] == factory:
            for row in f["sweep"]:
                if row["search_params"] == params:
                    return row
    return None


# ---------------------------------------------------------------------------------------------------------- run


def run(args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """Every (dataset, size, factory, params) measured one index at a time; the record, the table and one PNG per
    dataset (recall@10 against single-query QPS, log scale)."""
    try:
        sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
    except ValueError as exc:
        raise BenchmarkError(f"--sizes must be comma-separated integers, got {args.sizes!r}") from exc
    names = [s.strip() for s in str(args.datasets).split(",") if s.strip()]
    if not sizes or min(sizes) < 100 or not set(names) <= {"caltech", "synthetic"} or not names:
        raise BenchmarkError("--sizes needs sizes >= 100 and --datasets a subset of caltech,synthetic")
    if args.tiny:  # seconds: no PQ training, a tuning sample too small to measure (the size rule answers)
        sizes = [1_000]
        args.queries, args.single_queries, args.tune_sample = 20, 10, 500
        if args.factories == "default":
            args.factories = "Flat;HNSW32;IVF{nlist},Flat"
    threads = int(getattr(args, "threads", 0) or 0)
    if threads > 0:
        faiss.omp_set_num_threads(threads)
    args.batch_threads = faiss.omp_get_max_threads()
    try:
        counts = [args.batch_threads if t.strip() == "all" else int(t) for t in str(args.single_threads).split(",")]
    except ValueError as exc:
        raise BenchmarkError(f"--single-threads takes counts or 'all', got {args.single_threads!r}") from exc
    args.single_thread_counts = list(dict.fromkeys(c for c in counts if c > 0)) or [1]
    bandwidth = copy_bandwidth(64 * 2**20 if args.tiny else 256 * 2**20)
    record: dict[str, Any] = {
        "protocol": {
            "k": K,
            "metric": "inner product on L2-normalised float32 (cosine), as the engine",
            "recall": "recall@k = |found top-k & exact top-k| / k, exact = faiss IndexFlatIP on the same vectors",
            "qps_1": "queries searched one at a time in a Python loop: count / total seconds, at the first of "
            "single_query_threads faiss threads (keys ending _t{n}: at n threads)",
            "single_query_threads": args.single_thread_counts,
            "qps_batch": f"all queries in batches of {args.batch}",
            "faiss_threads": args.batch_threads,
            "queries": args.queries,
            "single_queries": args.single_queries,
            "bandwidth": "numpy copy of a 256 MiB float32 array, (read + written bytes) / best of 5 seconds",
            "flat_bound": "bytes scanned per query (n * d * 4) / copy bandwidth",
            "training": "IVF/PQ/OPQ train on max(40 * nlist, 20000) random base vectors (at most n)",
            "goals": "largest size: recall@10 >= 0.95 at >= 100x Flat's single-query QPS; Flat <= 1.5x its bound",
        },
        "copy_bandwidth_gbps": round(bandwidth, 2),
        "datasets": {},
    }
    table: list[dict[str, Any]] = []
    figures: list[Path] = []
    for name in names:
        data = make_dataset(name, args, max(sizes))
        entry: dict[str, Any] = {"describe": data.describe, "sizes": []}
        for n in sizes:
            logger.info("search: %s at %d vectors", name, n)
            size = measure_size(data, n, args, bandwidth)
            entry["sizes"].append(size)
            table.extend(table_rows(name, size))
        record["datasets"][name] = entry
        figures.append(plot(out_dir / f"search_{name}.png", name, entry["sizes"]))
    record["goals"] = goals(record)
    return {"record": record, "figures": figures, "table": table}
