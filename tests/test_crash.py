"""Crash safety: SIGKILL a real `simsearch index` run, then the collection opens consistent (store ids == index ids)
and a second run finishes the job, embedding only what the first one had not stored. Also crash states built by
hand (an index file older than the store, a half-written first manifest)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from collection_helpers import index_older_than_the_store
from conftest import SAMPLE_PHOTOS, copy_collection

from simsearch import Collection, CollectionError, open_collection
from simsearch.collection.store import Store

SCRIPT = Path(sys.executable).parent / "simsearch"
POLL_S = 0.005
TIMEOUT_S = 300.0


def stored_records(path: Path, store: Store | None) -> tuple[int, Store | None]:
    """How many records the indexer has committed, read from this (another) process through a read-only Store.

    The Store stays open between polls and is returned; None until the indexer has created its databases.
    """
    if store is None:
        if not (path / "data.mdb").exists():
            return 0, None
        try:
            store = Store(path, readonly=True)
        except CollectionError:  # the indexer has not created its databases yet
            return 0, None
    return len(store), store


def live_members(pgid: int) -> list[int]:
    """Processes of a process group that have not exited yet (a zombie has already released its files)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def kill_group(pgid: int) -> None:
    """SIGKILL every process of the group and wait until none runs: a dying member may still hold the lock file."""
    deadline = time.monotonic() + 30
    while live_members(pgid) and time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        time.sleep(0.02)


def wait_until_unlocked(col: Path, timeout: float = 10.0) -> None:
    """Wait until no process holds the collection's writer lock (flock or POSIX lock on ``.lock``).

    The kernel drops a killed process's locks when its files are finally released, which can trail its exit by a
    moment; this test is about the state a crash leaves, not about that moment.
    """
    lock = col / ".lock"
    if not lock.exists():
        return
    deadline = time.monotonic() + timeout
    with open(lock, "ab") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(handle, fcntl.LOCK_UN)
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.lockf(handle, fcntl.LOCK_UN)
                return
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{lock} is still locked {timeout} s after the index run was killed")
                time.sleep(0.01)


def start_index_run(photos: Path, col: Path, log: Path) -> subprocess.Popen[bytes]:
    """`simsearch index PHOTOS -c COL -q --batch-size 8` in its own process group (it and its decoding workers)."""
    if not SCRIPT.exists():
        pytest.skip(f"no console script at {SCRIPT} (package not pip-installed in this environment)")
    with open(log, "wb") as err:
        return subprocess.Popen(
            [SCRIPT, "index", photos, "-c", col, "-q", "--batch-size", "8"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )


def wait_for(proc: subprocess.Popen[bytes], col: Path, log: Path, when: Callable[[Path, int], bool]) -> None:
    """Poll the store until ``when(col, stored)`` holds; fail when the run ends or stalls first."""
    reader: Store | None = None
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            stored, reader = stored_records(col / "store.lmdb", reader)
            if when(col, stored):
                return
            if proc.poll() is not None:
                pytest.fail(f"the index run ended (status {proc.returncode}) before the kill point:\n{log.read_text()}")
            time.sleep(POLL_S)
        pytest.fail(f"the index run did not reach the kill point in {TIMEOUT_S} s:\n{log.read_text()}")
    finally:
        if reader is not None:
            reader.close()  # before this process opens the same environment through the library


def kill_index_run(photos: Path, col: Path, log: Path, when: Callable[[Path, int], bool]) -> int:
    """Start an index run, SIGKILL it and its workers once ``when(col, stored)`` holds; the records stored then."""
    proc = start_index_run(photos, col, log)
    try:
        wait_for(proc, col, log, when)
    finally:
        kill_group(proc.pid)
        proc.wait()
    wait_until_unlocked(col)
    count, reader = stored_records(col / "store.lmdb", None)
    if reader is not None:
        reader.close()
    return count


def assert_consistent(c: Collection) -> None:
    assert c.store.ids().tolist() == np.sort(c.index.ids()).tolist()


def finish_and_check(col: Path, photos: list[Path], stored: int) -> None:
    """A second run completes: every photo exactly once, store == index, and only the rest was embedded."""
    with Collection.open(col, create=True, device="cpu") as c:
        report = c.index_folder(photos[0].parent.parent, workers=0)
        assert (report.unchanged, report.added, report.embedded) == (stored, len(photos) - stored, len(photos) - stored)
        assert report.skipped == 0 and report.removed == 0
        assert sorted(r.path for r in c.store.records()) == sorted(str(p) for p in photos)
        assert len(c) == len(c.index) == len(photos)
        assert_consistent(c)
    with open_collection(col) as c:
        assert len(c) == len(photos)
        assert_consistent(c)


@pytest.fixture
def photos() -> list[Path]:
    """The 48 bundled sample photos (8 of each of 6 classes), resolved as the store records them."""
    found = sorted(p.resolve() for p in SAMPLE_PHOTOS.rglob("*.jpg"))
    assert len(found) == 48
    return found


@pytest.mark.parametrize("kill_at", [8, pytest.param(40, marks=pytest.mark.slow)])
def test_a_killed_index_run_leaves_a_consistent_collection_that_the_next_run_completes(
    photos: list[Path], tmp_path: Path, kill_at: int
) -> None:
    col = tmp_path / "col"
    stored = kill_index_run(photos[0].parent.parent, col, tmp_path / "index.log", lambda _, n: n >= kill_at)
    assert kill_at <= stored < len(photos)

    with open_collection(col) as c:
        assert len(c) == stored
        assert_consistent(c)
        assert {r.path for r in c.store.records()} <= {str(p) for p in photos}
        hit = c.search_vectors(c.store.vectors([int(c.store.ids()[-1])], c.dim)[0], k=1)[0]
        assert hit.id == int(c.store.ids()[-1]), "the last committed batch is searchable after the crash"

    finish_and_check(col, photos, stored)


def test_a_run_killed_before_its_first_batch_leaves_nothing_or_an_empty_collection(
    photos: list[Path], tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    for p in photos[::4]:  # 12 photos: the rerun has little to do
        (folder / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, folder / p.parent.name / p.name)
    subset = sorted(p.resolve() for p in folder.rglob("*.jpg"))
    col = tmp_path / "col"

    stored = kill_index_run(folder, col, tmp_path / "index.log", lambda c, _: (c / "manifest.json").exists())

    assert stored < len(subset)
    with open_collection(col) as c:
        assert len(c) == stored
        assert_consistent(c)
    finish_and_check(col, subset, stored)


def test_killing_only_the_main_index_process_does_not_leave_the_collection_locked(
    photos: list[Path], tmp_path: Path
) -> None:
    col = tmp_path / "col"
    proc = start_index_run(photos[0].parent.parent, col, tmp_path / "index.log")
    try:
        wait_for(proc, col, tmp_path / "index.log", lambda _, n: n >= 8)
        os.kill(proc.pid, signal.SIGKILL)  # the main process only, as the OOM killer or `kill -9 PID` would
        proc.wait()
        with open_collection(col) as c:
            deadline = time.monotonic() + 3.0
            while True:
                try:
                    c.remove([])  # takes the writer lock, changes nothing
                    break
                except CollectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            assert_consistent(c)
    finally:
        kill_group(proc.pid)  # the orphaned workers, if any


# ---------------------------------------------------------------------------------------------------- built by hand


def test_an_index_file_older_than_the_store_is_reconciled_at_open(sample_collection: Path, tmp_path: Path) -> None:
    """The state a crash leaves between a store commit and the index save: the index lacks and holds wrong ids."""
    path = copy_collection(sample_collection, tmp_path / "col")
    new_id = index_older_than_the_store(path, tmp_path)

    with open_collection(path) as c:
        assert len(c) == 46 and len(c.index) == 46
        assert_consistent(c)
        assert new_id in c.index.ids()
        hits = c.search_vectors(c.store.vectors([new_id], c.dim)[0], k=2)
        assert new_id in {r.id for r in hits} and all(r.score >= 0.999 for r in hits)
    assert json.loads((path / "manifest.json").read_text())["count"] == 46, "the reconciled state was saved"


def test_a_collection_folder_left_with_only_a_temporary_manifest_is_created_again(tmp_path: Path) -> None:
    col = tmp_path / "col"
    col.mkdir()
    (col / ".manifest.json.k2j3h4.tmp").write_text('{"format": "simsearch-coll')
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(SAMPLE_PHOTOS / "watch" / "image_0003.jpg", photos / "watch.jpg")
    with Collection.open(col, create=True, device="cpu") as c:
        assert c.index_folder(photos, workers=0).added == 1


def test_a_collection_folder_left_empty_by_a_kill_is_created_again(tmp_path: Path) -> None:
    col = tmp_path / "col"
    col.mkdir()  # the kill landed between mkdir and the first manifest
    with pytest.raises(CollectionError, match="simsearch index"):
        open_collection(col)
    with Collection.open(col, create=True, device="cpu") as c:
        assert len(c) == 0 and (col / "manifest.json").is_file()
