"""Indexes larger than memory: an IVF trained once, filled shard by shard, merged on disk and searched memory-mapped
gives what the same IVF built in memory gives; a collection beyond the memory rule gets one, searched from the
library, `simsearch query` and the server, rebuilt (never patched) after a change; Ray tasks fill shards as this
process does."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from collection_helpers import QUERIES, assert_consistent
from conftest import SAMPLE_PHOTOS, copy_collection

import indexes.ondisk as ondisk
from cli.main import main
from indexes import IndexLayerError, VectorIndex
from simsearch import Collection, open_collection
from simsearch.collection.index_file import save_index


def _clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, d))
    x = centres[rng.integers(0, 50, n)] + 0.3 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _same_results(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> None:
    """Equal scores rank by rank, and equal ids wherever a score is not tied (list order may differ by shard)."""
    (sa, ia), (sb, ib) = a, b
    np.testing.assert_allclose(sa, sb, rtol=0, atol=1e-6)
    for row in range(len(ia)):
        for rank in range(ia.shape[1]):
            tied = np.sum(np.abs(sa[row] - sa[row, rank]) < 1e-6) > 1
            assert tied or ia[row, rank] == ib[row, rank]


@pytest.mark.parametrize("factory", ["IVF64,Flat", "IVF64,SQ8"])
def test_the_ivf_merged_on_disk_finds_what_the_same_ivf_built_in_memory_finds(tmp_path, factory):
    import faiss

    x = _clustered(20_000, 64)
    ids = np.random.default_rng(1).permutation(np.arange(1_000, 21_000))  # any ids, in any order
    trained = ondisk.train(64, factory, x[:4_000])
    in_memory = faiss.deserialize_index(trained)
    in_memory.add_with_ids(x, ids)

    shards = []
    for number, rows in enumerate(np.array_split(np.arange(len(x))[::-1], 5)):  # uneven order, 5 shards
        shards.append(tmp_path / f"shard-{number}.faiss")
        ondisk.fill_shard(trained, ids[rows], x[rows]).tofile(shards[-1])
    folder = tmp_path / "index"
    folder.mkdir()
    built = VectorIndex.on_disk_from(ondisk.merge_shards(trained, shards, ondisk.new_lists_path(folder / "v")), factory)
    save_index(built, folder / "v")
    moved = shutil.move(folder, tmp_path / "moved")  # found beside the index file, wherever that is now
    loaded = VectorIndex.load(tmp_path / "moved" / "v")
    assert loaded.on_disk and built.on_disk and loaded.ntotal == len(x)
    assert sorted(loaded.ids().tolist()) == sorted(ids.tolist())
    queries = _clustered(100, 64, seed=2)
    for nprobe in (4, 64):
        loaded.set_search_params(f"nprobe={nprobe}")
        in_memory.nprobe = nprobe
        _same_results(loaded.search(queries, 10), in_memory.search(queries, 10))
    for change in (lambda: loaded.add(np.array([5]), x[:1]), lambda: loaded.remove(ids[:3])):
        with pytest.raises(IndexLayerError, match="read-only"):
            change()  # never changed in place: other processes may map the same file
    assert len(list(moved.glob("*.ivfdata"))) == 1


def _force_on_disk(monkeypatch) -> None:
    """Make the memory rule send even the 48 sample photos to disk, in 3 shards."""
    monkeypatch.setattr(ondisk, "available_memory", lambda: 1_000)
    monkeypatch.setattr(ondisk, "SHARD_BYTES", 16 * 1280 * 4)


def _top_paths(path, k: int = 3) -> dict[str, list[str]]:
    with open_collection(path) as col:
        return {q.name: [r.path for r in col.search(q, k=k)] for q in sorted(QUERIES.iterdir())}


def test_a_collection_beyond_the_memory_rule_is_searched_on_disk_everywhere(sample_collection, tmp_path, monkeypatch):
    from serving import serving

    path = copy_collection(sample_collection, tmp_path / "col")
    _force_on_disk(monkeypatch)
    with Collection.open(path, device="cpu") as col:
        col.save()
        tuning = col.manifest.index.tuning
    assert tuning is not None and tuning["on_disk"] and tuning["shards"] == 3
    assert tuning["full_size_recall_at_10"] >= 0.95
    lists = sorted(path.glob("*.ivfdata"))
    assert len(lists) == 1
    with open_collection(path) as col:  # the library
        assert col.index.on_disk and len(col.index) == 48
        assert_consistent(col)
    exact, on_disk = _top_paths(sample_collection), _top_paths(path)
    assert {q: p[0] for q, p in on_disk.items()} == {q: p[0] for q, p in exact.items()}

    query = sorted(QUERIES.iterdir())[0]
    out = CliRunner().invoke(main, ["query", str(query), "-c", str(path), "-k", "3", "--json"])  # the command
    assert out.exit_code == 0, out.output
    assert '"results"' in out.stdout and on_disk[query.name][0] in out.stdout
    with serving(path) as client:  # the server
        photo = {"image": (query.name, query.read_bytes(), "image/jpeg")}
        hits = client.post("/search", files=photo, params={"k": 3}).json()["results"]
    assert [h["path"] for h in hits][:1] == on_disk[query.name][:1]

    with Collection.open(path, device="cpu") as col:  # a rerun changes nothing: the index is kept as it is
        report = col.index_folder(SAMPLE_PHOTOS, workers=0)
    assert report.embedded == 0 and sorted(path.glob("*.ivfdata")) == lists
    with Collection.open(path, device="cpu") as col:  # a change rebuilds it into a new lists file
        gone = col.remove([SAMPLE_PHOTOS / "pizza"])
    assert gone
    new_lists = sorted(path.glob("*.ivfdata"))
    assert len(new_lists) == 1 and new_lists != lists
    with open_collection(path) as col:
        assert col.index.on_disk and len(col.index) == 48 - len(gone)
        assert_consistent(col)
        assert not any("/pizza/" in r.path for r in col.search(QUERIES / "pizza_0042.jpg", k=5))


def test_ray_tasks_fill_the_shards_as_this_process_does(ray_cluster, sample_collection, tmp_path, monkeypatch):
    from simsearch.collection.store import Store
    from simsearch.scale import RayEngine
    from simsearch.scale.ondisk import build_on_disk, serial_map

    path = copy_collection(sample_collection, tmp_path / "col")
    monkeypatch.setattr(ondisk, "SHARD_BYTES", 16 * 1280 * 4)
    store = Store(path / "store.lmdb", readonly=True)
    try:
        trained = ondisk.train(1280, "IVF8,Flat", store.vectors(store.ids().tolist(), 1280))
        built = {}
        for name, runner in (("local", serial_map), ("ray", RayEngine().map_unordered)):
            folder = tmp_path / name
            folder.mkdir()
            built[name], facts = build_on_disk(
                store, 1280, folder / "v", "IVF8,Flat", map_unordered=runner, trained=trained
            )
            assert facts["shards"] == 3 and built[name].ntotal == 48
        queries = store.vectors(store.ids()[:10].tolist(), 1280)
    finally:
        store.close()
    for index in built.values():
        index.set_search_params("nprobe=8")
    _same_results(built["ray"].search(queries, 10), built["local"].search(queries, 10))
