"""The index on disk: a faiss file written through the library's atomic write, then its sidecar; loading trusts the
file over a sidecar that describes anything else."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest
from index_helpers import clustered, needs_gpu, sparse_ids, unit_vectors

from indexes import IndexLayerError, VectorIndex
from simsearch.collection.index_file import save_index


@pytest.mark.parametrize(("factory", "params"), [("Flat", ""), ("HNSW32", "efSearch=40"), ("IVF16,Flat", "nprobe=7")])
def test_save_load_round_trip_keeps_ids_results_factory_and_params(factory: str, params: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    x, q = clustered(rng, 600, 32), unit_vectors(rng, 20, 32)
    index = VectorIndex.create(32, factory)
    index.add(sparse_ids(rng, 600), x)
    index.set_search_params(params)
    before = index.search(q, 10)
    path = tmp_path / "vectors.faiss"

    save_index(index, path)
    save_index(index, path)  # overwriting an existing index goes through the same temp-file-and-rename
    loaded = VectorIndex.load(path)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["vectors.faiss", "vectors.faiss.json"]
    assert loaded.factory == factory and loaded.search_params == params and loaded.dim == 32
    np.testing.assert_array_equal(loaded.ids(), index.ids())
    after = loaded.search(q, 10)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_allclose(after[0], before[0], rtol=1e-6)
    sidecar = json.loads((tmp_path / "vectors.faiss.json").read_text())
    assert sidecar["ntotal"] == 600 and sidecar["metric"] == "inner_product" and sidecar["format"] == 1
    assert sidecar["faiss_version"] == faiss.__version__


def test_load_trusts_the_index_file_over_a_stale_or_missing_sidecar(tmp_path: Path) -> None:
    """A sidecar of an earlier save could name another index type (a crash mid-way through a change of type), so it
    is not believed: the vectors load, the type is unknown."""
    rng = np.random.default_rng(9)
    x = unit_vectors(rng, 400, 16)
    path = tmp_path / "v.faiss"
    index = VectorIndex.create(16, "IVF8,Flat")
    index.add(np.arange(300), x[:300])
    index.set_search_params("nprobe=3")
    save_index(index, path)
    old_sidecar = (tmp_path / "v.faiss.json").read_text()
    index.add(np.arange(300, 400), x[300:])
    save_index(index, path)
    (tmp_path / "v.faiss.json").write_text(old_sidecar)  # as if the process died between the two renames

    stale = VectorIndex.load(path)
    (tmp_path / "v.faiss.json").unlink()
    bare = VectorIndex.load(path)

    assert len(stale) == 400 and stale.factory == "" and stale.search(x[350], 1)[1][0, 0] == 350
    assert len(bare) == 400 and bare.factory == "" and bare.search(x[350], 1)[1][0, 0] == 350


def test_a_sidecar_of_another_index_type_with_as_many_vectors_is_not_believed(tmp_path: Path) -> None:
    x = unit_vectors(np.random.default_rng(13), 300, 16)
    path = tmp_path / "v.faiss"
    flat = VectorIndex.create(16, "Flat")
    flat.add(np.arange(300), x)
    save_index(flat, path)
    flat_sidecar = (tmp_path / "v.faiss.json").read_text()
    hnsw = VectorIndex.create(16, "HNSW32")
    hnsw.add(np.arange(300), x)
    save_index(hnsw, path)
    (tmp_path / "v.faiss.json").write_text(flat_sidecar)  # the crash came between the index and the sidecar

    assert VectorIndex.load(path).factory == ""
    (tmp_path / "v.faiss.json").unlink()
    save_index(hnsw, path)
    assert VectorIndex.load(path).factory == "HNSW32"  # a whole save is believed


def test_loading_a_missing_or_corrupt_file_raises(tmp_path: Path) -> None:
    good = tmp_path / "good.faiss"
    index = VectorIndex.create(8, "HNSW32")
    index.add(np.arange(100), unit_vectors(np.random.default_rng(10), 100, 8))
    save_index(index, good)
    garbage, truncated = tmp_path / "garbage.faiss", tmp_path / "truncated.faiss"
    garbage.write_bytes(b"this is not a faiss index" * 10)
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])

    for path in (tmp_path / "missing.faiss", garbage, truncated):
        with pytest.raises(IndexLayerError):
            VectorIndex.load(path)


def test_a_sidecar_from_a_newer_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "v.faiss"
    save_index(VectorIndex.create(8), path)
    meta = json.loads((tmp_path / "v.faiss.json").read_text())
    (tmp_path / "v.faiss.json").write_text(json.dumps({**meta, "format": 99}))

    with pytest.raises(IndexLayerError, match="newer"):
        VectorIndex.load(path)


def test_a_failed_save_leaves_no_temp_file_behind(tmp_path: Path) -> None:
    (tmp_path / "v.faiss").mkdir()  # a folder where the file should go: the final rename fails

    with pytest.raises(IndexLayerError):
        save_index(VectorIndex.create(8), tmp_path / "v.faiss")

    assert [p.name for p in tmp_path.iterdir()] == ["v.faiss"]


def test_saving_into_a_missing_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(IndexLayerError, match="does not exist"):
        save_index(VectorIndex.create(8), tmp_path / "nope" / "v.faiss")


@pytest.mark.gpu
@needs_gpu
def test_an_index_searched_on_the_gpu_saves_and_loads_on_the_cpu(tmp_path: Path) -> None:
    rng = np.random.default_rng(15)
    x = unit_vectors(rng, 500, 16)
    index = VectorIndex.create(16, "Flat", use_gpu=True)
    index.add(np.arange(500), x)
    expected = index.search(x[:20], 5)[1]

    save_index(index, tmp_path / "v.faiss")
    loaded = VectorIndex.load(tmp_path / "v.faiss", use_gpu=False)

    assert not loaded.on_gpu
    np.testing.assert_array_equal(loaded.search(x[:20], 5)[1], expected)
