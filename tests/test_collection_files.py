"""Files that are not plain photos: corrupt or non-image files, odd names and formats, pixel limits, I/O errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from collection_helpers import assert_consistent
from conftest import SAMPLE_PHOTOS
from PIL import Image

from simsearch import Collection

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
    import simsearch.collection.ingest as ingest_module
    from simsearch.errors import ImageError

    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(SAMPLE_PHOTOS / "sunflower" / "image_0001.jpg", folder / "a.jpg")
    real_probe = ingest_module.probe_image

    def denied(path: object, **kwargs: object) -> object:
        try:
            raise PermissionError(13, "Permission denied")
        except PermissionError as exc:
            raise ImageError("cannot read file: Permission denied") from exc

    with Collection.open(tmp_path / "col", create=True, device="cpu") as c:
        monkeypatch.setattr(ingest_module, "probe_image", denied)
        assert c.index_folder(folder, workers=0).skipped == 1
        monkeypatch.setattr(ingest_module, "probe_image", real_probe)
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
