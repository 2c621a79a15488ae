"""Tests of the vector-index layer: exact search against numpy, ANN recall, training, removal, errors, factory strings
(BLAS and GPU placement: test_index_placement.py; the files on disk: test_index_file.py)."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from index_helpers import clustered, sparse_ids, unit_vectors

from indexes import IndexLayerError, VectorIndex, choose_factory, default_search_params


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


@pytest.fixture(scope="module")
def ann_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """5k x 64 clustered vectors, their ids, 200 nearby queries and the exact top-10 ids (numpy)."""
    rng = np.random.default_rng(7)
    x = clustered(rng, 5000, 64)
    ids = sparse_ids(rng, len(x))
    q = x[rng.choice(len(x), 200, replace=False)] + 0.1 * rng.standard_normal((200, 64)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    truth = ids[np.argsort(-(q @ x.T), axis=1)[:, :10]]
    return x, ids, q, truth


# ---------------------------------------------------------------------- exact search


@pytest.mark.parametrize("k", [1, 7, 300, 305])
def test_flat_search_equals_numpy_brute_force(k: int) -> None:
    rng = np.random.default_rng(0)
    x, q = unit_vectors(rng, 300, 24), unit_vectors(rng, 9, 24)
    ids = sparse_ids(rng, 300)
    index = VectorIndex.create(24, "Flat")
    index.add(ids, x)

    scores, found = index.search(q, k)

    assert scores.shape == found.shape == (9, k)
    assert scores.dtype == np.float32 and found.dtype == np.int64
    all_scores = q @ x.T
    expected = -np.sort(-all_scores, axis=1)[:, : min(k, 300)]
    np.testing.assert_allclose(scores[:, :300], expected, atol=1e-5)
    # ties aside, an id is right when it is distinct and its own true score is the score reported for it
    position = {int(i): p for p, i in enumerate(ids)}
    for row in range(9):
        got = found[row, : min(k, 300)]
        assert len(set(got.tolist())) == len(got)
        true_scores = all_scores[row, [position[int(i)] for i in got]]
        np.testing.assert_allclose(true_scores, scores[row, : len(got)], atol=1e-5)
    if k > 300:
        assert (found[:, 300:] == -1).all()
        assert np.isneginf(scores[:, 300:]).all()


def test_single_vector_query_is_searched_as_one_query() -> None:
    rng = np.random.default_rng(1)
    x = unit_vectors(rng, 50, 8)
    index = VectorIndex.create(8)
    index.add(np.arange(50), x)

    scores, found = index.search(x[3], 2)

    assert found.shape == (1, 2)
    assert found[0, 0] == 3
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("factory", ["Flat", "HNSW32", "IVF8,Flat"])
def test_empty_index_returns_only_padding(factory: str) -> None:
    index = VectorIndex.create(16, factory)

    scores, found = index.search(np.ones((3, 16), dtype=np.float32) / 4, 5)

    assert (found == -1).all() and found.shape == (3, 5)
    assert np.isneginf(scores).all()
    assert len(index) == 0 and index.ids().shape == (0,)


# ---------------------------------------------------------------------- approximate search


def test_approximate_search_pads_what_it_did_not_find_with_minus_one_and_minus_inf() -> None:
    rng = np.random.default_rng(16)
    x = clustered(rng, 200, 16, n_clusters=8, noise=0.2)
    index = VectorIndex.create(16, "IVF8,Flat")
    index.add(np.arange(200), x)
    index.set_search_params("nprobe=1")  # one list holds far fewer than k=150 vectors

    scores, found = index.search(x[:4], 150)

    assert ((found == -1) == np.isneginf(scores)).all()
    assert (found == -1).any(axis=1).all()
    assert np.isfinite(scores[found >= 0]).all()


@pytest.mark.parametrize(("factory", "params"), [("HNSW32", None), ("IVF64,Flat", "nprobe=16")])
def test_approximate_indexes_reach_recall_at_10_of_0_9_against_exact(
    factory: str, params: str | None, ann_data
) -> None:
    x, ids, q, truth = ann_data
    index = VectorIndex.create(64, factory)
    index.add(ids, x)
    if params:
        index.set_search_params(params)

    _, found = index.search(q, 10)

    assert recall_at(found, truth) >= 0.9


def test_search_params_reach_faiss(ann_data) -> None:
    x, ids, q, truth = ann_data
    index = VectorIndex.create(64, "IVF64,Flat")
    index.add(ids, x)

    index.set_search_params("nprobe=1")
    narrow = recall_at(index.search(q, 10)[1], truth)
    index.set_search_params("nprobe=16")
    wide = recall_at(index.search(q, 10)[1], truth)

    assert narrow < wide
    assert index.search_params == "nprobe=16"


def test_create_applies_default_search_params_and_hnsw_build_depth() -> None:
    hnsw = VectorIndex.create(16, "HNSW32")
    assert hnsw.search_params == "efSearch=64"
    assert faiss.downcast_index(hnsw._index.index).hnsw.efConstruction == 80
    assert VectorIndex.create(16, "IVF64,Flat").search_params == "nprobe=8"
    assert VectorIndex.create(16, "Flat").search_params == ""


def test_ivf_pq_trains_on_first_add_when_given_enough_vectors() -> None:
    rng = np.random.default_rng(2)
    x = clustered(rng, 1000, 32)
    index = VectorIndex.create(32, "IVF16,PQ8np")  # "np": skip faiss's slow polysemous training, unused here
    assert not index.is_trained

    with pytest.raises(IndexLayerError, match="at least 256 vectors"):
        index.add(np.arange(100), x[:100])
    index.add(np.arange(1000), x)

    assert index.is_trained and len(index) == 1000
    index.set_search_params("nprobe=16")
    assert (index.search(x[:50], 1)[1][:, 0] == np.arange(50)).mean() >= 0.9


def test_explicit_training_allows_small_adds_and_is_a_no_op_once_trained() -> None:
    rng = np.random.default_rng(3)
    x = unit_vectors(rng, 400, 16)
    index = VectorIndex.create(16, "IVF8,Flat")
    index.train(x)
    index.add(np.array([5, 6]), x[:2])
    index.train(x[:1])  # too few to train, but trained already: nothing happens

    assert index.is_trained and sorted(index.ids().tolist()) == [5, 6]


# ---------------------------------------------------------------------- removal


@pytest.mark.parametrize("factory", ["Flat", "HNSW32", "IVF16,Flat", "IVF16,PQ8np"])
def test_removed_ids_never_come_back_and_the_rest_still_find_themselves(factory: str) -> None:
    rng = np.random.default_rng(4)
    x = clustered(rng, 1000, 32)
    ids = sparse_ids(rng, 1000)
    index = VectorIndex.create(32, factory)
    index.add(ids, x)
    if "IVF" in factory:
        index.set_search_params("nprobe=16")  # exhaustive over lists: misses can only come from bad bookkeeping
    gone, kept = ids[::3], np.setdiff1d(ids, ids[::3])

    removed = index.remove(np.concatenate([gone, [-5, 12345]]))  # unknown ids are ignored

    assert removed == len(gone)
    assert len(index) == len(kept)
    assert set(index.ids().tolist()) == set(kept.tolist())
    _, found = index.search(x, 10)
    assert not np.isin(found, gone).any()
    is_kept = np.isin(ids, kept)
    assert (found[is_kept, 0] == ids[is_kept]).mean() >= 0.95
    assert index.remove(gone) == 0
    index.add(gone[:5], x[::3][:5])  # a removed id may be used again
    assert len(index) == len(kept) + 5


def test_hnsw_removal_rebuild_keeps_the_remaining_vectors_exact() -> None:
    rng = np.random.default_rng(5)
    x = unit_vectors(rng, 300, 16)
    index = VectorIndex.create(16, "HNSW32")
    index.add(np.arange(300), x)

    index.remove(np.arange(0, 300, 2))

    np.testing.assert_array_equal(index.reconstruct(np.arange(1, 300, 2)), x[1::2])
    assert index.search_params == "efSearch=64"


@pytest.mark.parametrize("factory", ["Flat", "HNSW32", "IVF8,Flat"])
def test_reconstruct_returns_the_stored_vectors(factory: str) -> None:
    rng = np.random.default_rng(6)
    x = unit_vectors(rng, 200, 16)
    ids = sparse_ids(rng, 200)
    index = VectorIndex.create(16, factory)
    index.add(ids, x)

    np.testing.assert_array_equal(index.reconstruct(ids[[7, 3, 150]]), x[[7, 3, 150]])
    with pytest.raises(IndexLayerError, match="not in the index"):
        index.reconstruct(np.array([-1]))


# ---------------------------------------------------------------------- bad input


def _filled() -> VectorIndex:
    index = VectorIndex.create(8)
    index.add(np.arange(10), unit_vectors(np.random.default_rng(11), 10, 8))
    return index


_ok = unit_vectors(np.random.default_rng(12), 2, 8)
_nan = _ok.copy()
_nan[1, 3] = np.nan


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda ix: ix.add(np.array([20, 21]), np.ones((2, 9), np.float32)), id="add-wrong-dim"),
        pytest.param(lambda ix: ix.add(np.array([20, 21]), _nan), id="add-nan"),
        pytest.param(lambda ix: ix.add(np.array([20, 21]), _ok * np.inf), id="add-inf"),
        pytest.param(lambda ix: ix.add(np.array([20, 20]), _ok), id="add-duplicate-ids"),
        pytest.param(lambda ix: ix.add(np.array([3, 20]), _ok), id="add-id-already-present"),
        pytest.param(lambda ix: ix.add(np.array([-1, 20]), _ok), id="add-negative-id"),
        pytest.param(lambda ix: ix.add(np.array([20]), _ok), id="add-length-mismatch"),
        pytest.param(lambda ix: ix.add(np.array([2.5, 20.0]), _ok), id="add-float-ids"),
        pytest.param(lambda ix: ix.search(_ok, 0), id="search-k-0"),
        pytest.param(lambda ix: ix.search(np.ones((2, 7), np.float32), 3), id="search-wrong-dim"),
        pytest.param(lambda ix: ix.search(_nan, 3), id="search-nan"),
        pytest.param(lambda ix: ix.set_search_params("efSearch=16"), id="params-not-for-flat"),
        pytest.param(lambda ix: ix.set_search_params("garbage"), id="params-malformed"),
        pytest.param(lambda ix: ix.reconstruct(np.array([99])), id="reconstruct-unknown"),
    ],
)
def test_bad_input_raises_index_layer_error(call) -> None:
    index = _filled()

    with pytest.raises(IndexLayerError):
        call(index)

    assert len(index) == 10  # nothing half-done


@pytest.mark.parametrize(
    ("dim", "factory", "message"),
    [
        (8, "NoSuchIndex", "could not parse"),
        (0, "Flat", "dimension"),
        (8, "", "non-empty"),
        (8, "IDMap2,IVF8,Flat", "cannot remove"),
        (8, "PCA4,IDMap,Flat", "IDMap must wrap"),
    ],
)
def test_bad_factory_or_dim_raises_a_one_line_error(dim: int, factory: str, message: str) -> None:
    with pytest.raises(IndexLayerError, match=message) as info:
        VectorIndex.create(dim, factory)

    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------- defaults, imports, placement


def test_choose_factory_goes_from_exact_to_graph_to_inverted_lists_with_size() -> None:
    assert choose_factory(0, 128) == "Flat"
    assert choose_factory(100_000, 128) == "Flat"
    assert choose_factory(100_001, 128) == "HNSW32"
    assert choose_factory(2_000_000, 128) == "HNSW32"
    assert choose_factory(10_000_000, 128) == "IVF16384,Flat"
    assert default_search_params("IVF16384,Flat") == "nprobe=128"
    assert default_search_params("HNSW32") == "efSearch=64"
    assert default_search_params("IVF4096_HNSW32,Flat") == "nprobe=64,quantizer_efSearch=128"
    assert default_search_params("Flat") == ""
    for n in (10, 500_000, 50_000_000):
        VectorIndex.create(16, choose_factory(n, 16))  # every default is a valid factory string
    with pytest.raises(IndexLayerError):
        choose_factory(-1, 16)


def test_factory_and_param_strings_give_their_list_count_and_probe() -> None:
    from indexes.factory import factory_nlist
    from indexes.params import params_probe

    assert factory_nlist("IVF4096_HNSW32,SQ8") == 4096 and factory_nlist("OPQ80,IVF1024,PQ80") == 1024
    assert factory_nlist("HNSW32") is None and factory_nlist("Flat") is None
    assert params_probe("nprobe=16,quantizer_efSearch=64") == 16 and params_probe("efSearch=48") == 48
    assert params_probe("") is None and params_probe("k_factor_rf=4") is None


def test_a_centring_or_shrinking_stage_is_refused_because_it_breaks_cosine_scores() -> None:
    x = unit_vectors(np.random.default_rng(14), 200, 32)
    for factory in ("PCA32,Flat", "PCAR16,IVF4,Flat", "ITQ32,Flat"):
        with pytest.raises(IndexLayerError, match="(PCA|ITQ) stage centres the vectors"):
            VectorIndex.create(32, factory)
    for factory in ("OPQ4_8,Flat", "RR8,Flat"):
        with pytest.raises(IndexLayerError, match="maps 32 to 8 dimensions"):
            VectorIndex.create(32, factory)
    rotated = VectorIndex.create(32, "RR32,Flat")  # a rotation keeps inner products
    rotated.add(np.arange(200), x)
    scores, ids = rotated.search(x[:5], 1)
    assert ids[:, 0].tolist() == [0, 1, 2, 3, 4] and np.allclose(scores[:, 0], 1.0, atol=1e-5)


def test_a_refused_search_param_string_leaves_the_index_as_it_was() -> None:
    """faiss applies a string's items in turn and stops at the bad one: the good ones must not stay applied."""
    x = unit_vectors(np.random.default_rng(15), 2000, 16)
    index = VectorIndex.create(16, "IVF64,Flat", use_gpu=False)
    index.add(np.arange(2000), x)
    index.set_search_params("nprobe=2")
    before = index.search(x[:50], 10)
    with pytest.raises(IndexLayerError, match="efSearch"):
        index.set_search_params("nprobe=64,efSearch=32")
    assert index.search_params == "nprobe=2" and faiss.extract_index_ivf(index._index).nprobe == 2
    after = index.search(x[:50], 10)
    assert (after[1] == before[1]).all()


def test_an_opq_index_trains_its_rotation_for_as_many_iterations_as_the_tuner_measured() -> None:
    from indexes.building import build_index
    from indexes.factory import OPQ_ITERATIONS

    def opq_iterations(index: object) -> int:
        node = faiss.downcast_index(index)
        while not isinstance(node, faiss.IndexPreTransform):
            node = faiss.downcast_index(node.index)
        return int(faiss.downcast_VectorTransform(node.chain.at(0)).niter)

    x = unit_vectors(np.random.default_rng(16), 300, 32)
    measured = build_index("OPQ8,IVF4,PQ8x4", 32, x, x, with_ids=False)
    built = VectorIndex.create(32, "OPQ8,IVF4,PQ8x4", use_gpu=False)
    assert opq_iterations(built._index) == opq_iterations(measured.index) == OPQ_ITERATIONS
