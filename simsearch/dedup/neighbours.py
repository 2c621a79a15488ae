"""Every pair of vectors at or above a cosine threshold, found through an existing index in bounded memory.

The index answers k nearest neighbours; a query whose k-th neighbour still scores above the threshold (less a slack
for approximate scores) asks again with twice k, so each query gets all its neighbours above the threshold: a range
search built from k-NN, which every FAISS index type supports. Queries run a chunk at a time, and every candidate is
scored again from the exact stored vectors, so an approximate index (IVF, PQ, SQ) only decides which pairs are looked
at, never a pair's score.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = ["DEFAULT_K", "Neighbours", "PairList", "VectorSource", "matches_above", "pairs_above"]

log = logging.getLogger(__name__)

DEFAULT_K = 16
#: A query never asks for more neighbours than this: a vector with more duplicates than that is rare, and its
#: group still forms through its neighbours' own lists.
MAX_K = 1024
#: Approximate index scores (SQ8, PQ) can fall below the exact cosine by about this much; candidates that close are
#: scored exactly before they are dropped.
SLACK = 0.02
CHUNK = 4096
RESCORE_BLOCK = 8192


class VectorSource(Protocol):
    """What the pair search reads: exact stored vectors by id, and an index that answers k nearest neighbours."""

    def vectors(self, ids: np.ndarray) -> np.ndarray: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class Neighbours:
    """A `VectorSource` from two callables (a collection's store and index, or a benchmark's arrays)."""

    read: Callable[[np.ndarray], np.ndarray]
    knn: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        return self.read(ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.knn(queries, k)


@dataclass
class PairList:
    """Pairs (a[i], b[i]) with a < b and their exact cosine, highest first."""

    a: np.ndarray
    b: np.ndarray
    score: np.ndarray

    def __len__(self) -> int:
        return len(self.a)

    @classmethod
    def empty(cls) -> PairList:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32))


def _neighbours_above(
    source: VectorSource, queries: np.ndarray, threshold: float, k: int, max_k: int
) -> tuple[np.ndarray, np.ndarray]:
    """k-NN of `queries`, asking again with a doubled k for the rows whose last neighbour is still above the line."""
    scores, ids = source.search(queries, k)
    need = (ids[:, -1] >= 0) & (scores[:, -1] >= threshold - SLACK)
    while need.any() and k < max_k:
        k = min(2 * k, max_k)
        rows = np.flatnonzero(need)
        more_scores, more_ids = source.search(queries[rows], k)
        scores = np.pad(scores, ((0, 0), (0, k - scores.shape[1])), constant_values=-np.inf)
        ids = np.pad(ids, ((0, 0), (0, k - ids.shape[1])), constant_values=-1)
        scores[rows], ids[rows] = more_scores, more_ids
        need[:] = False
        need[rows] = (more_ids[:, -1] >= 0) & (more_scores[:, -1] >= threshold - SLACK)
    if need.any():
        log.warning("%d vectors have over %d neighbours above %.3f: lists cut", need.sum(), max_k, threshold)
    return scores, ids


def matches_above(
    source: VectorSource, queries: np.ndarray, threshold: float, *, k: int = DEFAULT_K, max_k: int = MAX_K
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every stored vector whose exact cosine with a query is at least `threshold`.

    Returns:
        (rows, ids, scores): query row, stored id and exact cosine of each match, flat arrays.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    scores, nbrs = _neighbours_above(source, queries, threshold, k, max_k)
    rows, cols = np.nonzero((nbrs >= 0) & (scores >= threshold - SLACK))
    ids = nbrs[rows, cols]
    if not len(ids):
        return rows, ids, np.empty(0, np.float32)
    # Exact re-scoring: the stored vector of each candidate, read once per call, scored a block of matches at a time
    # so that a query with many matches never materialises one vector per match.
    others, where = np.unique(ids, return_inverse=True)
    stored = source.vectors(others)
    exact = np.empty(len(ids), dtype=np.float32)
    for start in range(0, len(ids), RESCORE_BLOCK):
        part = slice(start, start + RESCORE_BLOCK)
        exact[part] = np.einsum("ij,ij->i", queries[rows[part]], stored[where[part]])
    ok = exact >= threshold
    return rows[ok], ids[ok], exact[ok]


def pairs_above(
    source: VectorSource,
    ids: np.ndarray,
    threshold: float,
    *,
    allowed: np.ndarray | None = None,
    k: int = DEFAULT_K,
    max_k: int = MAX_K,
    chunk: int = CHUNK,
) -> PairList:
    """Every pair among `ids` whose exact cosine is at least `threshold`.

    Args:
        source: stored vectors and the index over them (the index may hold more ids than `ids`).
        ids: the vectors to pair up (int64); each is a query, a chunk at a time.
        allowed: ids a neighbour must be among (default: `ids`); neighbours outside are skipped.
        k: neighbours asked first per query (doubled as needed, up to `max_k`).
    """
    query_ids = np.asarray(ids, dtype=np.int64)
    allowed = np.unique(query_ids) if allowed is None else np.unique(np.asarray(allowed, dtype=np.int64))
    parts_a, parts_b, parts_s = [], [], []
    for start in range(0, len(query_ids), chunk):
        qids = query_ids[start : start + chunk]
        rows, found, exact = matches_above(source, source.vectors(qids), threshold, k=k, max_k=max_k)
        a = qids[rows]
        keep = (a != found) & np.isin(found, allowed)
        a, b, s = a[keep], found[keep], exact[keep]
        parts_a.append(np.minimum(a, b))
        parts_b.append(np.maximum(a, b))
        parts_s.append(s)
    if not parts_a or not sum(len(p) for p in parts_a):
        return PairList.empty()
    a, b, s = np.concatenate(parts_a), np.concatenate(parts_b), np.concatenate(parts_s)
    # Each pair is usually found from both ends: keep one.
    _, first = np.unique(np.stack([a, b], axis=1), axis=0, return_index=True)
    a, b, s = a[first], b[first], s[first]
    order = np.lexsort((b, a, -s))
    return PairList(a[order], b[order], s[order])
