"""Search suite: FAISS factory strings at 10k/100k/1M vectors of dimension 1280 (real Caltech-101 embeddings grown by
seeded perturbation, and clustered Gaussians): build time, memory, recall@1/@10 against exact search, QPS single and
batched, latency percentiles over a nprobe/efSearch sweep; Flat against the memory-bandwidth bound; the tuner's choice.
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from benchmarks.suites import BenchmarkError
from indexes.factory import factory_nlist, params_probe
from indexes.tuning import (
    TARGET_RECALL,
    batch_qps,
    build_index,
    choose_index,
    coarse_centroids,
    estimate_memory,
    ivf_nlist,
    latency_percentiles,
    param_sweep,
    recall_at_k,
    rss_bytes,
    serialized_bytes,
    set_params,
    single_query_seconds,
)

logger = logging.getLogger(__name__)

HELP = "FAISS indexes at 10k/100k/1M x 1280: recall vs exact, QPS, latency, memory, build; the tuner's choice"
EMBEDDINGS = "caltech101_default_embeddings.npz"
CHUNK = 50_000  # vectors generated and added at a time: the data set is never held beside the index in full
SYNTHETIC_CLUSTERS = 1000
#: Points vary around their centre along a shared SYNTHETIC_LATENT-dimensional subspace (norm ~SYNTHETIC_SPREAD) plus
#: a little isotropic noise (norm ~SYNTHETIC_NOISE): isotropic noise alone in 1280 dims makes every point of a cluster
#: nearly equidistant from the others (exact top-10 a matter of ties), unlike real embeddings.
SYNTHETIC_LATENT = 32
SYNTHETIC_SPREAD = 0.6
SYNTHETIC_NOISE = 0.1
SYNTHETIC_DIM = 1280  # the default model's dimension, so both data sets cost the same per vector
K = 10
#: Queries the tuner may measure with when it is given queries like the suite's (never those the suite scores).
TUNE_QUERIES = 200


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


# ---------------------------------------------------------------------------------------------------------- data


class Dataset:
    """A seeded data set of any size, generated chunk by chunk, with its own held-out queries (unit vectors)."""

    name = ""
    describe: dict[str, Any]
    queries: np.ndarray
    tune_queries: np.ndarray

    def __init__(self, d: int, seed: int) -> None:
        self.d, self.seed = d, seed

    def chunk(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def chunks(self, n: int, size: int = CHUNK) -> Iterator[np.ndarray]:
        for start in range(0, n, size):
            yield self.chunk(start, min(n, start + size))

    def rows(self, n: int, count: int, seed: int) -> np.ndarray:
        """`count` distinct random rows of the first `n`, generated chunk by chunk."""
        pick = np.sort(np.random.default_rng(seed).choice(n, size=min(count, n), replace=False))
        parts = []
        for start in range(0, n, CHUNK):
            inside = pick[(pick >= start) & (pick < start + CHUNK)]
            if len(inside):
                parts.append(self.chunk(start, min(n, start + CHUNK))[inside - start])
        return np.concatenate(parts)


def _unit(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


class CaltechGrown(Dataset):
    """The default model's embeddings of the Caltech-101 train split, then perturbed copies of them.

    Row r < R is real vector r; row r >= R is normalise(parent + sigma * g / sqrt(d)), parent the real vector
    (r - R) mod R, g standard normal seeded by (seed, r): each copy is at cosine ~1/sqrt(1 + sigma^2) from its
    parent. Queries are real embeddings of the test split (photos absent from the base).
    """

    name = "caltech"

    def __init__(
        self, real: np.ndarray, queries: np.ndarray, tune_queries: np.ndarray, sigma: float, seed: int
    ) -> None:
        super().__init__(real.shape[1], seed)
        self.real, self.queries, self.tune_queries, self.sigma = real, queries, tune_queries, sigma

    def chunk(self, start: int, stop: int) -> np.ndarray:
        rows = np.arange(start, stop)
        out = np.empty((len(rows), self.d), dtype=np.float32)
        real = rows < len(self.real)
        out[real] = self.real[rows[real]]
        copies = rows[~real]
        if len(copies):
            rng = np.random.default_rng([self.seed, start])
            noise = rng.standard_normal((len(copies), self.d), dtype=np.float32) * (self.sigma / math.sqrt(self.d))
            out[~real] = _unit(self.real[(copies - len(self.real)) % len(self.real)] + noise)
        return out


class Clustered(Dataset):
    """Gaussian clusters around SYNTHETIC_CLUSTERS seeded unit centres: normalise(centre + spread * z B / sqrt(L) +
    noise * g / sqrt(d)), z ~ N(0, I_L), B a seeded (L, d) Gaussian matrix / sqrt(d), g ~ N(0, I_d)."""

    name = "synthetic"

    def __init__(self, d: int, seed: int, n_queries: int) -> None:
        super().__init__(d, seed)
        self.centres = _unit(np.random.default_rng([seed, 1]).standard_normal((SYNTHETIC_CLUSTERS, d)))
        basis = np.random.default_rng([seed, 4]).standard_normal((SYNTHETIC_LATENT, d), dtype=np.float32)
        self.basis = basis * (SYNTHETIC_SPREAD / math.sqrt(d * SYNTHETIC_LATENT))
        self.queries = self._draw(np.random.default_rng([seed, 2]), n_queries)
        self.tune_queries = self._draw(np.random.default_rng([seed, 5]), TUNE_QUERIES)

    def _draw(self, rng: np.random.Generator, count: int) -> np.ndarray:
        which = rng.integers(0, SYNTHETIC_CLUSTERS, count)
        latent = rng.standard_normal((count, SYNTHETIC_LATENT), dtype=np.float32) @ self.basis
        noise = rng.standard_normal((count, self.d), dtype=np.float32) * (SYNTHETIC_NOISE / math.sqrt(self.d))
        return _unit(self.centres[which] + latent + noise)

    def chunk(self, start: int, stop: int) -> np.ndarray:
        return self._draw(np.random.default_rng([self.seed, 3, start]), stop - start)


def load_caltech(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) embeddings from the cache; computed (and cached) through the library when absent."""
    from simsearch.data import default_cache_dir

    path = default_cache_dir() / "bench" / EMBEDDINGS
    if not path.exists():
        _compute_caltech(args, path)
    with np.load(path) as z:
        return np.ascontiguousarray(z["train_vectors"]), np.ascontiguousarray(z["test_vectors"])


def _compute_caltech(args: argparse.Namespace, path: Path) -> None:
    """Embed every Caltech-101 photo with the default model; every third photo of a class goes to the test split."""
    from simsearch.data import caltech101_classes, default_cache_dir
    from simsearch.embedding import embed_files
    from simsearch.models import load_embedder

    device = "cpu" if args.device == "auto" else args.device
    logger.info("search: embedding the Caltech-101 photos (cached in %s)", path)
    classes = caltech101_classes(root=args.data)
    folder = default_cache_dir() / "caltech101"
    paths, labels, test = [], [], []
    for label, cls in enumerate(classes):
        for i, photo in enumerate(sorted((folder / cls).glob("*.jpg"))):
            paths.append(photo)
            labels.append(label)
            test.append(i % 3 == 2)
    embedder = load_embedder(None, device=device)
    vectors = np.zeros((len(paths), embedder.embed_dim), dtype=np.float32)
    ok = np.zeros(len(paths), dtype=bool)
    for out in embed_files(embedder, paths, thumbnails=False):
        vectors[out.positions] = out.vectors
        ok[out.positions] = True
    is_test = np.asarray(test) & ok
    is_train = ~np.asarray(test) & ok
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        train_vectors=vectors[is_train],
        train_labels=np.asarray(labels)[is_train],
        test_vectors=vectors[is_test],
        test_labels=np.asarray(labels)[is_test],
    )


def auto_sigma(real: np.ndarray) -> tuple[float, float]:
    """Noise norm that puts a copy as far from its parent as a real vector's nearest real neighbour is.

    Returns:
        sigma and the median nearest-neighbour cosine among the real vectors.
    """
    flat = faiss.IndexFlatIP(real.shape[1])
    flat.add(real)
    scores, _ = flat.search(real, 2)
    cos = float(np.median(scores[:, 1]))
    return math.sqrt(max(1.0 / cos**2 - 1.0, 1e-6)), cos


def parent_recall(data: CaltechGrown, count: int) -> dict[str, float]:
    """How often a perturbed copy's nearest real vector is its parent (@1) or among its 10 nearest (@10)."""
    real = len(data.real)
    rows = np.arange(real, real + count)
    copies = data.chunk(real, real + count)
    flat = faiss.IndexFlatIP(data.d)
    flat.add(data.real)
    scores, ids = flat.search(copies, 10)
    parents = (rows - real) % real
    own = np.einsum("ij,ij->i", copies, data.real[parents])
    return {
        "copies_measured": count,
        "parent_recall_at_1": float((ids[:, 0] == parents).mean()),
        "parent_recall_at_10": float((ids == parents[:, None]).any(axis=1).mean()),
        "median_cosine_to_parent": float(np.median(own)),
    }


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
    rss0 = rss_bytes()
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
        "rss_delta_bytes": rss_bytes() - rss0,
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
            single_rows.update({key + suffix: round(v, 3) for key, v in latency_percentiles(seconds).items()})
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
        data = _make_dataset(name, args, max(sizes))
        entry: dict[str, Any] = {"describe": data.describe, "sizes": []}
        for n in sizes:
            logger.info("search: %s at %d vectors", name, n)
            size = measure_size(data, n, args, bandwidth)
            entry["sizes"].append(size)
            table.extend(_rows(name, size))
        record["datasets"][name] = entry
        figures.append(_plot(out_dir / f"search_{name}.png", name, entry["sizes"]))
    record["goals"] = _goals(record)
    return {"record": record, "figures": figures, "table": table}


def _make_dataset(name: str, args: argparse.Namespace, largest: int) -> Dataset:
    if name == "synthetic":
        d = SYNTHETIC_DIM
        data: Dataset = Clustered(d, args.seed, args.queries)
        data.describe = {
            "kind": "clustered Gaussians",
            "dim": d,
            "clusters": SYNTHETIC_CLUSTERS,
            "latent_dim": SYNTHETIC_LATENT,
            "latent_spread": SYNTHETIC_SPREAD,
            "noise_norm": SYNTHETIC_NOISE,
            "queries": "fresh draws from the same clusters",
        }
        return data
    real, test = load_caltech(args)
    sigma, nn_cos = (args.sigma, None) if args.sigma is not None else auto_sigma(real)
    order = np.random.default_rng(args.seed).permutation(len(test))
    queries = test[order[: args.queries]]
    tune_queries = test[order[args.queries : args.queries + TUNE_QUERIES]]
    grown = CaltechGrown(real, queries, tune_queries, float(sigma), args.seed)
    grown.describe = {
        "kind": "default-model embeddings of Caltech-101 photos, grown by perturbed copies",
        "dim": int(real.shape[1]),
        "real_vectors": int(len(real)),
        "queries": f"{len(queries)} embeddings of test-split photos (not in the base)",
        "perturbation": "row r >= R: normalise(real[(r - R) mod R] + sigma * N(0, I_d) / sqrt(d)), seeded per chunk",
        "sigma": round(float(sigma), 4),
        "sigma_rule": "auto: sqrt(1/c^2 - 1), c = median cosine of a real vector to its nearest real neighbour"
        if nn_cos is not None
        else "--sigma",
        "median_real_nn_cosine": None if nn_cos is None else round(nn_cos, 4),
        **(parent_recall(grown, min(2000, len(real))) if largest > len(real) else {}),
    }
    return grown


def _rows(name: str, size: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for f in size["factories"]:
        for r in f["sweep"]:
            rows.append(
                {
                    "dataset": name,
                    "n": size["n"],
                    "factory": f["factory"],
                    "params": r["search_params"],
                    "R@1": r["recall_at_1"],
                    "R@10": r["recall_at_10"],
                    "qps_1": r["qps_1"],
                    **{k: v for k, v in r.items() if k.startswith("qps_1_t")},
                    "qps_batch": next(v for k, v in r.items() if k.startswith("qps_") and not k.startswith("qps_1")),
                    "p50_ms": r["p50_ms"],
                    "p99_ms": r["p99_ms"],
                    "build_s": round(f["train_s"] + f["add_s"], 1),
                    "MiB": round(f["serialized_bytes"] / 2**20, 1),
                }
            )
    return rows


def _goals(record: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, entry in record["datasets"].items():
        largest = entry["sizes"][-1]
        for i, threads in enumerate(record["protocol"]["single_query_threads"]):
            suffix = "" if i == 0 else f"_t{threads}"
            best = largest.get("best_at_target" + suffix)
            bound = largest.get("flat_vs_bandwidth" + suffix)
            out[name + suffix] = {
                "n": largest["n"],
                "single_query_threads": threads,
                "speedup_at_recall_0.95": None if best is None else best["speedup_vs_flat"],
                "speedup_goal_met": None if best is None else best["speedup_vs_flat"] >= 100,
                "flat_over_bound": None if bound is None else bound["ratio"],
                "flat_goal_met": None if bound is None else bound["ratio"] <= 1.5,
            }
    return out


def _plot(path: Path, name: str, sizes: list[dict[str, Any]]) -> Path:
    from benchmarks.record import figure

    with figure(path, width=5.0 * len(sizes), height=4.0, ncols=len(sizes)) as axes:
        for ax, size in zip(np.atleast_1d(axes), sizes, strict=True):
            for f in size["factories"]:
                xs = [r["qps_1"] for r in f["sweep"]]
                ys = [r["recall_at_10"] for r in f["sweep"]]
                ax.plot(xs, ys, marker="o", label=f["factory"])
            ax.axhline(TARGET_RECALL, color="grey", linestyle=":", linewidth=1)
            ax.set_xscale("log")
            ax.set_xlabel("single-query QPS (log)")
            ax.set_ylabel("recall@10 vs exact")
            ax.set_title(f"{name}, n={size['n']:,}")
            ax.legend(fontsize=7)
    return path
