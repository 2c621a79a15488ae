"""Tests for simsearch.metrics: hand-worked examples and brute-force loops on random data (NMI and one-shot:
test_nmi_and_one_shot.py)."""

from __future__ import annotations

import numpy as np
import pytest

import simsearch.metrics as metrics_module
from simsearch.metrics import knn, retrieval_metrics


def _on_circle(degrees: list[float]) -> np.ndarray:
    """Unit vectors at these angles: cosine order = angular order, easy to rank by hand."""
    rad = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)


# --------------------------------------------------------------------------------------------------------------------
# Hand-worked examples
# --------------------------------------------------------------------------------------------------------------------


def test_metrics_with_a_separate_gallery_match_a_hand_worked_example() -> None:
    """Gallery at 10 A, 20 B, 30 A, 40 A, 50 B, 60 B degrees (R = 3 for both classes).

    query  0 deg, A: ranking A B A A B B. Hits within R=3 at 1, 3: AP = (1/1 + 2/3)/3 = 5/9, R-prec 2/3;
                     P@1 = 1, P@2 = 1/2, P@4 = 3/4; hit@1,2,4 = 1.
    query 65 deg, B: 60 B, 50 B, 40 A, 30 A, 20 B, 10 A -> B B A A B A. AP = (1 + 1)/3 = 2/3, R-prec 2/3;
                     P@1 = 1, P@2 = 1, P@4 = 1/2; hit@1,2,4 = 1.
    query 33 deg, B: 30 A (3), 40 A (7), 20 B (13), 50 B (17), 10 A, 60 B -> A A B B A B. AP = (1/3)/3 = 1/9,
                     R-prec 1/3; P@1 = 0, P@2 = 0, P@4 = 1/2; hit@1 = hit@2 = 0, hit@4 = 1.
    Means: MAP@R = (5/9 + 6/9 + 1/9)/3 = 4/9; R-precision = 5/9; recall@1 = recall@2 = 2/3, recall@4 = 1;
    P@1 = 2/3, P@2 = 1/2, P@4 = (3/4 + 1/2 + 1/2)/3 = 7/12.
    """
    gallery = _on_circle([10, 20, 30, 40, 50, 60])
    gallery_labels = np.array([0, 1, 0, 0, 1, 1])
    queries = _on_circle([0, 65, 33])
    labels = np.array([0, 1, 1])

    m = retrieval_metrics(queries, labels, ks=(1, 2, 4), gallery=gallery, gallery_labels=gallery_labels, nmi=False)

    assert m["map@r"] == pytest.approx(4 / 9)
    assert m["r_precision"] == pytest.approx(5 / 9)
    assert m["recall@1"] == pytest.approx(2 / 3)
    assert m["recall@2"] == pytest.approx(2 / 3)
    assert m["recall@4"] == pytest.approx(1.0)
    assert m["precision@1"] == pytest.approx(2 / 3)
    assert m["precision@2"] == pytest.approx(1 / 2)
    assert m["precision@4"] == pytest.approx(7 / 12)
    assert m["queries"] == 3 and m["skipped_queries"] == 0 and m["leave_one_out"] is False


def test_leave_one_out_metrics_match_a_hand_worked_example_and_skip_singleton_classes() -> None:
    """Items 0 deg A, 20 B, 30 A, 70 A, 100 B, 250 C (C has one item: skipped as a query, last in every ranking).

    item 0 (A, R=2):   20 B, 30 A, 70 A, 100 B -> B A A B: AP = (1/2)/2 = 1/4, R-prec 1/2, hit@1 0, hit@2 1.
    item 20 (B, R=1):  30 A, 0 A, 70 A, 100 B  -> A A A B: AP 0, R-prec 0, hit@1 0, hit@2 0, hit@4 1.
    item 30 (A, R=2):  20 B, 0 A, 70 A, 100 B  -> B A A B: AP 1/4, R-prec 1/2, hit@2 1.
    item 70 (A, R=2):  100 B, 30 A, 20 B, 0 A  -> B A B A: AP 1/4, R-prec 1/2, hit@2 1.
    item 100 (B, R=1): 70 A, 30 A, 20 B, 0 A   -> A A B A: AP 0, R-prec 0, hit@2 0, hit@4 1.
    Over the 5 scored queries: MAP@R = 3/4 / 5 = 0.15, R-precision = 0.3, recall@1 = 0, recall@2 = 0.6,
    recall@4 = 1.
    """
    x = _on_circle([0, 20, 30, 70, 100, 250])
    labels = np.array([0, 1, 0, 0, 1, 2])

    m = retrieval_metrics(x, labels, ks=(1, 2, 4), nmi=False)

    assert m["map@r"] == pytest.approx(0.15)
    assert m["r_precision"] == pytest.approx(0.3)
    assert m["recall@1"] == pytest.approx(0.0)
    assert m["recall@2"] == pytest.approx(0.6)
    assert m["recall@4"] == pytest.approx(1.0)
    assert m["queries"] == 5 and m["skipped_queries"] == 1 and m["leave_one_out"] is True


def test_knn_ranks_a_hand_worked_example_nearest_first() -> None:
    gallery = _on_circle([10, 20, 30, 40, 50, 60])
    assert knn(_on_circle([33]), gallery, 3).tolist() == [[2, 3, 1]]
    assert knn(_on_circle([0, 20, 30, 70]), _on_circle([0, 20, 30, 70]), 2, leave_one_out=True).tolist() == [
        [1, 2],
        [2, 0],
        [1, 0],
        [2, 1],
    ]


# --------------------------------------------------------------------------------------------------------------------
# Brute force on random data
# --------------------------------------------------------------------------------------------------------------------


def _brute_force(
    q: np.ndarray, ql: np.ndarray, g: np.ndarray, gl: np.ndarray, ks: list[int], loo: bool
) -> dict[str, float]:
    """The metrics by their definitions, one query at a time, with plain Python loops over the ranking."""
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    sums = {f"recall@{k}": 0.0 for k in ks} | {f"precision@{k}": 0.0 for k in ks} | {"map@r": 0.0, "r_precision": 0.0}
    count = 0
    for i in range(len(q)):
        sims = [(float(qn[i] @ gn[j]), j) for j in range(len(g)) if not (loo and j == i)]
        ranking = [j for _, j in sorted(sims, key=lambda t: -t[0])]
        correct = [gl[j] == ql[i] for j in ranking]
        r = sum(correct)
        if r == 0:
            continue
        count += 1
        for k in ks:
            sums[f"recall@{k}"] += 1.0 if any(correct[:k]) else 0.0
            sums[f"precision@{k}"] += sum(correct[:k]) / k
        ap = 0.0
        found = 0
        for pos in range(r):
            if correct[pos]:
                found += 1
                ap += found / (pos + 1)
        sums["map@r"] += ap / r
        sums["r_precision"] += sum(correct[:r]) / r
    return {name: value / count for name, value in sums.items()}


def test_leave_one_out_metrics_equal_a_brute_force_loop_on_random_data() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 6)).astype(np.float32)
    labels = rng.integers(0, 6, size=80)
    x += 0.8 * rng.normal(size=(6, 6)).astype(np.float32)[labels]  # some class structure, so metrics are not ~0

    m = retrieval_metrics(x, labels, ks=(1, 2, 4, 8), nmi=False)
    expected = _brute_force(x, labels, x, labels, [1, 2, 4, 8], loo=True)

    for name, value in expected.items():
        assert m[name] == pytest.approx(value, abs=1e-9), name


def test_gallery_metrics_equal_a_brute_force_loop_on_random_data() -> None:
    rng = np.random.default_rng(1)
    q = rng.normal(size=(40, 5)).astype(np.float32)
    g = rng.normal(size=(70, 5)).astype(np.float32)
    ql = rng.integers(0, 4, size=40)
    gl = rng.integers(0, 4, size=70)

    m = retrieval_metrics(q, ql, ks=(1, 3, 5), gallery=g, gallery_labels=gl, nmi=False)
    expected = _brute_force(q, ql, g, gl, [1, 3, 5], loo=False)

    for name, value in expected.items():
        assert m[name] == pytest.approx(value, abs=1e-9), name


def test_metrics_do_not_depend_on_the_query_chunk_size(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(90, 4)).astype(np.float32)
    labels = rng.integers(0, 3, size=90)
    whole = retrieval_metrics(x, labels, nmi=False)

    monkeypatch.setattr(metrics_module, "_CHUNK_ENTRIES", 50)  # forces chunks of one or two queries
    chunked = retrieval_metrics(x, labels, nmi=False)

    assert chunked == pytest.approx(whole)


def test_knn_equals_a_brute_force_sort_for_cosine_and_l2() -> None:
    rng = np.random.default_rng(3)
    q = rng.normal(size=(25, 7))
    g = rng.normal(size=(50, 7)) * rng.uniform(0.5, 2.0, size=(50, 1))  # unequal norms: cosine and L2 differ
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)

    by_cosine = np.argsort(-(qn @ gn.T), axis=1, kind="stable")[:, :6]
    by_l2 = np.argsort(((q[:, None] - g[None]) ** 2).sum(-1), axis=1, kind="stable")[:, :6]

    assert np.array_equal(knn(q, g, 6), by_cosine)
    assert np.array_equal(knn(q, g, 6, metric="l2"), by_l2)
    assert knn(q, g, 6).dtype == np.int64


def test_knn_leave_one_out_never_returns_the_query_even_with_exact_duplicates() -> None:
    rng = np.random.default_rng(4)
    base = rng.normal(size=(30, 5)).astype(np.float32)
    x = np.concatenate([base, base, base])  # every vector three times: the query ties with its own copies

    found = knn(x, x, 5, leave_one_out=True)

    assert found.shape == (90, 5)
    assert not (found == np.arange(90)[:, None]).any()
    # The two copies of each vector are its two nearest neighbours.
    for i in range(90):
        assert set(found[i, :2].tolist()) == {j for j in (i % 30, i % 30 + 30, i % 30 + 60) if j != i}


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_tied_neighbours_come_lowest_index_first_whatever_k(metric: str) -> None:
    """Three identical gallery vectors labelled 0, 1, 1: the query's nearest is item 0 for every k, so recall@1 does
    not change when recall@3 is asked for too, nor with the metric or the chunking."""
    gallery = np.ones((3, 4), dtype=np.float32)
    far = np.array([[1.0, -1.0, 1.0, -1.0]], dtype=np.float32)
    gallery = np.concatenate([gallery, far])
    labels = np.array([0, 1, 1, 2])
    query = np.ones((1, 4), dtype=np.float32)

    for k in (1, 2, 3):
        assert knn(query, gallery, k, metric=metric)[0].tolist() == [0, 1, 2][:k]
    one = retrieval_metrics(query, [0], ks=(1,), gallery=gallery, gallery_labels=labels, metric=metric, nmi=False)
    both = retrieval_metrics(query, [0], ks=(1, 3), gallery=gallery, gallery_labels=labels, metric=metric, nmi=False)
    assert one["recall@1"] == both["recall@1"] == 1.0


def test_metrics_with_many_duplicates_do_not_depend_on_the_query_chunk_size(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    x = np.repeat(rng.normal(size=(6, 4)).astype(np.float32), 15, axis=0)  # 6 distinct vectors, 15 copies each
    labels = rng.integers(0, 3, size=90)  # copies of one vector carry several classes: every list is full of ties
    whole = retrieval_metrics(x, labels, ks=(1, 4), nmi=False)
    only_one = retrieval_metrics(x, labels, ks=(1,), nmi=False)
    monkeypatch.setattr(metrics_module, "_CHUNK_ENTRIES", 50)
    chunked = retrieval_metrics(x, labels, ks=(1, 4), nmi=False)

    assert chunked == pytest.approx(whole)
    assert only_one["recall@1"] == pytest.approx(whole["recall@1"])
    # And ties go to the lower index, as a stable sort of the whole ranking puts them.
    expected = _brute_force(x, labels, x, labels, [1, 4], loo=True)
    for name, value in expected.items():
        assert whole[name] == pytest.approx(value, abs=1e-9), name


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_vectors_are_refused_not_scored_as_hits(bad: float) -> None:
    """faiss answers a NaN query with index -1, which numpy would read as the last gallery item."""
    x = _on_circle([0, 5, 180, 185])
    x[3] = bad
    with pytest.raises(ValueError, match="1 of 4 vectors hold NaN or infinite"):
        retrieval_metrics(x, [0, 0, 1, 1], nmi=False)
    with pytest.raises(ValueError, match="NaN or infinite"):
        knn(x[:1], x, 1)
    with pytest.raises(ValueError, match="NaN or infinite"):
        retrieval_metrics(x[:2], [0, 0], gallery=x, gallery_labels=[0, 0, 1, 1])


def test_knn_refuses_k_larger_than_the_gallery_and_mismatched_leave_one_out() -> None:
    x = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match="k must be in 1..3"):
        knn(x, x, 4, leave_one_out=True)
    with pytest.raises(ValueError, match="leave_one_out"):
        knn(x[:2], x, 1, leave_one_out=True)


def test_retrieval_metrics_of_perfectly_separated_classes_are_all_one() -> None:
    rng = np.random.default_rng(5)
    centres = np.eye(8, dtype=np.float32) * 10
    labels = np.repeat(np.arange(8), 12)
    x = centres[labels] + 0.01 * rng.normal(size=(96, 8)).astype(np.float32)

    m = retrieval_metrics(x, labels)

    for name in ("recall@1", "recall@8", "precision@8", "map@r", "r_precision", "nmi"):
        assert m[name] == pytest.approx(1.0), name
