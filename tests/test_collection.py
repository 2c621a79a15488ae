"""Behaviour of the Collection library API on real photos: search quality, incremental indexing, bad files,
removal, model identity, opening errors, the writer lock, index rebuilds and index types."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest
from conftest import REPO, SAMPLE_PHOTOS, SAMPLES, copy_collection, unpack_caltech
from PIL import Image

import simsearch.collection
from indexes import IndexChoice, VectorIndex
from simsearch import Collection, CollectionError, ModelError, ModelMismatchError, SearchResult, open_collection
from simsearch.images import file_sha256

QUERIES = SAMPLES / "queries"
SAMPLE_CLASSES = sorted(p.name for p in SAMPLE_PHOTOS.iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def col(sample_collection: Path) -> Iterator[Collection]:
    """The shared sample collection, open for reading (the model loads once, on the first image query)."""
    with open_collection(sample_collection, device="cpu") as c:
        yield c


def assert_consistent(c: Collection) -> None:
    """Store and index hold exactly the same ids."""
    assert c.store.ids().tolist() == np.sort(c.index.ids()).tolist()


def paths_found(c: Collection, query: str | bytes | Path) -> list[str]:
    return [r.path for r in c.search(query, k=max(len(c), 1))]


# ---------------------------------------------------------------------------------------------------- search quality


@pytest.mark.parametrize("name", ["airplanes/image_0003.jpg", "pizza/image_0005.jpg", "watch/image_0008.jpg"])
def test_a_photo_of_the_collection_comes_first_with_score_one(col: Collection, name: str) -> None:
    photo = SAMPLE_PHOTOS / name
    results = col.search(photo, k=5)

    assert [r.rank for r in results] == [1, 2, 3, 4, 5]
    assert results[0].path == str(photo)
    assert results[0].score >= 0.999
    assert all(a.score >= b.score for a, b in zip(results, results[1:], strict=False))
    record = col.get(results[0].id)
    assert record is not None and (results[0].width, results[0].height) == (record.width, record.height)


def test_bytes_and_pil_images_are_queries_like_a_path(col: Collection) -> None:
    photo = SAMPLE_PHOTOS / "starfish" / "image_0002.jpg"
    by_path = col.search(photo, k=3)
    by_bytes = col.search(photo.read_bytes(), k=3)
    with Image.open(photo) as im:
        by_pil = col.search(im, k=3)
    assert [r.id for r in by_bytes] == [r.id for r in by_path] == [r.id for r in by_pil]


def test_unseen_photos_of_the_collections_classes_find_their_class(col: Collection, tmp_path: Path) -> None:
    """precision@5 over two photos per class that are not in the collection; chance is 1/6."""
    unpacked = unpack_caltech(tmp_path, {name: 10 for name in SAMPLE_CLASSES})
    queries = [(name, path) for name, paths in unpacked.items() for path in paths[8:]]
    for _, path in queries:
        assert col.store.ids_for_sha256(file_sha256(path)) == [], f"{path} is in the collection already"

    hits = col.search_vectors(col.embed([path for _, path in queries]), k=5)
    precision = [
        np.mean([Path(r.path).parent.name == name for r in row]) for (name, _), row in zip(queries, hits, strict=True)
    ]

    assert len(precision) == 2 * len(SAMPLE_CLASSES)
    assert float(np.mean(precision)) >= 0.8, dict(zip([str(p) for _, p in queries], precision, strict=True))


@pytest.mark.parametrize("name", ["pizza", "starfish", "sunflower"])
def test_a_bundled_query_photo_finds_its_own_class_first(col: Collection, name: str) -> None:
    results = col.search(QUERIES / f"{name}_0042.jpg", k=3)
    assert [Path(r.path).parent.name for r in results] == [name] * 3


def test_search_vectors_takes_one_vector_or_a_batch(col: Collection) -> None:
    ids = col.store.ids()[[0, 17, 40]].tolist()
    vectors = col.store.vectors(ids, col.dim)

    one = col.search_vectors(vectors[1], k=4)
    assert all(isinstance(r, SearchResult) for r in one)
    assert one[0].id == ids[1] and one[0].score >= 0.999

    many = col.search_vectors(vectors, k=4)
    assert len(many) == 3 and all(len(row) == 4 for row in many)
    assert [row[0].id for row in many] == ids
    assert [r.id for r in many[1]] == [r.id for r in one]


def test_k_beyond_the_collection_size_returns_every_image_once(col: Collection) -> None:
    results = col.search_vectors(col.store.vectors([1], col.dim)[0], k=500)
    assert [r.rank for r in results] == list(range(1, 49))
    assert sorted(r.id for r in results) == col.store.ids().tolist()


def test_bad_query_vectors_and_k_are_collection_errors(col: Collection) -> None:
    with pytest.raises(CollectionError, match="shape"):
        col.search_vectors(np.zeros(col.dim + 1, dtype=np.float32))
    with pytest.raises(CollectionError, match="shape"):
        col.search_vectors(np.zeros((2, 3, col.dim), dtype=np.float32))
    with pytest.raises(CollectionError, match="k must be"):
        col.search_vectors(np.zeros(col.dim, dtype=np.float32), k=0)


def test_embed_gives_l2_normalised_float32_rows(col: Collection) -> None:
    vectors = col.embed([SAMPLE_PHOTOS / "ketch" / "image_0001.jpg", QUERIES / "pizza_0042.jpg"])
    assert vectors.dtype == np.float32 and vectors.shape == (2, col.dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_info_describes_the_collection(col: Collection, sample_collection: Path) -> None:
    facts = col.info()
    assert facts["images"] == 48 == len(col)
    assert facts["path"] == str(sample_collection)
    assert facts["model"].startswith("default:")
    assert facts["dim"] == col.dim == 1280
    assert facts["index_factory"] == "Flat" and facts["index_auto"] is True
    assert facts["disk_bytes"] > 0


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
    real_probe = simsearch.collection.probe_image

    def counting_probe(path: str, **kwargs: object) -> tuple[str, int, int]:
        probed.append(str(path))
        return real_probe(path, **kwargs)

    monkeypatch.setattr(simsearch.collection, "probe_image", counting_probe)
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


# ---------------------------------------------------------------------------------------------------- files


def test_corrupt_and_non_image_files_are_skipped_with_a_reason(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i in (1, 2, 3):
        shutil.copy(SAMPLE_PHOTOS / "sunflower" / f"image_000{i}.jpg", folder / f"good{i}.jpg")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not a picture\n")
    jpeg = (SAMPLE_PHOTOS / "ketch" / "image_0001.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "README.txt").write_text("photos of sunflowers\n")

    with Collection.open(tmp_path / "col", create=True, device="cpu") as c:
        report = c.index_folder(folder, workers=0)

        reasons = {Path(p).name: reason for p, reason in report.skipped_files}
        assert set(reasons) == {"empty.jpg", "text.jpg", "truncated.jpg", "README.txt"}
        assert "empty" in reasons["empty.jpg"]
        assert "not an image" in reasons["text.jpg"] and "not an image" in reasons["README.txt"]
        assert "truncated" in reasons["truncated.jpg"]
        assert all("\n" not in r for r in reasons.values())
        assert (report.skipped, report.added, report.embedded) == (4, 3, 3)
        assert sorted(Path(r.path).name for r in c.store.records()) == ["good1.jpg", "good2.jpg", "good3.jpg"]
        assert_consistent(c)


def test_a_file_name_that_is_not_utf8_is_indexed_and_found(tmp_path: Path) -> None:
    folder = tmp_path / "old"
    folder.mkdir()
    name = os.fsdecode(b"caf\xe9.jpg")  # Latin-1 bytes from an old archive: a surrogate escape in Python
    try:
        shutil.copy(SAMPLE_PHOTOS / "sunflower" / "image_0001.jpg", folder / name)
    except (OSError, UnicodeEncodeError) as exc:
        pytest.skip(f"this file system refuses non-UTF-8 names: {exc}")
    shutil.copy(SAMPLE_PHOTOS / "watch" / "image_0002.jpg", folder / "watch.jpg")
    with Collection.open(tmp_path / "col", create=True, device="cpu") as c:
        assert c.index_folder(folder, workers=0).added == 2
        results = c.search(folder / name, k=1)
        assert results[0].path == str(folder / name)
        from simsearch.report import render_html

        page = render_html(c, str(folder / name), None, results).encode("utf-8")  # a page that can be written
        assert "caf\ufffd.jpg".encode() in page
        again = c.index_folder(folder, workers=0)
        assert (again.added, again.removed, again.unchanged) == (0, 0, 2)
        assert_consistent(c)


def _two_sunflowers(folder: Path) -> Path:
    folder.mkdir()
    for i in (1, 2):
        shutil.copy(SAMPLE_PHOTOS / "sunflower" / f"image_000{i}.jpg", folder / f"{i}.jpg")
    return folder


def test_a_file_refused_for_its_pixel_count_is_tried_again_under_a_higher_limit(tmp_path: Path) -> None:
    folder = _two_sunflowers(tmp_path / "photos")
    with Collection.open(tmp_path / "col", create=True, device="cpu") as c:
        low = c.index_folder(folder, workers=0, max_pixels=1000)
        assert (low.added, low.skipped) == (0, 2)
        same = c.index_folder(folder, workers=0, max_pixels=1000)
        assert (same.added, same.skipped) == (0, 2)  # remembered under the same limit
        high = c.index_folder(folder, workers=0)
        assert (high.added, high.skipped) == (2, 0)
        assert_consistent(c)


def test_a_file_that_could_not_be_opened_is_not_remembered_as_bad(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An I/O error (permissions, a flaky mount) says nothing about the file: the next run tries it again."""
    import simsearch.collection as collection_module
    from simsearch.errors import ImageError

    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(SAMPLE_PHOTOS / "sunflower" / "image_0001.jpg", folder / "a.jpg")
    real_probe = collection_module.probe_image

    def denied(path: object, **kwargs: object) -> object:
        try:
            raise PermissionError(13, "Permission denied")
        except PermissionError as exc:
            raise ImageError("cannot read file: Permission denied") from exc

    with Collection.open(tmp_path / "col", create=True, device="cpu") as c:
        monkeypatch.setattr(collection_module, "probe_image", denied)
        assert c.index_folder(folder, workers=0).skipped == 1
        monkeypatch.setattr(collection_module, "probe_image", real_probe)
        assert c.index_folder(folder, workers=0).added == 1


def test_a_sub_folder_that_cannot_be_listed_keeps_its_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(SAMPLE_PHOTOS / "sunflower" / "image_0001.jpg", folder / "a.jpg")
    shutil.copy(SAMPLE_PHOTOS / "watch" / "image_0002.jpg", folder / "sub" / "b.jpg")
    with Collection.open(tmp_path / "col", create=True, device="cpu") as c:
        assert c.index_folder(folder, workers=0).added == 2
        real_scandir = os.scandir

        def flaky(path: object = ".") -> object:
            if Path(str(path)).name == "sub":
                raise PermissionError(13, "Permission denied")
            return real_scandir(path)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "scandir", flaky)
        blocked = c.index_folder(folder, workers=0)
        assert (blocked.removed, blocked.unchanged) == (0, 1) and len(c) == 2
        monkeypatch.setattr(os, "scandir", real_scandir)
        back = c.index_folder(folder, workers=0)
        assert (back.added, back.removed, back.unchanged, back.embedded) == (0, 0, 2, 0)
        assert_consistent(c)


def test_an_image_changed_into_an_unreadable_one_counts_as_removed(tmp_path: Path) -> None:
    folder = _two_sunflowers(tmp_path / "photos")
    with Collection.open(tmp_path / "col", create=True, device="cpu") as c:
        c.index_folder(folder, workers=0)
        jpeg = (SAMPLE_PHOTOS / "ketch" / "image_0001.jpg").read_bytes()
        (folder / "2.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # its header still reads: only decoding fails
        report = c.index_folder(folder, workers=0)
        assert (report.updated, report.removed, report.skipped, len(c)) == (0, 1, 1, 1)
        assert_consistent(c)


def test_odd_image_formats_are_indexed_and_found(tmp_path: Path) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    with Image.open(SAMPLE_PHOTOS / "sunflower" / "image_0004.jpg") as im:
        rgb = im.convert("RGB")
    rgba = rgb.convert("RGBA")
    alpha = np.tile(np.linspace(0, 255, rgb.width, dtype=np.uint8), (rgb.height, 1))
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(folder / "alpha.png")
    rgb.convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.gif")
    grey16 = (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(grey16).save(folder / "sixteen.png")
    shutil.copy(SAMPLE_PHOTOS / "watch" / "image_0002.jpg", folder / "no_extension")
    with Image.open(folder / "sixteen.png") as check:
        assert check.mode.startswith("I"), "the test image must really be 16-bit"

    with Collection.open(tmp_path / "col", create=True, device="cpu") as c:
        report = c.index_folder(folder, workers=0)

        assert report.skipped_files == []
        assert report.added == report.embedded == 4
        formats = {Path(r.path).name: r.format for r in c.store.records()}
        assert formats == {"alpha.png": "PNG", "palette.gif": "GIF", "sixteen.png": "PNG", "no_extension": "JPEG"}
        for name in formats:
            top = c.search(folder / name, k=1)[0]
            assert top.path == str((folder / name).resolve()) and top.score >= 0.999


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


# ---------------------------------------------------------------------------------------------------- model identity


@pytest.fixture
def tiny_model_collection(tmp_path: Path) -> tuple[Path, Path]:
    """A collection built with a tiny random checkpoint (16-d): any other model must be refused."""
    from simsearch.models import save_checkpoint
    from simsearch.models.registry import random_embedder

    checkpoint = save_checkpoint(random_embedder("test_efficientnet", embed_dim=16), tmp_path / "tiny-model")
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("airplanes", "pizza", "watch"):
        shutil.copy(SAMPLE_PHOTOS / name / "image_0001.jpg", folder / f"{name}.jpg")
    path = tmp_path / "col"
    with Collection.open(path, model=str(checkpoint), create=True, device="cpu") as c:
        assert c.index_folder(folder, workers=0).added == 3
    return path, folder


def test_a_collection_opens_with_its_own_model_and_refuses_another(tiny_model_collection: tuple[Path, Path]) -> None:
    path, folder = tiny_model_collection
    with open_collection(path, device="cpu") as c:
        assert c.dim == 16
        top = c.search(folder / "pizza.jpg", k=1)[0]
        assert top.path == str((folder / "pizza.jpg").resolve()) and top.score >= 0.999

    with pytest.raises(ModelMismatchError, match="built with model"):
        open_collection(path, model="default", device="cpu")
    with pytest.raises(ModelMismatchError):
        Collection.open(path, model="default", create=True, device="cpu")
    with open_collection(path, device="cpu") as c:  # the refusal changed nothing
        assert len(c) == 3 and c.dim == 16


def test_a_collection_built_with_hflip_tta_keeps_it_for_queries_and_refuses_vectors_without_it(
    tiny_model_collection: tuple[Path, Path], tmp_path: Path
) -> None:
    _, folder = tiny_model_collection
    checkpoint = tmp_path / "tiny-model"
    path = tmp_path / "col-tta"
    import torch

    from simsearch.models import create_transform, load_embedder

    photo = folder / "pizza.jpg"
    key = str(photo.resolve())

    def stored(c: Collection) -> np.ndarray:
        return c.index.reconstruct(np.array([c.store.id_for_path(key)]))[0]

    with Collection.open(path, model=str(checkpoint), tta="hflip", create=True, device="cpu") as c:
        assert c.index_folder(folder, workers=0).added == 3
        built = stored(c)
    # A plain reference: the mean of the photo's and its mirror's raw vectors, then unit length.
    model = load_embedder(checkpoint, device="cpu")
    x = create_transform(model)(Image.open(photo)).unsqueeze(0)
    with torch.no_grad():
        mean = ((model(x, normalize=False) + model(x.flip(-1), normalize=False)) / 2)[0].numpy()
    np.testing.assert_allclose(built, mean / np.linalg.norm(mean), atol=1e-4)
    with open_collection(tmp_path / "col", device="cpu") as plain:  # the same photo without it: another vector
        assert not np.allclose(stored(plain), built, atol=1e-3)
    with open_collection(path, device="cpu") as c:
        assert c.embedder.tta == "hflip" and c.embedder.model_id.endswith("+hflip")
        top = c.search(photo, k=1)[0]
        assert top.path == key and top.score >= 0.999

    # Naming its model again keeps the collection's tta, with or without repeating it.
    for tta in (None, "hflip"):
        with open_collection(path, model=str(checkpoint), tta=tta, device="cpu") as c:
            assert c.embedder.tta == "hflip"
    with pytest.raises(ModelMismatchError, match="test-time augmentation 'hflip'"):
        open_collection(tmp_path / "col", tta="hflip", device="cpu")  # built without it
    with pytest.raises(ModelMismatchError, match="test-time augmentation 'hflip'"):
        open_collection(tmp_path / "col", model=str(checkpoint), tta="hflip", device="cpu")
    with pytest.raises(ModelError, match="unknown test-time augmentation 'vflip'"):
        open_collection(path, tta="vflip", device="cpu")


def test_the_same_weights_under_a_timm_tag_of_other_preprocessing_are_refused(tmp_path: Path) -> None:
    import safetensors.torch
    import timm
    import torch

    torch.manual_seed(0)
    weights = tmp_path / "w.safetensors"
    safetensors.torch.save_file(timm.create_model("mobilenetv4_conv_small", num_classes=0).state_dict(), str(weights))
    built, other = "mobilenetv4_conv_small.e3600_r256_in1k", "mobilenetv4_conv_small.e1200_r224_in1k"
    path = tmp_path / "col"
    Collection.open(path, model=built, weights=weights, create=True, device="cpu").close()
    # One id (file:mobilenetv4_conv_small) and one weights file, but 224 px instead of 256: other vectors.
    with pytest.raises(
        ModelMismatchError,
        match=r"differs now: input_size \(3, 256, 256\) not \(3, 224, 224\), .*crop_pct 0.95 not 0.875",
    ):
        open_collection(path, model=other, weights=weights, device="cpu")
    with open_collection(path, model=built, weights=weights, device="cpu") as c:
        assert c.embedder.data_config["input_size"] == (3, 256, 256)


def test_a_checkpoint_whose_config_changed_its_preprocessing_is_refused(
    tiny_model_collection: tuple[Path, Path], tmp_path: Path
) -> None:
    path, folder = tiny_model_collection
    config_path = tmp_path / "tiny-model" / "config.json"
    config = json.loads(config_path.read_text())
    config["data_config"]["crop_pct"] = 0.5  # same weights, same folder: only the crop changes
    config_path.write_text(json.dumps(config))
    with open_collection(path, device="cpu") as c, pytest.raises(ModelMismatchError, match=r"crop_pct 0.95 not 0.5"):
        c.search(folder / "pizza.jpg", k=1)
    with pytest.raises(ModelMismatchError, match=r"differs now: crop_pct 0.95 not 0.5"):
        open_collection(path, model=str(tmp_path / "tiny-model"), device="cpu")


def test_a_moved_checkpoint_with_the_same_weights_is_accepted_and_its_new_place_kept(
    tiny_model_collection: tuple[Path, Path], tmp_path: Path
) -> None:
    from simsearch.models import save_checkpoint
    from simsearch.models.registry import random_embedder

    path, folder = tiny_model_collection
    moved = tmp_path / "runs" / "renamed"
    moved.parent.mkdir()
    (tmp_path / "tiny-model").rename(moved)
    photo, key = folder / "pizza.jpg", str((folder / "pizza.jpg").resolve())
    with open_collection(path, device="cpu") as c, pytest.raises(ModelError, match="is gone: if it moved"):
        c.search(photo, k=1)
    with open_collection(path, model=str(moved), device="cpu") as c:
        top = c.search(photo, k=1)[0]
        assert top.path == key and top.score >= 0.999
        c.add([photo])  # any write keeps the new place in the manifest
    model = json.loads((path / "manifest.json").read_text())["model"]
    assert model["id"] == "checkpoint:renamed" and model["spec"]["path"] == str(moved.resolve())
    with open_collection(path, device="cpu") as c:
        assert c.search(photo, k=1)[0].path == key
    # Another checkpoint of the same architecture and size is still another model.
    other = save_checkpoint(random_embedder("test_efficientnet", embed_dim=16), tmp_path / "runs" / "other")
    with pytest.raises(ModelMismatchError, match="built with model checkpoint:renamed"):
        open_collection(path, model=str(other), device="cpu")


def test_a_manifest_data_config_compares_as_preprocessing_not_as_json(tiny_model_collection: tuple[Path, Path]) -> None:
    path, folder = tiny_model_collection
    manifest = json.loads((path / "manifest.json").read_text())
    data_config = manifest["model"]["data_config"]
    assert data_config.pop("crop_mode") == "center"  # timm's default when absent
    data_config["mean"] = [m + 1e-12 for m in data_config["mean"]]  # last-digit float noise
    data_config["input_size"] = [float(s) for s in data_config["input_size"]]
    (path / "manifest.json").write_text(json.dumps(manifest))
    with open_collection(path, device="cpu") as c:
        assert c.search(folder / "pizza.jpg", k=1)[0].score >= 0.999
    with open_collection(path, model=str(path.parent / "tiny-model"), device="cpu") as c:
        assert c.search(folder / "pizza.jpg", k=1)[0].score >= 0.999


def test_a_manifest_with_a_model_field_of_the_wrong_type_is_a_collection_error(
    tiny_model_collection: tuple[Path, Path],
) -> None:
    path, _ = tiny_model_collection
    original = (path / "manifest.json").read_text()
    damages = {
        "spec": ("x", "spec must be an object"),
        "dim": ("16", "dim must be a positive integer"),
        "data_config": (None, "data_config must be an object"),
        "id": (3, "id must be a string"),
    }
    specs = {
        "file": ({"kind": "file", "name": "test_resnet"}, "spec of kind file has no path"),
        "kindless": ({"name": "test_resnet"}, "spec names no kind"),
        "checkpoint": ({"kind": "checkpoint", "name": "x", "path": 7}, "spec of kind checkpoint has no path"),
    }
    for key, value, message in [(k, v, m) for k, (v, m) in damages.items()] + [
        ("spec", v, m) for v, m in specs.values()
    ]:
        manifest = json.loads(original)
        manifest["model"][key] = value
        (path / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(CollectionError, match=f"manifest.json is damaged: model {message}") as info:
            open_collection(path, device="cpu")
        assert "\n" not in str(info.value)


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
        hnsw.save(index_file)
        (path / "vectors.faiss.json").write_text(flat_sidecar)

    with open_collection(path) as c:
        assert len(c.index) == 48
        assert type(faiss.downcast_index(c.index._index.index)).__name__.startswith("IndexFlat")
        assert_consistent(c)
        after = c.search_vectors(queries, k=10)
        assert [[r.id for r in row] for row in after] == [[r.id for r in row] for row in before]
        assert np.allclose([[r.score for r in row] for row in after], [[r.score for r in row] for row in before])
        assert c.info()["index_factory"] == "Flat"
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
        patch.setattr(Collection, "_try_lock", lambda self: False)  # a writer is busy
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
    """An older version built PCA indexes; their collection must still open (and rebuild) rather than fail."""
    path = copy_collection(sample_collection, tmp_path / "col")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["index"].update(factory="PCA8,Flat", search_params="", auto=False)
    (path / "manifest.json").write_text(json.dumps(manifest))
    (path / "vectors.faiss.json").unlink()
    with open_collection(path) as c:
        assert c.info()["index_factory"] == "Flat" and c.info()["index_auto"] is True
        assert_consistent(c)


# ---------------------------------------------------------------------------------------------------- index types


def test_an_hnsw_index_gives_the_same_nearest_images_as_flat(
    col: Collection, sample_collection: Path, tmp_path: Path
) -> None:
    queries = col.embed(sorted(QUERIES.glob("*.jpg")))
    flat = [[r.id for r in row] for row in col.search_vectors(queries, k=5)]
    path = copy_collection(sample_collection, tmp_path / "col")
    with open_collection(path) as c:
        c.set_index_factory("HNSW32")
        assert c.index.factory == "HNSW32"
        assert [[r.id for r in row][:1] for row in c.search_vectors(queries, k=5)] == [row[:1] for row in flat]
    with open_collection(path) as c:  # the chosen type is remembered
        facts = c.info()
        assert (facts["index_factory"], facts["index_auto"]) == ("HNSW32", False)
        assert facts["search_params"].startswith("efSearch=")
        assert [row[0].id for row in c.search_vectors(queries, k=5)] == [row[0] for row in flat]


def test_an_ivf_index_says_it_trains_at_256_images_until_then(
    col: Collection, sample_collection: Path, tmp_path: Path
) -> None:
    query = col.store.vectors([5], col.dim)[0]
    path = copy_collection(sample_collection, tmp_path / "col")
    with open_collection(path) as c:
        c.set_index_factory("IVF256,Flat")
        with pytest.raises(CollectionError, match=r"IVF256,Flat index trains once the collection holds 256 images"):
            c.search_vectors(query)
    with open_collection(path) as c:
        with pytest.raises(CollectionError, match="256"):
            c.search_vectors(query)
        c.set_index_factory(None)  # back to the size rule: exact search works again
        assert c.info()["index_factory"] == "Flat"
        assert c.search_vectors(query, k=1)[0].id == 5
        assert_consistent(c)


def test_a_bad_index_factory_is_a_collection_error(sample_collection: Path, tmp_path: Path) -> None:
    path = copy_collection(sample_collection, tmp_path / "col")
    with open_collection(path) as c:
        with pytest.raises(CollectionError, match="bad index factory"):
            c.set_index_factory("NoSuchIndex42")
        assert c.index.factory == "Flat" and len(c.index) == 48


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


# ---------------------------------------------------------------------------------------------------- measured choice


@pytest.fixture
def small_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exact search up to 10 images and a tuning sample of any size, so 48 photos are 'beyond Flat'."""
    import indexes.factory
    import indexes.tuning

    monkeypatch.setattr(indexes.factory, "EXACT_MAX_VECTORS", 10)
    monkeypatch.setattr(indexes.tuning, "MIN_SAMPLE", 20)
    monkeypatch.setattr(simsearch.collection, "TUNE_QUERIES", 8)


def test_beyond_exact_search_the_index_is_chosen_by_measurement_and_recorded(
    small_thresholds: None, sample_collection: Path, tmp_path: Path
) -> None:
    path = copy_collection(sample_collection, tmp_path / "col")
    with open_collection(path) as c:
        c.set_index_factory(None)  # let the engine choose now: 48 images are beyond the patched exact limit
        tuning = c.manifest.index.tuning
        assert tuning is not None and tuning["measured"] and tuning["n"] == 48
        assert tuning["sample_size"] + tuning["queries"] == 48 and tuning["candidates_measured"]
        assert c.index.factory == tuning["factory"] and c.index.search_params == tuning["search_params"]
        assert tuning["recall_at_10"] >= 0.95
        assert tuning["full_size_recall_at_10"] >= 0.95 and tuning["full_size_checks"][-1]["reached"]
        query = c.store.vectors([7], c.dim)[0]
        assert c.search_vectors(query, k=1)[0].id == 7
        assert_consistent(c)
    saved = json.loads((path / "manifest.json").read_text())["index"]
    assert saved["auto"] and saved["factory"] == tuning["factory"] and saved["tuning"]["qps"] == tuning["qps"]
    with open_collection(path) as c:  # reopened: the same choice, not measured again
        assert c.manifest.index.tuning == tuning and c.index.factory == tuning["factory"]


def _choice(factory: str, params: str, alternatives: list[tuple[str, str]]) -> IndexChoice:
    """A tuner answer as optimistic as one extrapolated from a sample can be."""
    return IndexChoice(
        factory,
        params,
        1.0,
        1000.0,
        0,
        n=48,
        dim=1280,
        measured=True,
        alternatives=[{"factory": f, "search_params": p, "recall_at_10": 1.0, "qps": 1.0} for f, p in alternatives],
    )


def test_an_optimistic_choice_is_raised_until_the_whole_collection_reaches_the_target(
    small_thresholds: None, sample_collection: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(simsearch.collection, "choose_index", lambda *a, **k: _choice("IVF4,Flat", "nprobe=1", []))
    path = copy_collection(sample_collection, tmp_path / "col")
    with open_collection(path) as c:
        c.set_index_factory(None)
        tuning = c.manifest.index.tuning
        assert tuning is not None and tuning["chosen_on_sample"] == {
            "factory": "IVF4,Flat",
            "search_params": "nprobe=1",
        }
        (check,) = tuning["full_size_checks"]
        assert check["tried"][0] == {"search_params": "nprobe=1", "recall_at_10": check["tried"][0]["recall_at_10"]}
        assert check["tried"][0]["recall_at_10"] < 0.95 <= check["recall_at_10"] and check["reached"]
        assert c.index.factory == "IVF4,Flat" and c.index.search_params == check["search_params"] != "nprobe=1"
        assert tuning["search_params"] == c.index.search_params
        assert_consistent(c)


def test_a_choice_that_misses_the_target_at_full_size_falls_back_to_the_next_candidate(
    small_thresholds: None, sample_collection: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    choice = _choice("IVF1,PQ2x4", "nprobe=1", [("IVF4,Flat", "nprobe=2")])  # 1 byte a vector: hopeless
    monkeypatch.setattr(simsearch.collection, "choose_index", lambda *a, **k: choice)
    path = copy_collection(sample_collection, tmp_path / "col")
    with open_collection(path) as c:
        c.set_index_factory(None)
        tuning = c.manifest.index.tuning
        assert tuning is not None
        first, second = tuning["full_size_checks"]
        assert (first["factory"], first["reached"]) == ("IVF1,PQ2x4", False)
        assert (second["factory"], second["reached"]) == ("IVF4,Flat", True)
        assert c.index.factory == tuning["factory"] == "IVF4,Flat" and tuning["full_size_recall_at_10"] >= 0.95
        assert_consistent(c)
    with open_collection(path) as c:  # the final choice is what was saved
        assert c.index.factory == "IVF4,Flat" and c.index.search_params == tuning["search_params"]


def test_a_memory_budget_is_kept_and_one_nothing_fits_in_is_a_collection_error(
    small_thresholds: None, sample_collection: Path, tmp_path: Path
) -> None:
    path = copy_collection(sample_collection, tmp_path / "col")
    with open_collection(path) as c:
        c.set_max_memory(10**9)
        assert c.manifest.index.tuning is not None and c.manifest.index.tuning["max_memory"] == 10**9
        with pytest.raises(CollectionError, match="cannot choose an index: no index for 48 vectors .* fits in"):
            c.set_max_memory(1000)
    with open_collection(path) as c:
        assert c.manifest.index.max_memory == 10**9 and c.info()["index_max_memory"] == 10**9


def test_below_the_exact_limit_flat_stays_unmeasured(sample_collection: Path, tmp_path: Path) -> None:
    path = copy_collection(sample_collection, tmp_path / "col")
    with open_collection(path) as c:
        c.set_max_memory(10**9)
        assert c.index.factory == "Flat" and c.manifest.index.tuning is None
