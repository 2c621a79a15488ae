"""Tests of the LMDB image store: atomic write batches, id allocation, the path and hash lookups, vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import simsearch.collection.store
from simsearch.collection.store import ImageRecord, Store
from simsearch.errors import CollectionError

DIM = 16


def record(image_id: int, path: str, sha: str = "", size: int = 100) -> ImageRecord:
    return ImageRecord(
        id=image_id,
        path=path,
        size=size,
        mtime_ns=1_700_000_000_000_000_000 + image_id,
        sha256=sha or f"{image_id:064x}",
        width=640,
        height=480,
        format="JPEG",
    )


def unit(rng: np.random.Generator, n: int = 1) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "store.lmdb")
    yield s
    s.close()


def add_images(store: Store, paths: list[str], rng: np.random.Generator | None = None) -> list[int]:
    rng = rng or np.random.default_rng(0)
    with store.write() as batch:
        ids = batch.new_ids(len(paths))
        for image_id, path in zip(ids, paths, strict=True):
            batch.add(record(image_id, path), unit(rng)[0], b"jpeg-" + path.encode())
    return ids


def test_a_write_batch_adds_updates_and_deletes_records_round_trip(store: Store) -> None:
    ids = add_images(store, ["/p/a.jpg", "/p/b.jpg", "/p/c.jpg"])
    assert store.get(ids[0]) == record(ids[0], "/p/a.jpg")
    assert len(store) == 3
    assert store.thumbnail(ids[1]) == b"jpeg-/p/b.jpg"

    moved = record(ids[0], "/p/moved/a.jpg")
    with store.write() as batch:
        batch.update(moved)
        batch.delete(ids[2])

    assert store.get(ids[0]) == moved
    assert store.id_for_path("/p/moved/a.jpg") == ids[0]
    assert store.id_for_path("/p/a.jpg") is None, "an update must drop the old path"
    assert store.get(ids[2]) is None
    assert store.id_for_path("/p/c.jpg") is None
    assert store.ids_for_sha256(record(ids[2], "").sha256) == []
    assert store.thumbnail(ids[2]) is None
    with pytest.raises(CollectionError, match="missing the vector"):
        store.vectors([ids[2]], DIM)
    assert store.ids().tolist() == [ids[0], ids[1]]
    assert [r.path for r in store.records()] == ["/p/moved/a.jpg", "/p/b.jpg"]
    assert store.get_many([ids[1], 999]) == [record(ids[1], "/p/b.jpg"), None]


def test_an_update_keeps_the_vector_and_thumbnail_of_the_id(store: Store) -> None:
    rng = np.random.default_rng(1)
    [image_id] = add_images(store, ["/p/a.jpg"], rng)
    before = store.vectors([image_id], DIM)
    with store.write() as batch:
        batch.update(record(image_id, "/q/renamed.jpg"))
    assert np.array_equal(store.vectors([image_id], DIM), before)
    assert store.thumbnail(image_id) == b"jpeg-/p/a.jpg"


def test_ids_are_never_reused_after_a_delete(store: Store) -> None:
    ids = add_images(store, ["/p/a.jpg", "/p/b.jpg", "/p/c.jpg"])
    assert ids == [1, 2, 3]
    with store.write() as batch:
        batch.delete(3)
    with store.write() as batch:
        assert batch.new_ids(2) == [4, 5]
    # reserved ids stay consumed even when the batch that reserved them commits nothing
    with store.write() as batch:
        assert batch.new_ids(1) == [6]


def test_the_path_index_maps_one_path_and_the_hash_index_keeps_every_id_of_a_content(store: Store) -> None:
    rng = np.random.default_rng(2)
    sha = "ab" * 32
    with store.write() as batch:
        first, second, other = batch.new_ids(3)
        batch.add(record(first, "/p/a.jpg", sha), unit(rng)[0], None)
        batch.add(record(second, "/p/copy-of-a.jpg", sha), unit(rng)[0], None)
        batch.add(record(other, "/p/b.jpg"), unit(rng)[0], None)

    assert store.id_for_path("/p/a.jpg") == first
    assert store.id_for_path("/p/copy-of-a.jpg") == second
    assert store.id_for_path("/p/none.jpg") is None
    assert sorted(store.ids_for_sha256(sha)) == [first, second]
    assert store.ids_for_sha256("cd" * 32) == []

    with store.write() as batch:
        batch.delete(first)
    assert store.ids_for_sha256(sha) == [second]


def test_records_under_a_folder_do_not_include_a_sibling_folder_with_a_common_prefix(store: Store) -> None:
    paths = ["/a/b/x.jpg", "/a/b/sub/y.jpg", "/a/bc/z.jpg", "/a/b.jpg", "/a/ba", "/a/b-c/w.jpg", "/a/a/v.jpg"]
    add_images(store, paths)

    expected = {"/a/b/x.jpg", "/a/b/sub/y.jpg"}
    assert set(store.records_under("/a/b")) == expected
    assert set(store.records_under("/a/b/")) == expected
    assert set(store.records_under("/a/bc")) == {"/a/bc/z.jpg"}
    assert set(store.records_under("/a")) == set(paths)
    assert store.records_under("/nowhere") == {}
    assert store.records_under("/a/b")["/a/b/x.jpg"].path == "/a/b/x.jpg"


def test_vectors_round_trip_bit_for_bit_in_the_order_asked(store: Store) -> None:
    rng = np.random.default_rng(3)
    vectors = unit(rng, 5)
    vectors[0, 0] = np.float32(1e-38)  # a denormal-adjacent value must survive as is
    with store.write() as batch:
        ids = batch.new_ids(5)
        for image_id, vector in zip(ids, vectors, strict=True):
            batch.add(record(image_id, f"/p/{image_id}.jpg"), vector, None)

    order = [ids[3], ids[0], ids[4]]
    got = store.vectors(order, DIM)
    assert got.dtype == np.float32 and got.shape == (3, DIM)
    assert np.array_equal(got, vectors[[3, 0, 4]])
    with pytest.raises(CollectionError):
        store.vectors([ids[0]], DIM + 1)  # a vector of another length is an error, never a silent reinterpretation


def test_the_generation_increments_once_per_committed_batch(store: Store) -> None:
    assert store.generation == 0
    add_images(store, ["/p/a.jpg", "/p/b.jpg"])
    assert store.generation == 1
    with store.write() as batch:
        batch.update(record(1, "/p/a2.jpg"))
        batch.delete(2)
    assert store.generation == 2
    with store.write():
        pass  # an empty batch is no change
    with store.write() as batch:
        batch.new_ids(3)  # reserving ids is no change of the contents either
    assert store.generation == 2


def test_a_batch_that_raises_inside_with_commits_nothing(store: Store) -> None:
    add_images(store, ["/p/a.jpg"])
    generation = store.generation
    rng = np.random.default_rng(4)
    with pytest.raises(RuntimeError, match="boom"), store.write() as batch:
        [new_id] = batch.new_ids(1)
        batch.add(record(new_id, "/p/b.jpg"), unit(rng)[0], b"thumb")
        batch.update(record(1, "/p/renamed.jpg"))
        batch.delete(1)
        raise RuntimeError("boom")

    assert store.generation == generation
    assert len(store) == 1
    assert store.get(new_id) is None
    assert store.id_for_path("/p/b.jpg") is None
    assert store.get(1) == record(1, "/p/a.jpg")


def test_a_batch_bigger_than_the_map_grows_it_and_commits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(simsearch.collection.store, "_INITIAL_MAP_SIZE", 64 * 1024)
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((200, 1280)).astype(np.float32)  # 1 MB of vectors in one transaction
    store = Store(tmp_path / "store.lmdb")
    try:
        with store.write() as batch:
            ids = batch.new_ids(len(vectors))
            for image_id, vector in zip(ids, vectors, strict=True):
                batch.add(record(image_id, f"/p/{image_id}.jpg"), vector, None)
        assert len(store) == 200
        assert store.generation == 1
        assert np.array_equal(store.vectors(ids, 1280), vectors)
    finally:
        store.close()


def test_the_store_persists_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "store.lmdb"
    store = Store(path)
    ids = add_images(store, ["/p/a.jpg", "/p/b.jpg"])
    store.close()
    again = Store(path)
    try:
        assert again.ids().tolist() == ids
        assert again.generation == 1
        assert again.id_for_path("/p/b.jpg") == ids[1]
    finally:
        again.close()


def test_a_missing_store_cannot_be_opened_read_only(tmp_path: Path) -> None:
    with pytest.raises(CollectionError, match="no image store"):
        Store(tmp_path / "store.lmdb", readonly=True)


def test_a_read_only_store_reads_what_was_written_and_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "store.lmdb"
    store = Store(path)
    ids = add_images(store, ["/p/a.jpg", "/p/b.jpg"])
    store.close()

    reader = Store(path, readonly=True)
    try:
        assert len(reader) == 2
        assert reader.ids().tolist() == ids
        assert reader.get(ids[0]) == record(ids[0], "/p/a.jpg")
        assert reader.generation == 1
        with pytest.raises(CollectionError, match="read-only"):
            reader.write()
    finally:
        reader.close()


def test_an_empty_store_has_no_ids(store: Store) -> None:
    assert store.ids().dtype == np.int64
    assert store.ids().tolist() == []
    assert len(store) == 0
    assert list(store.records()) == []
