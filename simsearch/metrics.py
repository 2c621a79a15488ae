"""Retrieval quality of embeddings: exact k-NN, recall@k (hit rate), precision@k, MAP@R, R-precision, NMI, and
the Omniglot 20-way one-shot accuracy. numpy, faiss and scikit-learn (NMI and the k-means++ seeding of its
clustering), so any embedding source can be scored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Literal, Protocol

import faiss
import numpy as np

__all__ = [
    "kmeans_assign",
    "knn",
    "normalized_mutual_info",
    "one_shot_accuracy",
    "retrieval_metrics",
]

logger = logging.getLogger(__name__)

Metric = Literal["cosine", "l2"]

# Neighbour lists are computed in query chunks of at most this many (query, neighbour) entries: MAP@R needs R
# neighbours per query, and R can be 6,000 (Fashion-MNIST with the train set as gallery).
_CHUNK_ENTRIES = 4_000_000


def _as_float32(x: np.ndarray, metric: Metric, name: str) -> np.ndarray:
    """C-contiguous float32 `(N, D)`, L2-normalised for cosine (a zero vector stays zero)."""
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be (N, D), got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    # faiss answers a NaN query with index -1, which numpy reads as the last gallery item: a broken model would
    # score hits. Refuse instead, and say how much of the input is broken.
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        raise ValueError(
            f"{name}: {int((~finite).sum())} of {len(arr)} vectors hold NaN or infinite values "
            "(a diverged model, or an overflow in float32)"
        )
    if metric == "cosine":
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
        arr = np.ascontiguousarray(arr / np.maximum(norms, 1e-12), dtype=np.float32)
    elif metric != "l2":
        raise ValueError(f"metric must be 'cosine' or 'l2', got {metric!r}")
    return arr


def _flat_index(gallery: np.ndarray, metric: Metric) -> faiss.Index:
    index = faiss.IndexFlatIP(gallery.shape[1]) if metric == "cosine" else faiss.IndexFlatL2(gallery.shape[1])
    index.add(gallery)
    return index


def _search(
    index: faiss.Index, gallery: np.ndarray, queries: np.ndarray, k: int, self_ids: np.ndarray | None
) -> np.ndarray:
    """`(n, k)` nearest gallery indices, exact ties broken by the lower gallery index whatever k is.

    With `self_ids`, query i is gallery item `self_ids[i]` and is removed from its own list: the list is searched one
    longer, then the query's own entry is dropped (or the last entry, when exact duplicates pushed the query itself
    out of the list). Exact ties (duplicate images, a collapsed model) would otherwise make recall@1 depend on the
    other k asked for and on the chunking: faiss orders tied entries by k, and which of a tie group straddling the
    end of the list it keeps is up to its heap. So each list is sorted by (distance, index), searched one longer to
    see whether a tie straddles its end, and the rare rows where one does are ranked again by brute force.
    """
    n = len(queries)
    width = min(k + (1 if self_ids is None else 2), len(gallery))
    dist, found = index.search(queries, width)
    inner = index.metric_type == faiss.METRIC_INNER_PRODUCT
    key = -dist if inner else dist
    order = np.lexsort((found, key), axis=-1)
    found, key = np.take_along_axis(found, order, axis=1), np.take_along_axis(key, order, axis=1)
    if self_ids is not None:
        is_self = found == self_ids[:, None]
        drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), width - 1)
        keep = np.ones_like(found, dtype=bool)
        keep[np.arange(n), drop] = False
        found, key = found[keep].reshape(n, width - 1), key[keep].reshape(n, width - 1)
    if found.shape[1] > k:
        for i in np.flatnonzero(key[:, k - 1] == key[:, k]):
            row = -(gallery @ queries[i]) if inner else ((gallery - queries[i]) ** 2).sum(axis=1)
            if self_ids is not None:
                row[self_ids[i]] = np.inf
            found[i, :k] = np.lexsort((np.arange(len(gallery)), row))[:k]
    return found[:, :k]


def knn(
    queries: np.ndarray,
    gallery: np.ndarray,
    k: int,
    *,
    leave_one_out: bool = False,
    metric: Metric = "cosine",
) -> np.ndarray:
    """Exact k nearest neighbours of each query in the gallery, nearest first.

    Args:
        queries: `(Q, D)` embeddings.
        gallery: `(G, D)` embeddings.
        k: neighbours per query.
        leave_one_out: the queries ARE the gallery (query i = gallery item i): each query's own index never appears
            in its list, even when exact duplicates of it exist.
        metric: "cosine" (vectors L2-normalised here, inner product; the engine's own metric) or "l2" (Euclidean
            on the raw vectors).

    Returns:
        `(Q, k) int64` gallery indices.
    """
    q = _as_float32(queries, metric, "queries")
    g = _as_float32(gallery, metric, "gallery")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"queries have dimension {q.shape[1]}, the gallery {g.shape[1]}")
    if leave_one_out and len(q) != len(g):
        raise ValueError(f"leave_one_out needs the queries to be the gallery, got {len(q)} and {len(g)} vectors")
    available = len(g) - int(leave_one_out)
    if not 1 <= k <= available:
        raise ValueError(
            f"k must be in 1..{available} (gallery of {len(g)}{', leave-one-out' if leave_one_out else ''})"
        )
    self_ids = np.arange(len(q)) if leave_one_out else None
    return _search(_flat_index(g, metric), g, q, k, self_ids).astype(np.int64, copy=False)


def retrieval_metrics(
    embeddings: np.ndarray,
    labels: np.ndarray | Sequence[int],
    *,
    ks: Sequence[int] = (1, 2, 4, 8),
    gallery: np.ndarray | None = None,
    gallery_labels: np.ndarray | Sequence[int] | None = None,
    metric: Metric = "cosine",
    nmi: bool = True,
    map_at_r: bool = True,
    seed: int = 0,
) -> dict[str, float | int | bool]:
    """Score embeddings by exact k-NN retrieval, the protocol of Musgrave et al. 2020 ("A Metric Learning Reality
    Check").

    Without a gallery the embeddings are query set and gallery at once, leave-one-out (a query never retrieves
    itself). For query i, R_i is the number of gallery items of its class (other than itself):
      - recall@k: hit rate, 1 if any of the k nearest has the query's class (the deep-metric-learning convention,
        not the fraction of the class found);
      - precision@k: the fraction of the k nearest that have the query's class;
      - R-precision: the fraction of the R_i nearest that have the query's class;
      - MAP@R: (1/R_i) * sum over the first R_i positions j that hold the class of precision@j;
      - NMI: k-means (k-means++ seeded, faiss) on the query embeddings with as many clusters as query classes,
        against the labels, arithmetic-mean normalisation.
    Each is averaged over queries. Queries whose class has no other gallery item (R_i = 0) can never be answered
    and are left out of every average; their number is reported as `skipped_queries`.

    Args:
        embeddings: `(Q, D)` query embeddings.
        labels: `(Q,)` query classes.
        ks: the k of recall@k and precision@k.
        gallery: `(G, D)` gallery embeddings; None for leave-one-out on `embeddings`.
        gallery_labels: `(G,)` gallery classes (required with `gallery`).
        metric: "cosine" or "l2", as in `knn`.
        nmi: compute NMI (a k-means run; turn off for speed).
        map_at_r: compute MAP@R and R-precision. They need the R nearest of every query: with a big gallery of
            big classes (Fashion-MNIST: R = 6,000 of 60,000) that is most of the cost; off, only max(ks) are found.
        seed: k-means seed.

    Returns:
        `{"recall@1": ..., "precision@1": ..., "map@r": ..., "r_precision": ..., "nmi": ..., "queries": ...,
        "skipped_queries": ..., "gallery": ..., "leave_one_out": ...}`; rates are floats in [0, 1].
    """
    q_labels = np.asarray(labels).reshape(-1)
    q = _as_float32(embeddings, metric, "embeddings")
    if len(q_labels) != len(q):
        raise ValueError(f"{len(q)} embeddings but {len(q_labels)} labels")
    loo = gallery is None
    if gallery is None:
        g, g_labels = q, q_labels
    else:
        if gallery_labels is None:
            raise ValueError("gallery_labels are required with a gallery")
        g = _as_float32(gallery, metric, "gallery")
        g_labels = np.asarray(gallery_labels).reshape(-1)
        if len(g_labels) != len(g):
            raise ValueError(f"{len(g)} gallery embeddings but {len(g_labels)} gallery labels")
        if g.shape[1] != q.shape[1]:
            raise ValueError(f"embeddings have dimension {q.shape[1]}, the gallery {g.shape[1]}")
    ks = sorted({int(k) for k in ks})
    available = len(g) - int(loo)
    if not ks or ks[0] < 1 or ks[-1] > available:
        raise ValueError(f"every k must be in 1..{available} (gallery of {len(g)}), got {ks}")

    # R_i: gallery items of the query's class, the query itself excluded when it is in the gallery.
    classes, g_counts = np.unique(g_labels, return_counts=True)
    pos = np.searchsorted(classes, q_labels)
    pos_clipped = np.minimum(pos, len(classes) - 1)
    present = classes[pos_clipped] == q_labels
    r = np.where(present, g_counts[pos_clipped], 0) - int(loo)
    valid = r > 0
    n_valid = int(valid.sum())
    if n_valid == 0:
        raise ValueError("no query has another gallery item of its class: nothing to score")

    index = _flat_index(g, metric)
    hit_sums = {k: 0.0 for k in ks}
    prec_sums = {k: 0.0 for k in ks}
    ap_sum = 0.0
    rprec_sum = 0.0
    valid_ids = np.flatnonzero(valid)
    start = 0
    while start < len(valid_ids):
        # Grow the chunk while its widest neighbour list keeps it under the entry budget.
        width = max(ks[-1], int(r[valid_ids[start]]) if map_at_r else 0)
        stop = start + 1
        while stop < len(valid_ids):
            w = max(width, int(r[valid_ids[stop]]) if map_at_r else 0)
            if (stop - start + 1) * w > _CHUNK_ENTRIES:
                break
            width, stop = w, stop + 1
        ids = valid_ids[start:stop]
        found = _search(index, g, q[ids], width, ids if loo else None)
        hits = g_labels[found] == q_labels[ids][:, None]  # (n, width) bool
        for k in ks:
            hit_sums[k] += float(hits[:, :k].any(axis=1).sum())
            prec_sums[k] += float(hits[:, :k].mean(axis=1).sum())
        if map_at_r:
            hits_r = hits & (np.arange(width)[None, :] < r[ids][:, None])  # only the first R_i positions count
            precision_at = np.cumsum(hits_r, axis=1) / np.arange(1, width + 1)[None, :]
            ap_sum += float(((precision_at * hits_r).sum(axis=1) / r[ids]).sum())
            rprec_sum += float((hits_r.sum(axis=1) / r[ids]).sum())
        start = stop

    out: dict[str, float | int | bool] = {}
    for k in ks:
        out[f"recall@{k}"] = hit_sums[k] / n_valid
    for k in ks:
        out[f"precision@{k}"] = prec_sums[k] / n_valid
    if map_at_r:
        out["map@r"] = ap_sum / n_valid
        out["r_precision"] = rprec_sum / n_valid
    if nmi:
        n_clusters = len(np.unique(q_labels))
        out["nmi"] = normalized_mutual_info(q_labels, kmeans_assign(q, n_clusters, seed=seed, metric=metric))
    out["queries"] = n_valid
    out["skipped_queries"] = int(len(q) - n_valid)
    out["gallery"] = int(len(g))
    out["leave_one_out"] = loo
    return out


def kmeans_assign(
    x: np.ndarray, n_clusters: int, *, seed: int = 0, metric: Metric = "cosine", niter: int = 50
) -> np.ndarray:
    """Cluster ids `(N,) int64`: k-means++ seeding (Arthur & Vassilvitskii 2007, scikit-learn's `kmeans_plusplus`
    with one trial per centre, as the paper draws them), then faiss k-means on all points (spherical for cosine).

    faiss alone starts from random points, which on well-separated classes often puts two centroids in one class
    and lowers NMI for reasons that have nothing to do with the embedding; k-means++ seeding avoids most of that.
    The iterations stay faiss's: scikit-learn's `KMeans` has no spherical variant, and on 659 Omniglot classes of 20
    images it took ten times as long.
    """
    from sklearn.cluster import kmeans_plusplus

    data = _as_float32(x, metric, "x")
    if not 1 <= n_clusters <= len(data):
        raise ValueError(f"n_clusters must be in 1..{len(data)}, got {n_clusters}")
    if n_clusters == 1:
        return np.zeros(len(data), dtype=np.int64)
    km = faiss.Kmeans(
        data.shape[1],
        n_clusters,
        niter=niter,
        seed=seed,
        spherical=metric == "cosine",
        verbose=False,
        # Train on every point (faiss subsamples to 256 per centroid by default) and accept few points per
        # centroid without faiss's stderr warning: 659 Omniglot classes of 20 images are legitimate.
        max_points_per_centroid=max(256, -(-len(data) // n_clusters)),
        min_points_per_centroid=1,
    )
    centres, _ = kmeans_plusplus(data, n_clusters, random_state=seed, n_local_trials=1)
    km.train(data, init_centroids=np.ascontiguousarray(centres, dtype=np.float32))
    return km.index.search(data, 1)[1].reshape(-1).astype(np.int64)


def normalized_mutual_info(labels_a: np.ndarray | Sequence[int], labels_b: np.ndarray | Sequence[int]) -> float:
    """NMI of two partitions, I(A; B) / ((H(A) + H(B)) / 2) (scikit-learn's `normalized_mutual_info_score`, its
    default arithmetic normalisation), in [0, 1].

    Symmetric and invariant to renaming the labels. Two single-cluster partitions count as identical (1.0).
    """
    from sklearn.metrics import normalized_mutual_info_score

    a = np.asarray(labels_a).reshape(-1)
    b = np.asarray(labels_b).reshape(-1)
    if len(a) != len(b):
        raise ValueError(f"partitions of {len(a)} and {len(b)} items")
    return float(np.clip(normalized_mutual_info_score(a, b, average_method="arithmetic"), 0.0, 1.0))


class _OneShotRun(Protocol):
    """What `one_shot_accuracy` reads of a run; read-only, so frozen dataclasses (`OneShotRun`) satisfy it."""

    @property
    def train_images(self) -> Sequence[np.ndarray]: ...

    @property
    def test_images(self) -> Sequence[np.ndarray]: ...

    @property
    def answers(self) -> Sequence[int]: ...


def one_shot_accuracy(
    embed_fn: Callable[[list[np.ndarray]], np.ndarray],
    runs: Sequence[_OneShotRun],
    *,
    metric: Metric = "cosine",
) -> float:
    """N-way one-shot accuracy (Omniglot's 20 official runs): each test image takes the class of its nearest
    training image; accuracy over all test images of all runs.

    Args:
        embed_fn: maps a list of images (as the runs hold them, e.g. `(105, 105)` uint8) to `(N, D)` embeddings;
            called once with every image of every run.
        runs: e.g. `simsearch.data.omniglot_one_shot_runs()`.
        metric: "cosine" (nearest by cosine similarity) or "l2".
    """
    if not runs:
        raise ValueError("no runs to score")
    images: list[np.ndarray] = []
    for run in runs:
        images.extend(run.train_images)
        images.extend(run.test_images)
    emb = np.asarray(embed_fn(images))
    if emb.ndim != 2 or len(emb) != len(images):
        raise ValueError(f"embed_fn returned shape {emb.shape} for {len(images)} images, expected ({len(images)}, D)")
    emb = _as_float32(emb, metric, "embeddings")
    correct = total = 0
    offset = 0
    for run in runs:
        n_train, n_test = len(run.train_images), len(run.test_images)
        train = emb[offset : offset + n_train]
        test = emb[offset + n_train : offset + n_train + n_test]
        offset += n_train + n_test
        if metric == "cosine":
            predicted = (test @ train.T).argmax(axis=1)
        else:
            predicted = ((test[:, None, :] - train[None, :, :]) ** 2).sum(axis=2).argmin(axis=1)
        correct += int((predicted == np.asarray(run.answers)).sum())
        total += n_test
    logger.debug("one-shot: %d of %d correct over %d runs", correct, total, len(runs))
    return correct / total
