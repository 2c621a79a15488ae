"""Opening a collection: missing or foreign folders, newer formats, the writer lock, and an index file that is missing,
damaged or of unknown type."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest
from collection_helpers import QUERIES, assert_consistent
from conftest import REPO, SAMPLE_PHOTOS, copy_collection

import simsearch
from indexes import VectorIndex
from simsearch import Collection, CollectionError, open_collection
from simsearch.collection.index_file import save_index
from simsearch.collection.lock import WriterLock


@pytest.fixture(scope="module")
def col(sample_collection: Path) -> Iterator[Collection]:
    """The shared sample collection, open for reading (the model loads once, on the first image query)."""
    with open_collection(sample_collection, device="cpu") as c:
        yield c


# ---------------------------------------------------------------------------------------------------- opening


def test_opening_a_missing_collection_says_how_to_build_one(tmp_path: Path) -> None:
    with pytest.raises(CollectionError, match="simsearch index"):
        open_collection(tmp_path / "nothing-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CollectionError, match="simsearch index"):
        open_collection(tmp_path / "empty")


def test_a_folder_with_other_files_is_not_turned_into_a_collection(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("mine")
    with pytest.raises(CollectionError, match="not empty"):
        Collection.open(tmp_path / "stuff", create=True, device="cpu")
    assert sorted(p.name for p in (tmp_path / "stuff").iterdir()) == ["notes.txt"]


def test_a_manifest_of_a_newer_format_version_is_refused(sample_collection: Path, tmp_path: Path) -> None:
    path = copy_collection(sample_collection, tmp_path / "col")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["version"] = 99
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CollectionError, match=r"version 99 is newer .*upgrade"):
        open_collection(path)


def test_a_second_writer_is_refused_while_the_first_holds_the_collection(
    sample_collection: Path, tmp_path: Path
) -> None:
    path = copy_collection(sample_collection, tmp_path / "col")
    other = f"""
import sys, simsearch
col = simsearch.open_collection({str(path)!r})
for attempt in (lambda: col.add([{str(QUERIES / "pizza_0042.jpg")!r}]), lambda: col.remove([2])):
    try:
        attempt()
    except simsearch.CollectionError as exc:
        print(exc)
assert "torch" not in sys.modules  # refused before any model work
"""
    with open_collection(path) as first:
        first.remove([1])  # the first writer takes the lock and keeps it until it closes
        result = subprocess.run([sys.executable, "-c", other], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert len(lines) == 2 and all("another simsearch process is writing" in line for line in lines), lines

    with open_collection(path) as again:  # closing released the lock
        assert [r.id for r in again.remove([2])] == [2]
        assert len(again) == 46


@pytest.mark.parametrize("damage", ["deleted", "garbage", "truncated", "sidecar deleted", "sidecar stale"])
def test_a_missing_or_damaged_index_file_is_rebuilt_from_the_store(
    col: Collection, sample_collection: Path, tmp_path: Path, damage: str
) -> None:
    path = copy_collection(sample_collection, tmp_path / "col")
    queries = col.store.vectors(col.store.ids()[::6].tolist(), col.dim)
    before = col.search_vectors(queries, k=10)
    index_file = path / "vectors.faiss"
    if damage == "deleted":
        index_file.unlink()
    elif damage == "garbage":
        index_file.write_bytes(os.urandom(4096))
    elif damage == "truncated":
        index_file.write_bytes(index_file.read_bytes()[: index_file.stat().st_size // 2])
    elif damage == "sidecar deleted":
        (path / "vectors.faiss.json").unlink()
    else:  # a crash between the two files of a change of type: an HNSW graph beside the Flat index's sidecar
        flat_sidecar = (path / "vectors.faiss.json").read_text()
        hnsw = VectorIndex.create(col.dim, "HNSW32")
        hnsw.add(col.store.ids(), col.store.vectors(col.store.ids().tolist(), col.dim))
        save_index(hnsw, index_file)
        (path / "vectors.faiss.json").write_text(flat_sidecar)

    with open_collection(path) as c:
        assert len(c.index) == 48
        assert type(faiss.downcast_index(c.index._index.index)).__name__.startswith("IndexFlat")
        assert_consistent(c)
        after = c.search_vectors(queries, k=10)
        assert [[r.id for r in row] for row in after] == [[r.id for r in row] for row in before]
        assert np.allclose([[r.score for r in row] for row in after], [[r.score for r in row] for row in before])
        assert c.info().index_factory == "Flat"
    with open_collection(path) as c:  # the rebuilt index was saved: the second open finds it whole
        assert len(c.index) == 48 and c.manifest.index.generation == c.store.generation


def test_a_reader_searches_an_index_of_unknown_type_as_it_is_while_a_writer_holds_the_lock(
    col: Collection, sample_collection: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stale sidecar makes the index's type unknown; a reader that cannot rebuild it (the lock is taken) must still
    search it, here an IVF that a fresh empty index could not replace until trained. The next writer rebuilds it."""
    path = copy_collection(sample_collection, tmp_path / "col")
    with open_collection(path) as c:
        c.set_index_factory("IVF4,Flat", "nprobe=4")
    sidecar = path / "vectors.faiss.json"
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, "ntotal": meta["ntotal"] - 1, "file_bytes": 1}))
    queries = col.store.vectors(col.store.ids()[::6].tolist(), col.dim)
    expected = [[r.id for r in row] for row in col.search_vectors(queries, k=3)]

    with monkeypatch.context() as patch:
        patch.setattr(WriterLock, "try_acquire", lambda self: False)  # a writer is busy
        with open_collection(path) as c:
            assert c.index.is_trained and c.index.factory == ""
            assert [[r.id for r in row][:1] for row in c.search_vectors(queries, k=3)] == [row[:1] for row in expected]
    with open_collection(path) as c:
        assert c.index.factory == "IVF4,Flat" and c.index.search_params == "nprobe=4"
        assert_consistent(c)
    assert VectorIndex.load(path / "vectors.faiss").factory == "IVF4,Flat"


def test_a_pinned_index_type_this_version_refuses_falls_back_to_the_engines_choice(
    sample_collection: Path, tmp_path: Path
) -> None:
    """An older version (format 1) built PCA indexes; their collection must still open (and rebuild) rather than
    fail."""
    path = copy_collection(sample_collection, tmp_path / "col")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["version"] = 1
    del manifest["model"]["hub_name_unknown"]
    manifest["index"].update(factory="PCA8,Flat", search_params="", auto=False)
    (path / "manifest.json").write_text(json.dumps(manifest))
    (path / "vectors.faiss.json").unlink()
    with open_collection(path) as c:
        assert c.info().index_factory == "Flat" and c.info().index_auto is True
        assert_consistent(c)
        c.save()  # a writer upgrades the collection and rebuilds the index as the upgraded manifest says
        assert c.index.factory == "Flat"
    saved = json.loads((path / "manifest.json").read_text())
    assert saved["version"] == 2 and (saved["index"]["factory"], saved["index"]["auto"]) == ("Flat", True)


def test_a_reader_that_repaired_the_index_at_open_does_not_keep_writers_out(tmp_path: Path) -> None:
    """A long-lived searcher may take the lock to save a repaired index, but must give it back at once."""
    import subprocess
    import sys

    col = tmp_path / "col"
    with Collection.open(col, create=True, device="cpu") as c:
        c.add([SAMPLE_PHOTOS / "pizza"], workers=0)
    (col / "vectors.faiss").unlink()  # stale index: the next open repairs and saves it
    with simsearch.open_collection(col) as reader:
        assert (col / "vectors.faiss").exists()
        exe = Path(sys.executable).parent / "simsearch"
        writer = subprocess.run(
            [str(exe), "index", str(SAMPLE_PHOTOS / "watch"), "-c", str(col), "-q", "--workers", "0"],
            capture_output=True,
            text=True,
        )
        assert writer.returncode == 0, writer.stderr
        assert reader.search_vectors(reader.store.vectors([1], reader.dim)[0], k=1)[0].id == 1
    with simsearch.open_collection(col) as c:
        assert len(c) == 16


def test_a_writer_removes_temporary_files_that_dead_writers_left(sample_collection: Path, tmp_path: Path) -> None:
    path = copy_collection(sample_collection, tmp_path / "col")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = path / f".manifest.json.{int(dead.stdout)}.0123abcd.tmp"
    live = path / f".manifest.json.{os.getpid()}.89abcdef.tmp"
    for leftover in (stale, live):
        leftover.write_text('{"format": "simsearch-coll')
    with open_collection(path) as c:
        assert stale.exists(), "a reader removes nothing"
        c.remove([])  # takes the writer lock
        assert not stale.exists() and live.exists(), "only the dead writer's file goes"
        assert len(c) == 48
