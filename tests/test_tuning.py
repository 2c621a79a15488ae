"""Tests of the measured index choice (indexes.tuning, indexes.calibration) and what it stands on: memory sizes, the
memory formulas against built indexes, ground truth and recall against explicit loops and against the hand-written
versions faiss's own functions replaced, and the tuner's choice on seeded clustered data, with and without a budget."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from indexes import IndexLayerError, VectorIndex
from indexes.building import build_index, coarse_centroids
from indexes.calibration import calibrate
from indexes.evaluation import exact_neighbors, exact_neighbors_chunked, exact_scorer, recall_at_k, recall_leaving_out
from indexes.memory import estimate_memory, parse_memory, serialized_bytes
from indexes.params import param_sweep, set_params, sweep_from
from indexes.tuning import choose_index


def clustered(seed: int, n: int, d: int, n_clusters: int = 40, noise: float = 0.6) -> np.ndarray:
    """(n, d) float32 unit vectors around seeded random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, d)).astype(np.float32)
    x = centres[rng.integers(0, n_clusters, n)] + noise * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4G", 4 * 1024**3),
        ("512M", 512 * 1024**2),
        ("1000000", 1_000_000),
        ("1.5GiB", 3 * 1024**3 // 2),
        ("64kb", 65536),
    ],
)
def test_memory_sizes_read_with_binary_units(text: str, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["4X", "", "G", "-1G", "0", "four gigs", "1e9"])
def test_an_unreadable_memory_size_is_a_one_line_index_error(text: str) -> None:
    with pytest.raises(IndexLayerError) as info:
        parse_memory(text)
    assert "\n" not in str(info.value)


def test_recall_at_k_equals_an_explicit_loop() -> None:
    rng = np.random.default_rng(3)
    truth = np.stack([rng.permutation(30)[:10] for _ in range(25)])  # distinct ids per row, as search returns
    found = np.stack([rng.permutation(30)[:10] for _ in range(25)])
    found[rng.random((25, 10)) < 0.3] = -1  # padding never counts as a hit
    for k in (1, 5, 10):
        loop = np.mean([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k for f, t in zip(found, truth, strict=True)])
        assert recall_at_k(found, truth, k) == pytest.approx(loop)


def test_recall_with_exact_scores_counts_a_tie_at_the_end_of_the_list_and_matches_a_loop_without_ties() -> None:
    """Copies of a file share one vector: which copy ends a top-k list is arbitrary, so an exhaustive index must
    measure 1.0 whichever it returns; without ties the score-aware recall is the plain one."""
    rng = np.random.default_rng(4)
    unique = clustered(4, 300, 16)
    for copies in (1, 3):
        x = np.repeat(unique, copies, axis=0)
        ids = rng.permutation(len(x)).astype(np.int64) * 3 + 5  # store ids, not positions
        position = {int(i): p for p, i in enumerate(ids)}
        own = np.sort(rng.choice(ids, 60, replace=False))
        queries = x[[position[int(i)] for i in own]]
        truth = exact_neighbors_chunked(queries, [(ids, x)], 10, exclude=own)
        index = VectorIndex.create(16, "IVF4,Flat", use_gpu=False)
        index.add(ids, x)
        index.set_search_params("nprobe=4")  # every list: exhaustive
        _, found = index.search(queries, 11)
        scores = exact_scorer(queries, lambda wanted, x=x, position=position: x[[position[int(i)] for i in wanted]])
        assert recall_leaving_out(found, truth, own, 10, exact_scores=scores) == 1.0
        if copies == 1:
            assert recall_leaving_out(found, truth, own, 10) == 1.0
        else:
            assert recall_leaving_out(found, truth, own, 10) < 1.0  # id matching alone misses the other copies
        check = calibrate(index, "IVF4,Flat", "nprobe=4", queries, truth, own=own, exact_scores=scores)
        assert check.reached and check.recall_at_10 == 1.0

    truth = np.stack([rng.permutation(30)[:10] for _ in range(25)])
    found = np.stack([rng.permutation(30)[:10] for _ in range(25)])
    found[rng.random((25, 10)) < 0.3] = -1
    base, queries = clustered(5, 30, 8), clustered(6, 25, 8)
    truth = np.argsort(-(queries @ base.T), axis=1)[:, :10]
    scores = exact_scorer(queries, lambda wanted: base[wanted])
    for k in (1, 5, 10):
        loop = np.mean([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k for f, t in zip(found, truth, strict=True)])
        assert recall_at_k(found, truth, k, exact_scores=scores) == pytest.approx(loop)


def test_exact_neighbors_match_numpy_inner_products() -> None:
    x = clustered(1, 500, 16)
    q = clustered(2, 7, 16)
    expected = np.argsort(-(q @ x.T), axis=1)[:, :5]
    assert (exact_neighbors(x, q, 5) == expected).all()


@pytest.mark.parametrize(
    "factory",
    [
        "Flat",
        "HNSW32",
        "IVF64,Flat",
        "IVF64_HNSW32,Flat",
        "IVF64,PQ8",
        "IVF64,PQ16x4fs",
        "IVF64,PQ8x4fs,Refine(SQ8)",
        "IVF32,PQ16x4fs,RFlat",
        "OPQ8,IVF64,PQ8",
        "OPQ8_32,IVF64,PQ8",
    ],
)
def test_the_memory_estimate_is_within_a_quarter_of_the_built_index(factory: str) -> None:
    n, d = 3000, 64
    x = clustered(0, n, d)
    built = build_index(factory, d, x, x, opq_iterations=1)
    measured = serialized_bytes(built.index)
    estimate = estimate_memory(factory, n, d)
    assert abs(estimate - measured) <= 0.25 * measured, (estimate, measured)


def test_an_unknown_family_has_no_memory_formula() -> None:
    with pytest.raises(IndexLayerError, match="no memory formula"):
        estimate_memory("LSH", 1000, 64)


def test_a_small_collection_keeps_flat_without_measuring() -> None:
    choice = choose_index(clustered(0, 2000, 32), 5000, exact_max=10_000)
    assert (choice.factory, choice.measured, choice.candidates_measured, choice.recall_at_10) == (
        "Flat",
        False,
        [],
        None,
    )
    assert choice.memory_bytes == estimate_memory("Flat", 5000, 32)


def test_too_small_a_sample_falls_back_to_the_size_rule() -> None:
    choice = choose_index(clustered(0, 300, 32), 500_000, exact_max=1000)
    assert choice.factory == "HNSW32" and not choice.measured


def test_the_tuner_picks_an_index_that_reaches_the_target_and_fits_the_budget() -> None:
    n, d = 4000, 64
    data = clustered(5, n + 100, d)
    x, queries = data[:n], data[n:]  # fresh queries from the same clusters
    budget = estimate_memory("Flat", n, d) * 3 // 2
    choice = choose_index(x, n, max_memory=budget, exact_max=1000, n_queries=200)
    assert choice.measured and choice.factory != "Flat"  # something beats a full scan on clustered data
    assert choice.recall_at_10 is not None and choice.recall_at_10 >= 0.95
    assert choice.memory_bytes <= budget
    assert all(c["memory_bytes"] <= budget for c in choice.candidates_measured)
    assert choice.qps == max(c["qps"] for c in choice.candidates_measured if c["recall_at_10"] >= 0.95)
    # independent check: the chosen index, built on all the data, finds the exact neighbours of fresh queries
    built = build_index(choice.factory, d, x, x)
    set_params(built.index, choice.search_params)
    _, found = built.index.search(queries, 10)
    assert recall_at_k(found, exact_neighbors(x, queries, 10), 10) >= 0.9


def test_a_tight_budget_picks_a_compressed_index() -> None:
    n, d = 4000, 64
    budget = estimate_memory("Flat", n, d) // 3  # only PQ codes fit
    choice = choose_index(clustered(5, n, d), n, max_memory=budget, exact_max=1000)
    assert "PQ" in choice.factory and "Refine" not in choice.factory and choice.memory_bytes <= budget


def test_a_budget_nothing_fits_is_a_clear_error() -> None:
    with pytest.raises(IndexLayerError, match=r"no index for 4000 vectors .* fits in 1000 B: the smallest candidate"):
        choose_index(clustered(5, 4000, 64), 4000, max_memory=1000, exact_max=1000)


# ---------------------------------------------------------------------------------------------------- full-size check


def test_chunked_exact_neighbors_match_one_exact_search() -> None:
    x, q = clustered(1, 900, 24), clustered(2, 30, 24)
    ids = np.arange(1000, 1900)  # ids need not be positions
    chunks = ((ids[i : i + 128], x[i : i + 128]) for i in range(0, 900, 128))
    assert exact_neighbors_chunked(q, chunks, 10).tolist() == (exact_neighbors(x, q, 10) + 1000).tolist()


def test_chunked_exact_neighbors_leave_each_query_out_as_a_plain_loop_does() -> None:
    x = clustered(3, 300, 16)
    own = np.array([5, 77, 123, 299])
    chunks = ((np.arange(i, min(i + 50, 300)), x[i : i + 50]) for i in range(0, 300, 50))
    got = exact_neighbors_chunked(x[own], chunks, 5, exclude=own)
    for row, i in zip(got, own, strict=True):
        scores = [(float(x[i] @ x[j]), j) for j in range(300) if j != i]
        assert row.tolist() == [j for _, j in sorted(scores, reverse=True)[:5]]


def test_recall_leaving_out_drops_the_own_id_before_counting() -> None:
    found = np.array([[7, 1, 2], [3, 4, 9]])
    truth = np.array([[1, 2], [3, 5]])
    assert recall_leaving_out(found, truth, np.array([7, 9]), 2) == (1.0 + 0.5) / 2


def test_the_sweep_starts_at_the_choice_even_off_its_grid() -> None:
    assert sweep_from("HNSW32", "efSearch=48") == [
        "efSearch=48",
        "efSearch=64",
        "efSearch=128",
        "efSearch=256",
        "efSearch=512",
    ]
    assert sweep_from("IVF64,Flat", "nprobe=16") == ["nprobe=16", "nprobe=32", "nprobe=64"]
    assert sweep_from("Flat", "") == [""]


def test_calibration_raises_nprobe_until_the_full_index_reaches_the_target() -> None:
    x = clustered(7, 6000, 32, n_clusters=60, noise=0.9)
    built = build_index("IVF64,Flat", 32, x, x, with_ids=False)
    own = np.arange(0, 6000, 30)
    truth = exact_neighbors_chunked(x[own], [(np.arange(6000), x)], 10, exclude=own)

    class Index:  # the calibrate protocol over a bare faiss index
        def set_search_params(self, params: str) -> None:
            set_params(built.index, params)

        def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            return built.index.search(q, k)

    check = calibrate(Index(), "IVF64,Flat", "nprobe=1", x[own], truth, own=own)
    assert check.reached and check.recall_at_10 >= 0.95 and check.tried[0]["search_params"] == "nprobe=1"
    assert check.tried[0]["recall_at_10"] < 0.95 and check.search_params == check.tried[-1]["search_params"]
    _, found = built.index.search(x[own], 11)  # the index is left at the chosen params
    assert recall_leaving_out(found, truth, own, 10) == pytest.approx(check.recall_at_10, abs=1e-4)

    impossible = calibrate(Index(), "IVF64,Flat", "nprobe=1", x[own], truth, own=own, target_recall=1.01)
    assert not impossible.reached and len(impossible.tried) == len(sweep_from("IVF64,Flat", "nprobe=1"))
    assert impossible.recall_at_10 == max(t["recall_at_10"] for t in impossible.tried)


def test_the_tuner_measures_with_given_queries_and_lists_other_factories_that_reach_the_target() -> None:
    n, d = 4000, 64
    data = clustered(5, n + 100, d)
    choice = choose_index(data[:n], n, exact_max=1000, queries=data[n:])
    assert choice.sample_size == n and choice.queries == 100
    factories = [a["factory"] for a in choice.alternatives]
    assert choice.factory not in factories and len(set(factories)) == len(factories)
    assert all(a["recall_at_10"] >= 0.95 and a["qps"] <= choice.qps for a in choice.alternatives)
    assert [a["qps"] for a in choice.alternatives] == sorted((a["qps"] for a in choice.alternatives), reverse=True)


def test_an_hnsw_quantizer_sweeps_nprobe_with_a_beam_wide_enough_for_it() -> None:
    sweep = param_sweep("IVF4096_HNSW32,Flat")
    assert sweep[0] == "nprobe=1,quantizer_efSearch=64" and sweep[-1] == "nprobe=4096,quantizer_efSearch=8192"
    assert param_sweep("HNSW32")[0] == "efSearch=16" and param_sweep("IVF64,Flat")[0] == "nprobe=1"


def test_ivf_variants_can_share_one_k_means() -> None:
    x = clustered(4, 3000, 32)
    # centroids trained on other data: k-means on x could never land on them, so finding them proves the reuse
    first = build_index("IVF32,Flat", 32, clustered(9, 3000, 32), x, with_ids=False)
    centroids = coarse_centroids(first.index)
    assert centroids is not None and centroids.shape == (32, 32)
    for factory in ("IVF32_HNSW32,Flat", "IVF32,SQ8", "IVF32,PQ8x4fs,Refine(SQ8)"):
        again = build_index(factory, 32, x, x, with_ids="Refine" in factory, centroids=centroids)  # + an id map
        assert np.array_equal(coarse_centroids(again.index), centroids), factory
        set_params(again.index, param_sweep(factory)[-1])  # every list probed: the codes alone limit recall
        _, found = again.index.search(x[:50], 10)
        assert recall_at_k(found, exact_neighbors(x, x[:50], 10), 10) >= 0.5, factory
    assert coarse_centroids(build_index("OPQ8,IVF32,PQ8", 32, x, x, opq_iterations=1).index) is None


# ------------------------------------------------------------------------------ faiss's own functions against ours
# The hand-written versions below are what indexes.evaluation held before it called faiss.knn,
# faiss.contrib.exhaustive_search.knn_ground_truth and faiss.contrib.evaluation.knn_intersection_measure: the same
# seeded inputs must give the same outputs.


def reference_exact_neighbors(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    flat = faiss.IndexFlatIP(base.shape[1])
    flat.add(np.ascontiguousarray(base, dtype=np.float32))
    _, ids = flat.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(base)))
    return ids


def reference_exact_neighbors_chunked(
    queries: np.ndarray, chunks: list[tuple[np.ndarray, np.ndarray]], k: int, exclude: np.ndarray | None = None
) -> np.ndarray:
    q = np.ascontiguousarray(queries, dtype=np.float32)
    heap = faiss.ResultHeap(len(q), k, keep_max=True)
    for ids, vectors in chunks:
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            continue
        scores = q @ np.ascontiguousarray(vectors, dtype=np.float32).T
        if exclude is not None:
            scores[np.asarray(exclude)[:, None] == ids[None, :]] = -np.inf
        take = min(k, len(ids))
        top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        heap.add_result(np.ascontiguousarray(np.take_along_axis(scores, top, axis=1)), np.ascontiguousarray(ids[top]))
    heap.finalize()
    return np.asarray(heap.I, dtype=np.int64)


def reference_recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    f, t = np.asarray(found)[:, :k], np.asarray(truth)[:, :k]
    hits = ((f[:, :, None] == t[:, None, :]) & (t[:, None, :] >= 0)).any(axis=2)
    return float(hits.sum(axis=1).mean() / k)


def test_faiss_knn_gives_the_exact_neighbours_the_flat_index_gave() -> None:
    for seed, n in ((11, 700), (12, 6)):  # fewer vectors than k too
        base, queries = clustered(seed, n, 24), clustered(seed + 100, 40, 24)
        assert np.array_equal(exact_neighbors(base, queries, 10), reference_exact_neighbors(base, queries, 10))


@pytest.mark.parametrize("leave_out", [False, True])
@pytest.mark.parametrize(("n", "chunk"), [(1000, 128), (1000, 1000), (13, 4), (7, 3)])
def test_knn_ground_truth_gives_the_ids_the_hand_written_chunked_search_gave(
    n: int, chunk: int, leave_out: bool
) -> None:
    """Chunks smaller than k, fewer vectors than k (rows end in -1), ids that are not positions, an empty chunk."""
    rng = np.random.default_rng(n + chunk)
    x = clustered(n, n, 16)
    ids = rng.choice(10**9, size=n, replace=False).astype(np.int64)
    rows = rng.choice(n, size=min(n, 30), replace=False)
    exclude = ids[rows] if leave_out else None
    chunks = [(ids[i : i + chunk], x[i : i + chunk]) for i in range(0, n, chunk)]
    chunks.insert(1, (ids[:0], x[:0]))
    got = exact_neighbors_chunked(x[rows], iter(chunks), 10, exclude=exclude)
    expected = reference_exact_neighbors_chunked(x[rows], chunks, 10, exclude)
    assert got.shape == expected.shape == (len(rows), 10)
    assert np.array_equal(got, expected)


def test_the_faiss_intersection_measure_gives_the_recall_the_hand_written_count_gave() -> None:
    rng = np.random.default_rng(21)
    for q, width, k in ((50, 10, 10), (50, 10, 5), (40, 6, 10), (1, 10, 1)):
        truth = np.stack([rng.permutation(40)[:width] for _ in range(q)])
        truth[rng.random(truth.shape) < 0.1] = -1  # padding in the truth never counts
        found = np.stack([rng.permutation(40)[:10] for _ in range(q)])
        found[rng.random(found.shape) < 0.3] = -1  # nor padding in the results, even against padding
        assert recall_at_k(found, truth, k) == pytest.approx(reference_recall_at_k(found, truth, k))
