"""Dedup at scale: the library's pair search and complete-linkage grouping over 10k, 100k and 1M vectors, with time
and peak memory.

The vectors are the default model's embeddings of Caltech-101 photos grown by seeded perturbed copies
(`benchmarks.search_data.CaltechGrown`). They are written to a memory-mapped file that plays the image store (a
collection reads its vectors from LMDB, memory-mapped too), and the index is the one a collection of that size
would hold: exact (Flat) at 10k, an IVF over 8-bit codes above (exact scores come from the stored vectors).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.record import PeakRSS

logger = logging.getLogger(__name__)

#: Flat scans every vector for every query (n^2 work: about 20 minutes at 100k on two busy cores), so above this the
#: index is an IVF, as the engine measures and picks for large collections.
FLAT_UP_TO = 20_000
LARGE_FACTORY = "IVF{nlist}_HNSW32,SQ8"
LARGE_PARAMS = "nprobe=8,quantizer_efSearch=64"
TRAIN_SAMPLE = 200_000


def _index_for(n: int, d: int, vectors: np.memmap) -> tuple[Any, str, str, float]:
    from indexes import VectorIndex
    from indexes.factory import ivf_nlist

    factory, params = ("Flat", "") if n <= FLAT_UP_TO else (LARGE_FACTORY.format(nlist=ivf_nlist(n)), LARGE_PARAMS)
    started = time.perf_counter()
    index = VectorIndex.create(d, factory)
    if not index.is_trained:
        pick = np.sort(np.random.default_rng(0).choice(n, size=min(n, TRAIN_SAMPLE), replace=False))
        index.train(np.ascontiguousarray(vectors[pick]))
    for start in range(0, n, 50_000):
        stop = min(n, start + 50_000)
        index.add(np.arange(start, stop, dtype=np.int64), np.ascontiguousarray(vectors[start:stop]))
    if params:
        index.set_search_params(params)
    return index, factory, params, time.perf_counter() - started


def scale_rows(args: argparse.Namespace, sizes: list[int], threshold: float) -> list[dict[str, Any]]:
    """One row per size: index build, then dedup (pairs above `threshold`, complete-linkage groups)."""
    from benchmarks.search_data import CaltechGrown, auto_sigma, load_caltech
    from simsearch.dedup.grouping import complete_linkage
    from simsearch.dedup.neighbours import Neighbours, pairs_above

    if not sizes:
        return []
    real, test = load_caltech(args)
    sigma, _ = auto_sigma(real)
    d = real.shape[1]
    rows = []
    for n in sizes:
        data = CaltechGrown(real, test[:1], test[:1], sigma, args.seed)
        with tempfile.TemporaryDirectory(prefix="simsearch-dedup-scale-") as tmp:
            store = np.memmap(Path(tmp) / "vectors.f32", dtype=np.float32, mode="w+", shape=(n, d))
            for start, chunk in zip(range(0, n, 50_000), data.chunks(n), strict=True):
                store[start : start + len(chunk)] = chunk
            store.flush()
            index, factory, params, build_s = _index_for(n, d, store)
            source = Neighbours(read=lambda ids, s=store: np.ascontiguousarray(s[ids]), knn=index.search)
            logger.info("dedup scale: %d vectors, %s built in %.1f s", n, factory, build_s)
            with PeakRSS() as peak:
                started = time.perf_counter()
                pairs = pairs_above(source, np.arange(n, dtype=np.int64), threshold)
                searched = time.perf_counter()
                groups = complete_linkage(pairs, threshold, source.vectors)
                seconds = time.perf_counter() - started
            memory = peak.as_dict()
            rows.append(
                {
                    "method": f"simsearch dedup at scale, {n:,} vectors",
                    "vectors": n,
                    "threshold": round(threshold, 4),
                    "index": factory + (f" ({params})" if params else ""),
                    "build_s": build_s,
                    "pair_search_s": searched - started,
                    "grouping_s": seconds - (searched - started),
                    "dedup_s": seconds,
                    "pairs": len(pairs),
                    "groups": len(groups),
                    "largest_group": max((len(g) for g in groups), default=0),
                    "dedup_peak_rss_mib": memory["peak_rss_mib"],
                    "start_rss_mib": memory["start_rss_mib"],
                    "vector_file_mib": n * d * 4 / 2**20,
                    "sigma": round(float(sigma), 4),
                }
            )
            del index, store, source
    return rows
