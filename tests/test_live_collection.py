"""A collection kept open sees what other processes commit (new images found, removed ones gone) without reopening;
a search asked for k results returns k whenever the collection holds k; many threads may search at once while
another process (or thread) writes; the server built on it cooperates with `simsearch index` and `simsearch remove`
running beside it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, SAMPLE_PHOTOS, unpack_caltech
from live_helpers import env, id_of, simsearch_cli

from simsearch import ImageError, open_collection
from simsearch.collection.live import ReadWriteLock
from simsearch.errors import CollectionError, UnknownImageError

pytest_plugins = ["live_helpers"]  # the private fixture


@pytest.fixture
def new_photos(tmp_path: Path) -> list[Path]:
    """Six photos of two classes that the samples do not have, in a folder of their own."""
    unpacked = unpack_caltech(tmp_path / "new", {"Faces_easy": 3, "Motorbikes": 3})
    return [p.resolve() for paths in unpacked.values() for p in paths]


@pytest.fixture
def copies(tmp_path: Path) -> list[Path]:
    """Copies of six sample photos under other names: adding them reuses the stored vectors (no model needed)."""
    folder = tmp_path / "copies"
    folder.mkdir()
    photos = sorted(SAMPLE_PHOTOS.glob("*/image_0002.jpg"))
    assert len(photos) == 6
    for photo in photos:
        shutil.copy(photo, folder / f"{photo.parent.name}_copy.jpg")
    return sorted(p.resolve() for p in folder.iterdir())


def other_process(code: str, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, env=env(), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------------------------------ following other processes


@pytest.mark.parametrize("readonly", [True, False], ids=["read-only", "writable"])
def test_an_open_collection_sees_two_images_added_and_30_removed_by_another_process(
    private: Path, new_photos: list[Path], readonly: bool
) -> None:
    added = new_photos[::3]  # one face, one motorbike
    folder = added[0].parent.parent / "two"
    folder.mkdir()
    for photo in added:
        shutil.copy(photo, folder / photo.name.replace("image", photo.parent.name))
    added = sorted(folder.iterdir())
    with open_collection(private, device="cpu", readonly=readonly) as col:
        pizza = id_of(col, SAMPLE_PHOTOS / "pizza" / "image_0001.jpg")
        assert len(col.search_id(pizza, k=100)) == 47

        simsearch_cli("index", str(folder), "-c", str(private), "-q", "--workers", "0")
        # no reopening and no waiting: the next search catches up
        assert len(col) == 50
        for photo in added:
            hit = col.search(photo, k=1)[0]
            assert hit.path == str(photo) and hit.score > 0.999
        assert len(col.search_id(pizza, k=100)) == 49

        doomed = [r for r in col.search_id(pizza, k=30)]
        simsearch_cli("remove", *(r.path for r in doomed), "-c", str(private), "--json")
        gone = {r.id for r in doomed}
        assert len(col) == 20
        results = col.search_id(pizza, k=100)
        assert len(results) == 19 and not gone & {r.id for r in results}
        for k in (1, 10, 19):  # k results whenever the collection holds k besides the query image
            assert len(col.search_id(pizza, k=k)) == k
        assert len(col.search_vectors(col.vector(pizza), k=20)) == 20
        for image_id in gone:
            with pytest.raises(UnknownImageError):
                col.search_id(image_id)
        assert sorted(col.index.ids().tolist()) == col.store.ids().tolist()


def test_a_short_list_is_never_returned_when_the_store_lost_entries_that_the_index_still_names(private: Path) -> None:
    """The index may name an image that another process removed after this process caught up: the search asks again
    rather than return fewer than k."""
    with open_collection(private) as col:
        query = col.vector(1)
        first = [r.id for r in col.search_vectors(query, k=5)]
        with col.store.write() as batch:  # a removal the index has not seen, as another process would commit it
            batch.delete(first[1])
        col._follower.seen = col.store.generation  # noqa: SLF001 - as if it came after the check before the search
        assert first[1] in col.index.ids()
        results = col.search_vectors(query, k=5)
        assert len(results) == 5 and first[1] not in [r.id for r in results]
        assert [r.rank for r in results] == [1, 2, 3, 4, 5]


def test_catching_up_skips_images_removed_between_listing_the_store_and_reading_their_vectors(
    private: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process may commit between the reads of one catch-up: an id listed as stored may have lost its vector
    by the time it is read. It is gone, so it is skipped, not an error for the search that caught up."""
    with open_collection(private, readonly=True) as col:
        listed = np.append(col.store.ids(), 10_000)  # 10,000: as listed just before another process removed it
        monkeypatch.setattr(col.store, "ids", lambda: listed)
        col._policy.sync_with_store()  # noqa: SLF001 - one catch-up, with the listing it would have read
        monkeypatch.undo()
        assert sorted(col.index.ids().tolist()) == col.store.ids().tolist()


WRITER = """
import json, sys, time
from simsearch import open_collection
path, log, rounds, copies = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
with open(log, "w") as out:
    for _ in range(rounds):
        with open_collection(path) as c:
            c.add(copies, workers=0)
            ids = [c.store.id_for_path(p) for p in copies]
            c.remove(ids)
        out.write(json.dumps({"ids": ids, "removed": time.monotonic()}) + "\\n")
        out.flush()
"""


@pytest.mark.parametrize("writer", ["process", "process-readonly", "thread"])
def test_many_threads_search_while_images_come_and_go(private: Path, copies: list[Path], writer: str) -> None:
    """Four threads search (by vector, by id, leaving ids out) while another process, or a thread of this one, adds
    six images and removes them again, round after round: no exception, always k results (the collection never
    holds fewer than 48), and never an image removed before the search began."""
    rounds = 4
    log = private.parent / "writer.jsonl"
    removals: list[dict] = []
    answers: list[tuple[float, list[int]]] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    with open_collection(private, readonly=writer == "process-readonly") as col:
        queries = col.store.vectors(col.store.ids()[::6].tolist(), col.dim)
        own = col.store.ids()[::6].tolist()

        def searcher(n: int) -> None:
            i = 0
            while not stop.is_set() or i < 5:
                started = time.monotonic()
                try:
                    if n % 2:
                        ids = [r.id for r in col.search_id(own[i % len(own)], k=40, exclude_ids=[own[0]])]
                    else:
                        ids = [r.id for r in col.search_vectors(queries[i % len(queries)], k=40)]
                except BaseException as exc:  # noqa: BLE001 - collected and reported below
                    errors.append(exc)
                    return
                answers.append((started, ids))
                i += 1

        def thread_writer() -> None:
            for _ in range(rounds):
                col.add(copies, workers=0)
                ids = [id_of(col, p) for p in copies]
                col.remove(ids)
                col.release_writer()
                removals.append({"ids": ids, "removed": time.monotonic()})

        threads = [threading.Thread(target=searcher, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        try:
            if writer == "thread":
                thread_writer()
            else:
                other_process(WRITER, str(private), str(log), str(rounds), *map(str, copies))
                removals = [json.loads(line) for line in log.read_text().splitlines()]
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        assert not errors, errors[0]
        assert len(col) == 48 and len(col.search_vectors(queries[0], k=48)) == 48
    assert len(removals) == rounds and len(answers) >= 20
    assert all(len(ids) == 40 for _, ids in answers), sorted({len(ids) for _, ids in answers})
    for started, ids in answers:
        stale = {i for r in removals if r["removed"] < started for i in r["ids"]}
        assert not stale & set(ids)


def test_the_readers_writer_lock_lets_readers_share_and_a_writer_exclude_them() -> None:
    lock = ReadWriteLock()
    inside = threading.Barrier(3, timeout=10)
    log: list[str] = []

    def reader() -> None:
        with lock.reading():
            inside.wait()  # three readers inside at once, or this times out
            log.append("read")

    threads = [threading.Thread(target=reader) for _ in range(3)]
    with lock.writing():
        for t in threads:
            t.start()
        with lock.writing(), lock.reading():  # the writing thread may write again and read inside
            log.append("write")  # readers cannot enter before the writer leaves
    for t in threads:
        t.join(10)
    assert log == ["write", "read", "read", "read"]


# --------------------------------------------------------------------------------------------- the facade's searches


def test_search_leaves_ids_out_and_an_int_is_never_an_image(private: Path) -> None:
    photo = SAMPLE_PHOTOS / "ketch" / "image_0003.jpg"
    with open_collection(private, device="cpu", readonly=True) as col:
        for value in (3, np.int64(3)):
            with pytest.raises(ImageError, match="search_id"):
                col.search(value, k=3)  # type: ignore[arg-type]
        assert col._embedder is None  # noqa: SLF001 - refused before the model loads
        own = id_of(col, photo)
        first = col.search(photo, k=3)
        assert first[0].id == own
        rest = col.search(photo, k=3, exclude_ids=[own])
        assert [r.id for r in rest] == [r.id for r in col.search(photo, k=4)[1:]]
        assert [r.id for r in col.search_id(np.int64(own), k=2)] == [r.id for r in rest[:2]]
        with pytest.raises(CollectionError, match="integer"):
            col.search_id(str(own))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------------ the server


def test_the_server_follows_another_process_and_lets_it_write(
    private: Path, new_photos: list[Path], tmp_path: Path
) -> None:
    pytest.importorskip("fastapi")
    from serving import ADMIN_TOKEN, bearer, serving

    writer = """
import sys
from simsearch import open_collection
with open_collection(sys.argv[1], device="cpu") as c:
    if sys.argv[2] == "add":
        c.add(sys.argv[3:], workers=0)
    else:
        c.remove([int(i) for i in sys.argv[3:]])
"""
    with serving(private, admin_token=ADMIN_TOKEN, upload_dir=tmp_path / "uploads") as c:
        # the server writes once; its writer lock is given back at once, so that other processes can write after it
        upload = {"image": ("f.jpg", new_photos[0].read_bytes(), "image/jpeg")}
        assert c.post("/images", files=upload, headers=bearer(ADMIN_TOKEN)).status_code == 201
        other_process(writer, str(private), "add", *map(str, new_photos[1:]))
        assert c.get("/info").json()["images"] == 54
        hits = c.post("/search", files={"image": ("q.jpg", new_photos[3].read_bytes(), "image/jpeg")}, params={"k": 1})
        assert hits.json()["results"][0]["path"] == str(new_photos[3])

        gone = [h["id"] for h in c.get("/images/1/similar", params={"k": 20}).json()["results"]]
        other_process(writer, str(private), "remove", *map(str, gone))
        results = c.get("/images/1/similar", params={"k": 33}).json()["results"]
        assert len(results) == 33 and not set(gone) & {h["id"] for h in results}
        assert c.get(f"/images/{gone[0]}").status_code == 404


@pytest.mark.slow
def test_a_bounded_load_with_a_writer_beside_it_has_no_5xx_and_no_lost_or_stale_result(
    private: Path, copies: list[Path]
) -> None:
    """A real server on loopback answers a fixed number of searches from 8 threads while another process adds and
    removes images 20 times; every answer is 200 with k results, none names an image removed before it was asked."""
    import urllib.error
    import urllib.request

    pytest.importorskip("fastapi")
    from serving import QUERIES, multipart, server_process

    log = private.parent / "writer.jsonl"
    with server_process(private, "--log-level", "warning") as (base, _):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(private), str(log), "20", *map(str, copies)], cwd=REPO, env=env()
        )
        body, content_type = multipart("image", "q.jpg", (QUERIES / "pizza_0042.jpg").read_bytes())
        answers: list[tuple[float, int, list[int]]] = []
        failures: list[str] = []
        lock = threading.Lock()

        def client(worker: int) -> None:
            for i in range(30):
                if (worker + i) % 3 == 0:
                    req = urllib.request.Request(f"{base}/search?k=20", data=body, method="POST")
                    req.add_header("Content-Type", content_type)
                else:
                    req = urllib.request.Request(f"{base}/images/{1 + (worker + i) % 40}/similar?k=20")
                asked = time.monotonic()
                try:
                    with urllib.request.urlopen(req, timeout=120) as r:
                        status, payload = r.status, json.loads(r.read())
                except urllib.error.HTTPError as exc:
                    status, payload = exc.code, json.loads(exc.read() or b"{}")
                    failures.append(f"{status} {payload.get('error')}")
                with lock:
                    answers.append((asked, status, [h["id"] for h in payload.get("results", [])]))

        deadline = time.monotonic() + 600
        threads = [threading.Thread(target=client, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(1.0, deadline - time.monotonic()))
        writer.wait(timeout=max(1.0, deadline - time.monotonic()))
    assert writer.returncode == 0
    assert len(answers) == 240
    assert not failures, failures[:3]
    assert all(status == 200 for _, status, _ in answers)
    assert all(len(ids) == 20 for _, _, ids in answers)  # never a short list
    removals = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(removals) == 20
    for asked, _, ids in answers:
        stale = {i for r in removals if r["removed"] < asked for i in r["ids"]}  # removed before it was asked
        assert not stale & set(ids)
