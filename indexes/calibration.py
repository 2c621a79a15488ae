"""The full-size check: a built index's search parameter raised from the tuner's choice until recall@k against exact
search reaches the target, since the tuner only measured a sample and extrapolated."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from indexes.evaluation import ExactScores, recall_leaving_out
from indexes.params import sweep_from
from indexes.tuning import TARGET_RECALL


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
    sweep = sweep_from(factory, start_params)
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
