"""Where and how a vector-index search runs: faiss's BLAS threshold lowered per search and never at import, and
the GPU copy (made lazily, given the params, dropped on each change, CPU-only types kept on the CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest
from index_helpers import clustered, needs_gpu, sparse_ids, unit_vectors

from indexes import IndexLayerError, VectorIndex, gpu_count

REPO = Path(__file__).resolve().parents[1]


class _RecordsBlasThreshold:
    """A faiss index stand-in that notes faiss's BLAS threshold at each search and searches the real index."""

    def __init__(self, index: object) -> None:
        self._inner = index
        self.seen: list[int] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        self.seen.append(int(faiss.cvar.distance_compute_blas_threshold))
        return self._inner.search(q, k)


def test_batched_exhaustive_search_uses_blas_early() -> None:
    x = unit_vectors(np.random.default_rng(17), 300, 16)
    index = VectorIndex.create(16, "Flat", use_gpu=False)
    index.add(np.arange(300), x)
    expected = index.search(x[:40], 5)
    recorder = _RecordsBlasThreshold(index._index)
    index._index = recorder
    before = faiss.cvar.distance_compute_blas_threshold
    try:
        found = index.search(x[:40], 5)
        faiss.cvar.distance_compute_blas_threshold = 100  # a caller's lower value is kept, and left as it was
        index.search(x[:40], 5)
        assert faiss.cvar.distance_compute_blas_threshold == 100
    finally:
        faiss.cvar.distance_compute_blas_threshold = before
    assert recorder.seen[0] <= 4096 and recorder.seen[1] == 100
    assert faiss.cvar.distance_compute_blas_threshold == before  # restored after the search
    np.testing.assert_array_equal(found[1], expected[1])


def test_importing_indexes_changes_no_faiss_setting() -> None:
    code = (
        "import faiss; before = faiss.cvar.distance_compute_blas_threshold; import indexes; "
        "assert faiss.cvar.distance_compute_blas_threshold == before, before"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)

    assert result.returncode == 0, result.stderr


def test_concurrent_searches_share_one_lowering_of_the_blas_threshold() -> None:
    from indexes.blas import BLAS_THRESHOLD, blas_from_small_batches

    before = faiss.cvar.distance_compute_blas_threshold
    outer = blas_from_small_batches()
    outer.__enter__()  # a first search still running ...
    with blas_from_small_batches():  # ... while a second starts and ends
        assert faiss.cvar.distance_compute_blas_threshold == BLAS_THRESHOLD
    assert faiss.cvar.distance_compute_blas_threshold == BLAS_THRESHOLD  # the first still needs it
    outer.__exit__(None, None, None)
    assert faiss.cvar.distance_compute_blas_threshold == before


@pytest.mark.skipif(gpu_count() > 0, reason="checks the no-GPU answer")
def test_asking_for_a_gpu_without_one_raises() -> None:
    assert not VectorIndex.create(8).on_gpu
    with pytest.raises(IndexLayerError, match="no GPU"):
        VectorIndex.create(8, use_gpu=True)


def test_the_gpu_copy_is_made_lazily_takes_the_params_and_is_dropped_on_each_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The placement logic without a GPU: faiss's cloner is replaced by a CPU clone that counts its calls."""
    import indexes.placement as placement

    clones: list[int] = []

    def clone(resources: object, device: int, index: faiss.Index) -> faiss.Index:
        clones.append(int(index.ntotal))
        return faiss.clone_index(index)

    monkeypatch.setattr(placement, "gpu_count", lambda: 1)
    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", clone, raising=False)
    rng = np.random.default_rng(18)
    x, q = clustered(rng, 2000, 16), unit_vectors(rng, 20, 16)
    ids = sparse_ids(rng, 2000)
    gpu, cpu = VectorIndex.create(16, "IVF16,Flat", use_gpu=True), VectorIndex.create(16, "IVF16,Flat", use_gpu=False)
    for index in (gpu, cpu):
        index.add(ids, x)
    assert gpu.on_gpu and not cpu.on_gpu and not VectorIndex.create(16, "HNSW32", use_gpu=True).on_gpu

    gpu.search(q, 5)
    gpu.search(q, 5)
    assert clones == [2000]  # made once, on the first search
    for index in (gpu, cpu):
        index.set_search_params("nprobe=1")
    np.testing.assert_array_equal(gpu.search(q, 5)[1], cpu.search(q, 5)[1])  # the copy took the new params
    assert clones == [2000]
    for index in (gpu, cpu):
        index.remove(ids[:100])
    np.testing.assert_array_equal(gpu.search(q, 5)[1], cpu.search(q, 5)[1])
    assert clones == [2000, 1900]  # cloned again after the change, with the params it had
    gpu.search(q, placement.GPU_MAX_K + 1)
    assert clones == [2000, 1900]  # k beyond the GPU's reach is searched on the CPU master


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize(("factory", "params"), [("Flat", ""), ("IVF16,Flat", "nprobe=16")])
def test_gpu_search_matches_cpu_search_and_follows_changes(factory: str, params: str) -> None:
    rng = np.random.default_rng(13)
    x, q = clustered(rng, 2000, 32), unit_vectors(rng, 30, 32)
    ids = sparse_ids(rng, 2000)
    cpu, gpu = VectorIndex.create(32, factory, use_gpu=False), VectorIndex.create(32, factory, use_gpu=True)
    for index in (cpu, gpu):
        index.add(ids, x)
        index.set_search_params(params)

    assert gpu.on_gpu and not cpu.on_gpu
    np.testing.assert_allclose(gpu.search(q, 10)[0], cpu.search(q, 10)[0], atol=1e-4)
    for index in (cpu, gpu):
        index.remove(ids[:1000])
    _, found = gpu.search(q, 10)
    assert not np.isin(found, ids[:1000]).any()
    np.testing.assert_allclose(gpu.search(q, 10)[0], cpu.search(q, 10)[0], atol=1e-4)


@pytest.mark.gpu
@needs_gpu
def test_hnsw_stays_on_the_cpu_when_a_gpu_is_wanted(tmp_path: Path) -> None:
    rng = np.random.default_rng(14)
    x = unit_vectors(rng, 500, 16)
    index = VectorIndex.create(16, "HNSW32", use_gpu=True)
    index.add(np.arange(500), x)

    assert not index.on_gpu
    assert index.search(x[:5], 1)[1][:, 0].tolist() == [0, 1, 2, 3, 4]
