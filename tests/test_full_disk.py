"""A full disk (or a quota, or a failing device) during a write: one error line that names the cause and the folder,
no traceback, no temporary file left, a collection that still opens and answers, and a rerun that completes once
space is back. Two ways in: a real small tmpfs where this machine lets a test mount one, and ENOSPC injected into
each write (the store's commit, the index file, its sidecar, the manifest), which always runs."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faiss
import lmdb
import pytest
from cli_helpers import ok, one_line_error, run
from conftest import SAMPLE_PHOTOS, copy_collection

from simsearch import open_collection
from simsearch.collection.store import ImageRecord, Store
from simsearch.errors import StorageError
from simsearch.fsio import atomic_write_bytes, ensure_free_space, refused_write

NO_SPACE = os.strerror(errno.ENOSPC)
NEW_PHOTOS = 4


def new_photos(folder: Path) -> Path:
    """Four photos the sample collection holds under other names: indexing them writes the store (their vectors are
    copied, nothing is embedded), the index file, its sidecar and the manifest."""
    folder.mkdir()
    for i in range(1, NEW_PHOTOS + 1):
        shutil.copy(SAMPLE_PHOTOS / "watch" / f"image_000{i}.jpg", folder / f"copy_{i}.jpg")
    return folder


def leftovers(col: Path) -> list[str]:
    return sorted(p.name for p in col.rglob("*.tmp"))


def check_answers(col: Path) -> int:
    """Open read-only: every stored image is its own top hit at score ~1 (tied with its copies under other names);
    returns the count."""
    with open_collection(col, readonly=True) as c:
        ids = [int(i) for i in c.store.ids()]
        for image_id in ids:
            hits = c.search_vectors(c.vector(image_id), 1 + NEW_PHOTOS)
            assert hits[0].score == pytest.approx(1.0, abs=1e-4)
            assert image_id in {h.id for h in hits if h.score > 1 - 1e-4}
        assert len(c) == len(ids)
        return len(ids)


# -- the write layer on its own ----------------------------------------------------------------------------------------


def test_a_disk_error_is_named_by_cause_and_folder_and_anything_else_goes_through(tmp_path: Path) -> None:
    refused = refused_write(tmp_path, OSError(errno.ENOSPC, NO_SPACE))
    assert isinstance(refused, StorageError) and isinstance(refused, OSError) and refused.errno == errno.ENOSPC
    assert str(refused).startswith(f"cannot write in {tmp_path}: {NO_SPACE} (") and "free some space" in str(refused)
    assert "\n" not in str(refused)
    # LMDB and faiss give no errno: the cause is read from their message (the disk here has room).
    assert refused_write(tmp_path, lmdb.Error("mdb_txn_commit: Input/output error")).errno == errno.EIO  # type: ignore[union-attr]
    assert refused_write(tmp_path, RuntimeError(f"write error in x: 1 != 2 ({NO_SPACE})")).errno == errno.ENOSPC  # type: ignore[union-attr]
    assert refused_write(tmp_path, FileNotFoundError(errno.ENOENT, "gone")) is None
    assert refused_write(tmp_path, lmdb.Error("mdb_put: MDB_BAD_VALSIZE")) is None


def test_an_almost_full_disk_turns_a_bare_write_error_into_no_space(tmp_path: Path, monkeypatch) -> None:
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=4096))
    assert refused_write(tmp_path, lmdb.Error("mdb_txn_commit: Input/output error")).errno == errno.ENOSPC  # type: ignore[union-attr]
    with pytest.raises(StorageError, match=rf"cannot write in {tmp_path}: {NO_SPACE} \(about 1\.\d MiB needed"):
        ensure_free_space(tmp_path, 1000)


def test_an_atomic_write_that_the_disk_refuses_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch
) -> None:
    target = tmp_path / "kept.json"
    target.write_text("old")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, NO_SPACE)

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StorageError, match=f"cannot write in {tmp_path}: {NO_SPACE}") as caught:
        atomic_write_bytes(target, b"new")
    assert caught.value.errno == errno.ENOSPC
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["kept.json"]


# -- ENOSPC injected into each write of `simsearch index` ------------------------------------------------------------


class _FailingCommit:
    """A write transaction whose commit fails the way LMDB reports a full disk."""

    def __init__(self, txn: lmdb.Transaction) -> None:
        self._txn = txn

    def __enter__(self) -> lmdb.Transaction:
        return self._txn.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._txn.abort()
        if exc[0] is None:
            raise lmdb.Error(f"mdb_txn_commit: {NO_SPACE}")


class _EnvWithFullDisk:
    """An LMDB environment whose write transactions all fail to commit; everything else is the real one's."""

    def __init__(self, env: lmdb.Environment) -> None:
        self._env = env

    def begin(self, *args: Any, write: bool = False, **kwargs: Any) -> Any:
        txn = self._env.begin(*args, write=write, **kwargs)
        return _FailingCommit(txn) if write else txn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)


def _inject(where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if where == "store commit":
        real_open = Store._open
        monkeypatch.setattr(Store, "_open", lambda self, *a, **k: _EnvWithFullDisk(real_open(self, *a, **k)))
        return
    if where == "index file, faiss":

        def faiss_full(index: Any, path: str) -> None:
            Path(path).write_bytes(b"half")
            raise RuntimeError(f"Error in faiss::write_index: write error in {path}: 4051 != 256000 ({NO_SPACE})")

        monkeypatch.setattr(faiss, "write_index", faiss_full)
        return
    name = {"index file": ".vectors.faiss.", "sidecar": ".vectors.faiss.json.", "manifest": ".manifest.json."}[where]
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").rpartition("/")[2].startswith(name):
            raise OSError(errno.ENOSPC, NO_SPACE)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


WRITES = ["store commit", "index file", "index file, faiss", "sidecar", "manifest"]


@pytest.mark.parametrize("where", WRITES)
def test_enospc_in_any_write_of_index_is_one_line_and_the_rerun_completes(
    sample_collection: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    col = copy_collection(sample_collection, tmp_path / "col")
    photos = new_photos(tmp_path / "photos")
    before = len(Store(col / "store.lmdb", readonly=True))
    with monkeypatch.context() as patched:
        _inject(where, patched)
        message = one_line_error(run("index", photos, "-c", col, "--workers", "0"))
    assert NO_SPACE in message and (f"in {col}:" in message or f"in {col / 'store.lmdb'}:" in message), message
    assert leftovers(col) == []
    # The store keeps every batch committed before the failure and nothing of the failing one; the index that was
    # not saved is repaired from it in memory by a reader and on disk by the next writer.
    after = check_answers(col)
    assert after == before if where == "store commit" else after in (before, before + NEW_PHOTOS)
    ok(run("info", "-c", col))
    ok(run("index", photos, "-c", col, "--workers", "0"))
    assert check_answers(col) == before + NEW_PHOTOS
    with open_collection(col, readonly=True) as c:
        assert c._policy.is_current(), "the rerun saved an index that agrees with the store"


@pytest.mark.parametrize("where", ["store commit", "index file", "manifest"])
def test_enospc_during_remove_is_one_line_and_the_rerun_completes(
    sample_collection: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    col = copy_collection(sample_collection, tmp_path / "col")
    with monkeypatch.context() as patched:
        _inject(where, patched)
        message = one_line_error(run("remove", SAMPLE_PHOTOS / "watch", "-c", col))
    assert NO_SPACE in message and str(col) in message
    assert leftovers(col) == []
    watches = len(list((SAMPLE_PHOTOS / "watch").glob("*.jpg")))
    assert check_answers(col) in (48, 48 - watches)
    again = run("remove", SAMPLE_PHOTOS / "watch", "-c", col)
    if where != "store commit":  # the store had removed them: the rerun finds none, and saves the repaired index
        assert one_line_error(again) == f"Error: nothing matched: {SAMPLE_PHOTOS / 'watch'}"
    else:
        ok(again)
    assert check_answers(col) == 48 - watches
    with open_collection(col, readonly=True) as c:
        assert c._policy.is_current()


def test_a_disk_without_room_for_the_index_refuses_a_write_before_changing_anything(
    sample_collection: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    col = copy_collection(sample_collection, tmp_path / "col")
    manifest, store_bytes = (col / "manifest.json").read_bytes(), (col / "store.lmdb" / "data.mdb").read_bytes()
    usage = shutil.disk_usage(col)
    with monkeypatch.context() as patched:
        patched.setattr(shutil, "disk_usage", lambda _: usage._replace(free=300_000))  # the index is ~250 KB
        message = one_line_error(run("remove", SAMPLE_PHOTOS / "watch", "-c", col))
        assert message == f"Error: cannot write in {col}: {NO_SPACE} ({message.split('(', 1)[1]}"
        assert "needed" in message and "free some space and run again" in message
        ok(run("info", "-c", col))
    assert (col / "manifest.json").read_bytes() == manifest
    assert (col / "store.lmdb" / "data.mdb").read_bytes() == store_bytes
    assert check_answers(col) == 48


# -- a real full disk -------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str) -> Iterator[Path]:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and the mount command")
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Fill `disk` up to `leave` free bytes with one file; returns it."""
    filler = disk / "filler"
    with open(filler, "ab") as out:
        with contextlib.suppress(OSError):
            out.write(b"\0" * max(0, shutil.disk_usage(disk).free - leave))
    return filler


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "disk", "8m") as mounted:
        yield mounted


def test_the_store_on_a_full_disk_refuses_a_batch_and_keeps_the_last_one(disk: Path) -> None:
    store = Store(disk / "store.lmdb")
    vector = faiss.rand(1280).reshape(1, -1)

    def batch(first: int, n: int) -> None:
        with store.write() as b:
            for i in range(first, first + n):
                b.add(ImageRecord(i, f"/p/{i}.jpg", 1, 1, f"{i:064x}", 1, 1, "JPEG"), vector, os.urandom(20_000))

    batch(1, 10)
    filler = fill(disk, 0)
    with pytest.raises(StorageError, match=f"cannot write in {disk / 'store.lmdb'}: {NO_SPACE}"):
        batch(11, 50)
    assert len(store) == 10
    store.close()
    filler.unlink()
    store = Store(disk / "store.lmdb")
    assert len(store) == 10
    batch(11, 50)
    assert len(store) == 60
    store.close()


@pytest.mark.parametrize("leave", [0, 1_400_000], ids=["no room", "room for the store only"])
def test_a_full_disk_is_one_line_info_and_query_still_answer_and_the_rerun_completes(
    sample_collection: Path, disk: Path, tmp_path: Path, leave: int
) -> None:
    col = copy_collection(sample_collection, disk / "col")
    photos = new_photos(tmp_path / "photos")
    filler = fill(disk, leave)
    message = one_line_error(run("index", photos, "-c", col, "--workers", "0"))
    assert NO_SPACE in message and str(col) in message and "free some space and run again" in message
    assert leftovers(col) == []
    assert json.loads(ok(run("info", "-c", col, "--json")).stdout)["images"] in (48, 48 + NEW_PHOTOS)
    hits = ok(run("query", photos / "copy_1.jpg", "-c", col, "-k", "1", "--json")).stdout
    assert json.loads(hits)["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)  # the photo under its first name
    assert check_answers(col) in (48, 48 + NEW_PHOTOS)
    filler.unlink()
    ok(run("index", photos, "-c", col, "--workers", "0"))
    assert check_answers(col) == 48 + NEW_PHOTOS
    assert leftovers(col) == []
