"""Tests for simsearch.metrics: NMI properties, one-shot accuracy, and scikit-learn in place of the hand-written NMI
and k-means++ seeding (compared with the code it replaced)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import simsearch.metrics as metrics_module
from simsearch.metrics import normalized_mutual_info, one_shot_accuracy, retrieval_metrics

# --------------------------------------------------------------------------------------------------------------------
# NMI
# --------------------------------------------------------------------------------------------------------------------


def test_nmi_of_identical_partitions_is_one_and_ignores_label_names() -> None:
    a = np.array([0, 0, 1, 1, 2, 2, 2])
    assert normalized_mutual_info(a, a) == pytest.approx(1.0)
    assert normalized_mutual_info(a, np.array([5, 5, 9, 9, 1, 1, 1])) == pytest.approx(1.0)


def test_nmi_matches_a_hand_computed_value() -> None:
    """a = [0,0,1,1], b = [0,0,0,1]. Joint p: (0,0) 1/2, (1,0) 1/4, (1,1) 1/4; p(a) = (1/2, 1/2), p(b) = (3/4, 1/4).

    I = 1/2 ln(4/3) + 1/4 ln(2/3) + 1/4 ln 2; H(a) = ln 2; H(b) = -(3/4 ln 3/4 + 1/4 ln 1/4);
    NMI = I / ((H(a) + H(b)) / 2) ~= 0.3437.
    """
    mi = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2)
    ha = math.log(2)
    hb = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    expected = mi / ((ha + hb) / 2)
    assert normalized_mutual_info([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(expected)
    assert normalized_mutual_info([0, 0, 0, 1], [0, 0, 1, 1]) == pytest.approx(expected)  # symmetric
    assert expected == pytest.approx(0.3437, abs=1e-4)


def test_nmi_of_independent_partitions_is_near_zero() -> None:
    rng = np.random.default_rng(6)
    a = rng.integers(0, 5, size=20_000)
    b = rng.integers(0, 5, size=20_000)
    assert normalized_mutual_info(a, b) < 0.005


def test_nmi_of_a_partition_against_one_cluster_is_zero() -> None:
    assert normalized_mutual_info([0, 1, 2, 3], [0, 0, 0, 0]) == pytest.approx(0.0)
    assert normalized_mutual_info([7, 7, 7], [1, 1, 1]) == pytest.approx(1.0)


def test_nmi_from_retrieval_metrics_is_invariant_to_relabelling_the_classes() -> None:
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 5, size=200)
    x = rng.normal(size=(5, 16)).astype(np.float32)[labels] + 0.7 * rng.normal(size=(200, 16)).astype(np.float32)
    permuted = np.array([3, 0, 4, 1, 2])[labels]

    assert retrieval_metrics(x, labels)["nmi"] == pytest.approx(retrieval_metrics(x, permuted)["nmi"])


# --------------------------------------------------------------------------------------------------------------------
# One-shot accuracy
# --------------------------------------------------------------------------------------------------------------------


class _Run:
    def __init__(self, train: list[np.ndarray], test: list[np.ndarray], answers: list[int]) -> None:
        self.train_images, self.test_images, self.answers = train, test, answers


def _flatten(images: list[np.ndarray]) -> np.ndarray:
    return np.stack([im.reshape(-1).astype(np.float32) for im in images])


def test_one_shot_accuracy_is_one_when_test_images_are_noisy_copies_and_counts_wrong_answers() -> None:
    rng = np.random.default_rng(8)
    runs = []
    for _ in range(3):
        train = [rng.normal(size=(6, 6)) for _ in range(5)]
        order = rng.permutation(5)
        test = [train[j] + 0.01 * rng.normal(size=(6, 6)) for j in order]
        runs.append(_Run(train, test, order.tolist()))
    calls: list[int] = []

    def embed(images: list[np.ndarray]) -> np.ndarray:
        calls.append(len(images))
        return _flatten(images)

    assert one_shot_accuracy(embed, runs) == pytest.approx(1.0)
    assert calls == [30]  # one call with every image

    runs[0].answers = [(a + 1) % 5 for a in runs[0].answers]  # five of the fifteen answers now wrong
    assert one_shot_accuracy(_flatten, runs) == pytest.approx(10 / 15)
    assert one_shot_accuracy(_flatten, runs, metric="l2") == pytest.approx(10 / 15)


def test_one_shot_accuracy_refuses_an_embedding_of_the_wrong_length() -> None:
    run = _Run([np.zeros((2, 2))] * 2, [np.zeros((2, 2))] * 2, [0, 1])
    with pytest.raises(ValueError, match="embed_fn returned"):
        one_shot_accuracy(lambda images: np.zeros((3, 4)), [run])


def test_retrieval_metrics_without_map_at_r_give_the_same_recall() -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    labels = rng.integers(0, 3, size=60)
    full = retrieval_metrics(x, labels, nmi=False)
    quick = retrieval_metrics(x, labels, nmi=False, map_at_r=False)
    assert "map@r" not in quick and "r_precision" not in quick
    assert {k: v for k, v in full.items() if k not in ("map@r", "r_precision")} == pytest.approx(quick)


# --------------------------------------------------------------------------------------------------------------------
# scikit-learn in place of the hand-written NMI and k-means++ seeding: compared with the code it replaced
# --------------------------------------------------------------------------------------------------------------------


def _reference_nmi(labels_a: np.ndarray, labels_b: np.ndarray) -> float:
    """NMI as it was written by hand before scikit-learn computed it: I(A; B) / ((H(A) + H(B)) / 2)."""
    a, b = np.asarray(labels_a).reshape(-1), np.asarray(labels_b).reshape(-1)
    if len(a) == 0:
        return 1.0
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    na, nb = int(ia.max()) + 1, int(ib.max()) + 1
    if na == nb == 1:
        return 1.0
    n = len(a)
    table = np.bincount(ia * nb + ib, minlength=na * nb).reshape(na, nb).astype(np.float64)
    pa, pb = table.sum(axis=1) / n, table.sum(axis=0) / n
    nz = table > 0
    pij = table[nz] / n
    mi = float((pij * (np.log(pij) - np.log(np.outer(pa, pb)[nz]))).sum())
    denom = (float(-(pa * np.log(pa)).sum()) + float(-(pb * np.log(pb)).sum())) / 2
    return 1.0 if denom <= 0 else float(np.clip(mi / denom, 0.0, 1.0))


def _reference_kmeans_plus_plus(data: np.ndarray, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
    """The hand-written k-means++ seeding it replaced: each next centre drawn with probability proportional to the
    squared distance to the nearest centre so far."""
    n = len(data)
    centres = np.empty((n_clusters, data.shape[1]), dtype=np.float32)
    centres[0] = data[rng.integers(n)]
    sq_norms = np.einsum("ij,ij->i", data, data)
    nearest = np.maximum(sq_norms - 2 * (data @ centres[0]) + centres[0] @ centres[0], 0)
    for c in range(1, n_clusters):
        cumulative = np.cumsum(nearest, dtype=np.float64)
        total = float(cumulative[-1])
        pick = int(np.searchsorted(cumulative, rng.random() * total, side="right")) if total > 0 else rng.integers(n)
        centres[c] = data[min(int(pick), n - 1)]
        np.minimum(nearest, np.maximum(sq_norms - 2 * (data @ centres[c]) + centres[c] @ centres[c], 0), out=nearest)
    return centres


def test_scikit_learn_s_nmi_equals_the_hand_written_one_on_seeded_partitions() -> None:
    """Equal to the last bits of a float64 (the two sum their terms in another order): at most 1e-12 apart."""
    rng = np.random.default_rng(11)
    for _ in range(300):
        n = int(rng.integers(1, 400))
        a = rng.integers(0, int(rng.integers(1, 25)), n)
        b = rng.integers(0, int(rng.integers(1, 25)), n)
        assert abs(normalized_mutual_info(a, b) - _reference_nmi(a, b)) <= 1e-12, (a, b)
    assert normalized_mutual_info([], []) == _reference_nmi(np.array([]), np.array([])) == 1.0
    with pytest.raises(ValueError, match="partitions of 3 and 2 items"):
        normalized_mutual_info([0, 1, 2], [0, 1])


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_k_means_seeded_by_scikit_learn_scores_separated_classes_as_the_hand_written_seeding_did(metric: str) -> None:
    """What NMI relies on: k-means++ seeding keeps faiss's k-means from putting two centroids in one class, which
    random starts do and which would lower NMI for reasons that have nothing to do with the embedding. Over ten
    seeds, scikit-learn's seeding scores 40 separated classes as the hand-written one did, both well above random
    starts; and the clustering is a function of its seed."""
    import faiss
    from sklearn.cluster import kmeans_plusplus

    rng = np.random.default_rng(12)
    n_classes, per_class = 40, 15
    labels = np.repeat(np.arange(n_classes), per_class)
    x = (rng.normal(0, 1, (n_classes, 24))[labels] * 4 + rng.normal(0, 0.3, (len(labels), 24))).astype(np.float32)
    data = metrics_module._as_float32(x, metric, "x")

    def faiss_kmeans(seed: int, init: np.ndarray | None) -> np.ndarray:
        km = faiss.Kmeans(24, n_classes, niter=50, seed=seed, spherical=metric == "cosine", verbose=False)
        km.cp.min_points_per_centroid = 1
        km.train(data, init_centroids=init)
        return km.index.search(data, 1)[1].reshape(-1)

    new, old, random_starts = [], [], []
    for seed in range(10):
        assigned = metrics_module.kmeans_assign(x, n_classes, seed=seed, metric=metric)
        assert assigned.shape == (len(x),) and assigned.dtype == np.int64
        new.append(normalized_mutual_info(assigned, labels))
        reference = _reference_kmeans_plus_plus(data, n_classes, np.random.default_rng(seed))
        old.append(normalized_mutual_info(faiss_kmeans(seed, reference), labels))
        random_starts.append(normalized_mutual_info(faiss_kmeans(seed, None), labels))
    assert np.mean(new) >= np.mean(old) - 0.005 and min(new) >= min(old) - 0.01
    assert min(np.mean(new), np.mean(old)) >= np.mean(random_starts) + 0.03
    assert np.array_equal(
        metrics_module.kmeans_assign(x, n_classes, seed=3, metric=metric),
        metrics_module.kmeans_assign(x, n_classes, seed=3, metric=metric),
    )
    # The seeds are data points, one per centre, spread over the classes.
    seeds, rows = kmeans_plusplus(data, n_classes, random_state=3, n_local_trials=1)
    assert np.array_equal(seeds, data[rows]) and len(set(rows.tolist())) == n_classes
    assert len(np.unique(labels[rows])) >= n_classes - 4
    assert metrics_module.kmeans_assign(x[:1], 1).tolist() == [0]
