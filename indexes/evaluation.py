"""Ground truth and recall: exact top-k by inner product (whole or read in chunks, optionally leaving each query's own
id out) and recall@k against it, with ties at the k-th true neighbour counted as found when exact scores are given."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import faiss
import numpy as np
from faiss.contrib.evaluation import knn_intersection_measure
from faiss.contrib.exhaustive_search import knn_ground_truth

from indexes.blas import blas_from_small_batches

# ids (Q, m) -> their exact inner products (Q, m) with each row's query; see `exact_scorer`.
ExactScores = Callable[[np.ndarray], np.ndarray]
# Two float32 inner products of one pair of unit vectors, summed in another order, differ by about 1e-7.
_TIE_TOLERANCE = 1e-5


def exact_neighbors(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Ids (Q, min(k, N)) int64 of the exact top-k inner products of `queries` (Q, d) in `base` (N, d)."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    with blas_from_small_batches():
        _, ids = faiss.knn(
            q, np.ascontiguousarray(base, dtype=np.float32), min(k, len(base)), faiss.METRIC_INNER_PRODUCT
        )
    return np.asarray(ids, dtype=np.int64)


def exact_neighbors_chunked(
    queries: np.ndarray,
    chunks: Iterable[tuple[np.ndarray, np.ndarray]],
    k: int,
    *,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """Exact top-k ids (Q, k) by inner product over a collection read as (ids, vectors) chunks, never held whole.

    `exclude` (Q,) gives each query an id that must not count (the query's own, when queries are stored vectors):
    leave-one-out ground truth, found as the top k+1 with that id dropped (or the last, when it is not among them:
    then k+1 others tie with the query's own score and any k of them are a right answer). Rows with fewer than k
    candidates end in -1. faiss's `knn_ground_truth` keeps the running top-k heap over the chunks, on the CPU.
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    seen: list[np.ndarray] = []

    def vectors() -> Iterator[np.ndarray]:
        for ids, block in chunks:
            if len(ids):
                seen.append(np.asarray(ids, dtype=np.int64))
                yield np.ascontiguousarray(block, dtype=np.float32)

    extra = 0 if exclude is None else 1
    with blas_from_small_batches():
        _, positions = knn_ground_truth(q, vectors(), k + extra, metric_type=faiss.METRIC_INNER_PRODUCT, ngpu=0)
    all_ids = np.concatenate(seen) if seen else np.empty(0, dtype=np.int64)
    found = np.where(positions >= 0, all_ids[np.maximum(positions, 0)] if len(all_ids) else -1, -1).astype(np.int64)
    if exclude is not None:
        own = found == np.asarray(exclude, dtype=np.int64)[:, None]
        own[:, -1] |= ~own.any(axis=1)  # no own id among the k+1: drop the last
        found = found[~own].reshape(len(found), k)
    return found


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int, *, exact_scores: ExactScores | None = None) -> float:
    """Mean fraction of each query's true top-k (truth (Q, >=k)) present in its found top-k (found (Q, >=k)).

    With `exact_scores` (see `exact_scorer`), a found id whose exact score ties the k-th true one counts as well:
    copies of one file share one vector, and which copy an index returns at the end of a list is arbitrary, so an
    exact index would otherwise measure below 1. faiss.contrib cannot say that: `knn_intersection_measure` matches
    ids only, and `check_ref_knn_with_draws` accepts draws by distance but raises on a difference instead of
    measuring one. So ties are counted here, and the id-only recall is faiss's intersection measure (padding -1 on
    either side never matches; a truth narrower than k still divides by k).
    """
    f, t = np.asarray(found)[:, :k], np.asarray(truth)[:, :k]
    if exact_scores is None:
        if len(f) == 0:
            return float("nan")
        return float(knn_intersection_measure(_padded(f, k, -2), _padded(t, k, -3)))
    hits = ((f[:, :, None] == t[:, None, :]) & (t[:, None, :] >= 0)).any(axis=2)
    valid = t >= 0
    last = np.where(valid.any(axis=1), valid.sum(axis=1) - 1, 0)
    kth = exact_scores(t[np.arange(len(t)), last][:, None])  # (Q, 1); rows with no truth get -inf
    hits |= (f >= 0) & (exact_scores(f) >= kth - _TIE_TOLERANCE)
    hits_per_query = np.minimum(hits.sum(axis=1), valid.sum(axis=1))
    return float(hits_per_query.mean() / k)


def _padded(ids: np.ndarray, k: int, fill: int) -> np.ndarray:
    """(Q, k) int64 copy of `ids` with -1 and missing columns set to `fill` (distinct fills never match)."""
    out = np.full((len(ids), k), fill, dtype=np.int64)
    out[:, : ids.shape[1]] = np.where(ids >= 0, ids, fill)
    return out


def recall_leaving_out(
    found: np.ndarray, truth: np.ndarray, own: np.ndarray | None, k: int, *, exact_scores: ExactScores | None = None
) -> float:
    """recall@k of `found` (Q, >=k+1 when `own` is given) after dropping each query's own id from its results."""
    f = np.asarray(found)
    if own is not None:
        keep = f != np.asarray(own)[:, None]
        f = np.stack([row[mask][:k] for row, mask in zip(f, keep, strict=True)])
    return recall_at_k(f, truth, k, exact_scores=exact_scores)


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
