"""The measured choice of a collection's index and its check at full size, for the index policy (`index_policy`).

The tuner measures candidates on a seeded sample of the stored vectors (`indexes.choose_index`); a sample
flatters an index, so the choice is then built over the whole collection and its recall@10 measured there on
stored vectors left out of their own results (`indexes.calibrate`), with the next candidates as fallbacks.
Everything here reads the store; the index itself changes only through the policy's `become`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from indexes import (
    Calibration,
    IndexChoice,
    IndexLayerError,
    VectorIndex,
    calibrate,
    choose_index,
    exact_neighbors_chunked,
    exact_scorer,
)
from simsearch.collection.store import Store
from simsearch.errors import CollectionError

log = logging.getLogger(__name__)

#: Beyond exact search the index is chosen by measurement (indexes.choose_index) on this many stored vectors, of
#: which TUNE_QUERIES are held out as queries: ~10-30 s at 1280 dims on 2 cores, once per RETUNE_GROWTH-fold change.
TUNE_SAMPLE = 20_000
TUNE_QUERIES = 200
RETUNE_GROWTH = 4.0
#: The chosen index is checked once built over the whole collection, on this many stored vectors as queries...
CALIBRATION_QUERIES = 200
#: ...and when it misses the target there, at most this many other candidates are built and checked.
CALIBRATION_FALLBACKS = 2

#: Makes the index `factory` with search params `params` and returns it (the policy's one way to rebuild).
Become = Callable[[str, str], VectorIndex]


def tune(store: Store, dim: int, n: int, budget: int | None) -> IndexChoice:
    """Measure the candidate indexes on up to TUNE_SAMPLE stored vectors (a seeded sample)."""
    ids = store.ids()
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(ids, size=min(len(ids), TUNE_SAMPLE), replace=False))
    log.info("choosing the index for %d vectors by measurement on %d of them", n, len(sample))
    try:
        choice = choose_index(store.vectors(sample.tolist(), dim), n, max_memory=budget, n_queries=TUNE_QUERIES)
    except IndexLayerError as exc:
        raise CollectionError(f"cannot choose an index: {exc}") from exc
    log.info(
        "index chosen: %s %s (recall@10 %s, %s queries/s, %d bytes)",
        choice.factory,
        choice.search_params,
        choice.recall_at_10,
        choice.qps,
        choice.memory_bytes,
    )
    return choice


def build_and_check(choice: IndexChoice, store: Store, dim: int, become: Become) -> dict[str, Any]:
    """Build the tuner's choice over the whole collection and measure its recall@10 there, on CALIBRATION_QUERIES
    stored vectors left out of their own results, raising nprobe/efSearch until it reaches the target; when it
    cannot, try the next candidates that reached the target on the sample (at most CALIBRATION_FALLBACKS), and
    keep the best. Returns what goes into the manifest's tuning record: the final factory and params, and
    every check."""
    options = [(choice.factory, choice.search_params)]
    options += [(a["factory"], a["search_params"]) for a in choice.alternatives[:CALIBRATION_FALLBACKS]]
    if not choice.measured:
        become(choice.factory, choice.search_params)
        return {}
    queries, own, truth = calibration_queries(store, dim)
    scores = None if queries is None else exact_scorer(queries, lambda ids: store.vectors(ids.tolist(), dim))
    checks: list[Calibration] = []
    for factory, params in options:
        index = become(factory, params)
        if not index.is_trained or queries is None:
            return {}  # nothing to measure yet (an IVF waiting for training vectors)
        check = calibrate(index, factory, params, queries, truth, own=own, exact_scores=scores)
        log.info("full-size check of %s: %s gives recall@10 %.3f", factory, check.search_params, check.recall_at_10)
        checks.append(check)
        if check.reached:
            break
    best = next((c for c in checks if c.reached), None) or max(checks, key=lambda c: c.recall_at_10)
    if not best.reached:
        log.warning(
            "no candidate index reached recall@10 %.2f on the whole collection; keeping %s %s at %.3f",
            choice.target_recall,
            best.factory,
            best.search_params,
            best.recall_at_10,
        )
    become(best.factory, best.search_params)
    return {
        "factory": best.factory,
        "search_params": best.search_params,
        "full_size_recall_at_10": best.recall_at_10,
        "full_size_checks": [c.as_dict() for c in checks],
    }


def check_on_disk(index: VectorIndex, factory: str, store: Store, dim: int) -> dict[str, Any]:
    """Raise the nprobe of a freshly built on-disk index until the full-size check reaches the recall goal; returns
    the search params and recall it ends with for the tuning record ({} while the collection is too small)."""
    queries, own, truth = calibration_queries(store, dim)
    if queries is None:
        return {}
    scores = exact_scorer(queries, lambda ids: store.vectors(ids.tolist(), dim))
    check = calibrate(index, factory, index.search_params, queries, truth, own=own, exact_scores=scores)
    return {"search_params": check.search_params, "full_size_recall_at_10": check.recall_at_10}


def calibration_queries(store: Store, dim: int) -> tuple[Any, Any, Any]:
    """(queries, their ids, leave-one-out exact top-10 ids) for CALIBRATION_QUERIES seeded stored vectors; the
    ground truth streams the store in chunks, so the collection is never held twice in memory."""
    ids = store.ids()
    if len(ids) <= 11:
        return None, None, None
    rng = np.random.default_rng(1)
    own = np.sort(rng.choice(ids, size=min(len(ids) // 2, CALIBRATION_QUERIES), replace=False))
    queries = store.vectors(own.tolist(), dim)
    chunks = (
        (part, store.vectors(part.tolist(), dim)) for part in (ids[i : i + 50_000] for i in range(0, len(ids), 50_000))
    )
    return queries, own, exact_neighbors_chunked(queries, chunks, 10, exclude=own)
