"""Incremental indexing of real photos: changed, moved, copied, deleted and touched files; add and remove."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from collection_helpers import QUERIES, assert_consistent, paths_found
from conftest import SAMPLE_PHOTOS, copy_collection

import simsearch
import simsearch.collection.ingest
from simsearch import Collection, CollectionError, open_collection
from simsearch.images import file_sha256

# ---------------------------------------------------------------------------------------------------- incremental


def test_indexing_the_same_folder_again_embeds_nothing(sample_collection: Path, tmp_path: Path) -> None:
    with open_collection(copy_collection(sample_collection, tmp_path / "col")) as c:
        report = c.index_folder(SAMPLE_PHOTOS, workers=0)
        assert (report.unchanged, report.added, report.updated, report.moved, report.removed) == (48, 0, 0, 0, 0)
        assert report.embedded == 0 and report.skipped == 0
        assert len(c) == 48


@pytest.fixture
def small(tmp_path: Path) -> Iterator[tuple[Collection, Path]]:
    """A fresh collection of six sample photos (three airplanes, three pizzas) copied to a folder a test may edit."""
    photos = tmp_path / "photos"
    for name in ("airplanes", "pizza"):
        (photos / name).mkdir(parents=True)
        for i in (1, 2, 3):
            shutil.copy(SAMPLE_PHOTOS / name / f"image_000{i}.jpg", photos / name / f"image_000{i}.jpg")
    with Collection.open(tmp_path / "col", create=True, device="cpu") as c:
        report = c.index_folder(photos, workers=0)
        assert report.added == report.embedded == 6
        yield c, photos.resolve()


def test_a_file_whose_content_changed_is_embedded_again(small: tuple[Collection, Path]) -> None:
    c, photos = small
    target = photos / "airplanes" / "image_0002.jpg"
    old_id = c.store.id_for_path(str(target))
    shutil.copy(QUERIES / "sunflower_0042.jpg", target)  # a photo of another class, new to the collection

    report = c.index_folder(photos, workers=0)

    assert (report.updated, report.added, report.removed, report.unchanged, report.embedded) == (1, 0, 0, 5, 1)
    new_id = c.store.id_for_path(str(target))
    assert new_id is not None and new_id != old_id
    assert c.get(old_id) is None
    top = c.search(QUERIES / "sunflower_0042.jpg", k=1)[0]
    assert (top.path, top.id) == (str(target), new_id) and top.score >= 0.999
    assert len(c) == 6
    assert_consistent(c)


def test_a_moved_and_renamed_file_keeps_its_id_and_vector(small: tuple[Collection, Path]) -> None:
    c, photos = small
    source = photos / "airplanes" / "image_0001.jpg"
    target = photos / "pizza" / "renamed.jpg"
    old_id = c.store.id_for_path(str(source))
    vector = c.store.vectors([old_id], c.dim)
    source.rename(target)

    report = c.index_folder(photos, workers=0)

    assert (report.moved, report.embedded, report.added, report.removed) == (1, 0, 0, 0)
    assert c.store.id_for_path(str(target)) == old_id
    assert c.store.id_for_path(str(source)) is None
    assert np.array_equal(c.store.vectors([old_id], c.dim), vector)
    top = c.search(target, k=1)[0]
    assert (top.id, top.path) == (old_id, str(target))
    assert len(c) == 6
    assert_consistent(c)


def test_a_copied_file_is_added_with_the_vector_of_its_original(small: tuple[Collection, Path]) -> None:
    c, photos = small
    source = photos / "pizza" / "image_0003.jpg"
    copy = photos / "copy-of-pizza.jpg"
    shutil.copy(source, copy)

    report = c.index_folder(photos, workers=0)

    assert (report.added, report.embedded, report.reused, report.unchanged) == (1, 0, 1, 6)
    ids = c.store.ids_for_sha256(file_sha256(source))
    assert sorted(ids) == sorted([c.store.id_for_path(str(source)), c.store.id_for_path(str(copy))])
    assert np.array_equal(*c.store.vectors(ids, c.dim))
    top2 = c.search(copy, k=2)
    assert {r.path for r in top2} == {str(source), str(copy)}
    assert all(r.score >= 0.999 for r in top2)
    assert_consistent(c)


def test_a_deleted_file_is_dropped_and_never_found_again(small: tuple[Collection, Path]) -> None:
    c, photos = small
    doomed = photos / "airplanes" / "image_0003.jpg"
    content = doomed.read_bytes()
    old_id = c.store.id_for_path(str(doomed))
    doomed.unlink()

    report = c.index_folder(photos, workers=0)

    assert (report.removed, report.unchanged, report.embedded) == (1, 5, 0)
    assert c.get(old_id) is None and len(c) == 5
    assert str(doomed) not in paths_found(c, content)
    assert_consistent(c)


def test_a_touched_file_is_unchanged_and_not_embedded(small: tuple[Collection, Path]) -> None:
    c, photos = small
    touched = photos / "pizza" / "image_0001.jpg"
    old_id = c.store.id_for_path(str(touched))
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))

    report = c.index_folder(photos, workers=0)

    assert (report.unchanged, report.updated, report.added, report.embedded) == (6, 0, 0, 0)
    record = c.get(old_id)
    assert record is not None and record.mtime_ns == touched.stat().st_mtime_ns
    again = c.index_folder(photos, workers=0)
    assert again.unchanged == 6 and again.embedded == 0


@pytest.mark.parametrize("how", ["renamed over", "swapped"])
def test_known_content_arriving_at_an_indexed_path_keeps_its_vector(small: tuple[Collection, Path], how: str) -> None:
    c, photos = small
    a, b = photos / "airplanes" / "image_0001.jpg", photos / "pizza" / "image_0001.jpg"
    content_a, content_b = a.read_bytes(), b.read_bytes()
    if how == "renamed over":
        a.replace(b)  # `mv a.jpg b.jpg` where b.jpg is indexed too
    else:
        a.write_bytes(content_b)
        b.write_bytes(content_a)

    report = c.index_folder(photos, workers=0)

    # both contents are known: their vectors are moved or copied, never recomputed
    assert report.embedded == 0, report.as_dict()
    if how == "renamed over":
        assert (report.moved, report.removed) == (1, 1), report.as_dict()  # a's entry moved; b's old content gone
    assert len(c) == (5 if how == "renamed over" else 6)
    top = c.search(content_a, k=1)[0]
    assert top.path == str(b) and top.score >= 0.999
    if how == "swapped":
        top = c.search(content_b, k=1)[0]
        assert top.path == str(a) and top.score >= 0.999
    assert_consistent(c)


def test_an_unchanged_unreadable_file_is_remembered_and_not_decoded_again(
    small: tuple[Collection, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    c, photos = small
    bad = photos / "notes.jpg"
    bad.write_text("not a photo\n")
    first = c.index_folder(photos, workers=0)
    assert first.skipped_files == [(str(bad), "not an image")]

    probed: list[str] = []
    real_probe = simsearch.collection.ingest.probe_image

    def counting_probe(path: str, **kwargs: object) -> tuple[str, int, int]:
        probed.append(str(path))
        return real_probe(path, **kwargs)

    monkeypatch.setattr(simsearch.collection.ingest, "probe_image", counting_probe)
    again = c.index_folder(photos, workers=0)
    assert again.skipped_files == [(str(bad), "not an image")], "still reported, with the remembered reason"
    assert probed == [] and again.unchanged == 6

    shutil.copy(SAMPLE_PHOTOS / "watch" / "image_0005.jpg", bad)  # it becomes a photo
    fixed = c.index_folder(photos, workers=0)
    assert (fixed.added, fixed.skipped, fixed.embedded) == (1, 0, 1)
    assert c.store.skipped(str(bad)) is None and c.store.id_for_path(str(bad)) is not None

    other = photos / "broken.jpg"
    other.write_bytes(b"")
    assert c.index_folder(photos, workers=0).skipped == 1
    other.unlink()
    assert c.index_folder(photos, workers=0).skipped == 0
    assert c.store.skipped(str(other)) is None, "a bad file that is gone is forgotten"


def test_large_and_small_files_are_hashed_and_reported_in_scan_order(small: tuple[Collection, Path]) -> None:
    """Large files are read in threads and small ones in the calling thread: both get their hashes and sizes, and
    the skipped ones are reported in the order of the scan, whichever way they were read."""
    from PIL import Image

    c, photos = small
    big = photos / "airplanes" / "image_0009.png"  # a sample photo enlarged, stored without compression
    with Image.open(SAMPLE_PHOTOS / "watch" / "image_0005.jpg") as im:
        width = im.width * 4
        im.convert("RGB").resize((width, im.height * 4)).save(big, compress_level=0)
    assert big.stat().st_size >= simsearch.collection.ingest._THREADS_FROM_BYTES
    big_bad = photos / "airplanes" / "image_0008.jpg"
    big_bad.write_bytes(b"\0" * big.stat().st_size)  # large, and no image
    small_bad = photos / "pizza" / "image_0000.jpg"
    small_bad.write_text("not a photo\n")

    report = c.index_folder(photos, workers=0)

    assert report.skipped_files == [(str(big_bad), "not an image"), (str(small_bad), "not an image")]
    assert (report.added, report.embedded, report.unchanged) == (1, 1, 6)
    record = c.get(c.store.id_for_path(str(big)))
    assert record.sha256 == file_sha256(big) and (record.format, record.width) == ("PNG", width)
    assert_consistent(c)


def test_a_file_that_stops_being_an_image_loses_its_entry(small: tuple[Collection, Path]) -> None:
    c, photos = small
    ruined = photos / "pizza" / "image_0002.jpg"
    old_id = c.store.id_for_path(str(ruined))
    ruined.write_text("overwritten by a text editor\n")

    report = c.index_folder(photos, workers=0)

    assert (report.removed, report.skipped, report.unchanged) == (1, 1, 5)
    assert c.get(old_id) is None and c.store.id_for_path(str(ruined)) is None
    assert len(c) == 5
    assert_consistent(c)


def test_entries_outside_the_indexed_folder_are_left_alone(small: tuple[Collection, Path], tmp_path: Path) -> None:
    c, photos = small
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(SAMPLE_PHOTOS / "watch" / "image_0001.jpg", other / "watch.jpg")
    assert c.index_folder(other, workers=0).added == 1
    (photos / "pizza" / "image_0002.jpg").unlink()

    report = c.index_folder(photos, workers=0)

    assert report.removed == 1
    assert c.store.id_for_path(str(other.resolve() / "watch.jpg")) is not None
    assert len(c) == 6


# ---------------------------------------------------------------------------------------------------- add, remove


def test_remove_by_id_by_path_and_by_folder(sample_collection: Path, tmp_path: Path) -> None:
    path = copy_collection(sample_collection, tmp_path / "col")
    with open_collection(path) as c:
        first = c.store.ids()[0]
        doomed_path = SAMPLE_PHOTOS / "pizza" / "image_0004.jpg"
        doomed_path_id = c.store.id_for_path(str(doomed_path))
        folder_ids = {r.id for r in c.store.records_under(str(SAMPLE_PHOTOS / "watch")).values()}
        assert len(folder_ids) == 8
        queries = c.store.vectors([first, doomed_path_id, *sorted(folder_ids)], c.dim)

        assert [r.id for r in c.remove([int(first)])] == [first]
        assert [r.path for r in c.remove([str(doomed_path)])] == [str(doomed_path)]
        assert {r.id for r in c.remove([SAMPLE_PHOTOS / "watch"])} == folder_ids
        assert c.remove([SAMPLE_PHOTOS / "no-such.jpg", 10_000]) == []

        gone = {int(first), doomed_path_id, *folder_ids}
        assert len(c) == 38
        assert_consistent(c)
        found = {r.id for row in c.search_vectors(queries, k=48) for r in row}
        assert found.isdisjoint(gone)

    with open_collection(path) as again:
        assert len(again) == 38
        assert_consistent(again)


def test_add_embeds_new_files_and_removes_nothing(sample_collection: Path, tmp_path: Path) -> None:
    path = copy_collection(sample_collection, tmp_path / "col")
    new = [QUERIES / "pizza_0042.jpg", QUERIES / "starfish_0042.jpg"]
    with open_collection(path, device="cpu") as c:
        report = c.add(new, workers=0)

        assert (report.added, report.embedded, report.removed) == (2, 2, 0)
        assert len(c) == 50
        assert c.store.id_for_path(str(SAMPLE_PHOTOS / "ketch" / "image_0001.jpg")) is not None
        for photo in new:
            top = c.search(photo, k=1)[0]
            assert top.path == str(photo) and top.score >= 0.999
        again = c.add(new, workers=0)
        assert (again.unchanged, again.added, again.embedded) == (2, 0, 0)
        with pytest.raises(CollectionError, match="no such file"):
            c.add([tmp_path / "missing.jpg"])
        assert_consistent(c)
