"""`simsearch index` on real folders: sidecar files counted not listed, damaged images always named, junk and
ignored folders, the collection's own folder, special files counted, one file on its own; and `remove`'s exit status
in every output mode."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from cli_helpers import ok, run
from conftest import SAMPLE_PHOTOS


def _photos_with_sidecars(folder: Path, sidecars: int = 1) -> Path:
    """Four photos, each with an .xmp sidecar (and a .MOV clip for the first), and `sidecars` more notes."""
    folder.mkdir(parents=True)
    for i in (1, 2, 3, 4):
        shutil.copy(SAMPLE_PHOTOS / "ketch" / f"image_000{i}.jpg", folder / f"IMG_{i}.jpg")
        (folder / f"IMG_{i}.xmp").write_text("<x:xmpmeta/>")
    (folder / "IMG_1.MOV").write_bytes(b"\0\0\0\x18ftypqt  ")
    for i in range(sidecars):
        (folder / f"notes{i}.txt").write_text("a note")
    return folder


def test_reindexing_photos_with_sidecars_prints_one_summary_line_and_no_noise(tmp_path: Path) -> None:
    photos = _photos_with_sidecars(tmp_path / "photos")
    (photos / "damaged.jpg").write_bytes((photos / "IMG_1.jpg").read_bytes()[:300])
    first = ok(run("index", photos, "-c", tmp_path / "col", "--workers", "0"))
    damaged = f"skipped {(photos / 'damaged.jpg').resolve()}: truncated image file"
    assert first.stderr.splitlines()[0] == damaged, "a damaged photo is always named"
    assert len(first.stderr.splitlines()) == 2 and ".xmp" not in first.stderr and ".MOV" not in first.stderr
    assert "7 skipped (6 not images)" in first.stderr.splitlines()[1]

    again = ok(run("index", photos, "-c", tmp_path / "col", "--workers", "0"))
    lines = again.stderr.splitlines()
    assert lines[0] == damaged and len(lines) == 2
    assert lines[1].startswith(f"4 images in {tmp_path / 'col'}: 0 added") and "4 unchanged" in lines[1]
    report = json.loads(ok(run("index", photos, "-c", tmp_path / "col", "--json")).stdout)
    assert (report["skipped"], report["not_images"]) == (7, 6) and len(report["skipped_files"]) == 7


def test_an_empty_sidecar_is_counted_and_an_empty_photo_is_named(tmp_path: Path) -> None:
    photos = _photos_with_sidecars(tmp_path / "photos", sidecars=0)
    (photos / "IMG_2.jpg.json").write_bytes(b"")  # an empty sidecar: counted with the other files that are no images
    (photos / "IMG_5.jpg").write_bytes(b"")  # an empty photo: a damaged image, named
    lines = ok(run("index", photos, "-c", tmp_path / "col", "--workers", "0")).stderr.splitlines()
    assert lines[0] == f"skipped {(photos / 'IMG_5.jpg').resolve()}: empty file" and len(lines) == 2
    assert "7 skipped (6 not images)" in lines[1]


def test_verbose_names_the_first_files_that_are_no_images_then_counts_the_rest(tmp_path: Path) -> None:
    photos = _photos_with_sidecars(tmp_path / "photos", sidecars=8)  # 4 .xmp + 1 .MOV + 8 notes = 13
    result = ok(run("index", photos, "-c", tmp_path / "col", "--workers", "0", "-v"))
    named = [line for line in result.stderr.splitlines() if line.startswith("not an image: ")]
    assert len(named) == 11 and named[-1] == "not an image: ... and 3 more (--json lists them all)"
    assert all(Path(line.removeprefix("not an image: ")).exists() for line in named[:10])


def test_exclude_and_ignore_files_leave_files_out(tmp_path: Path) -> None:
    photos = _photos_with_sidecars(tmp_path / "photos")
    (photos / "raw").mkdir()
    shutil.copy(SAMPLE_PHOTOS / "watch" / "image_0001.jpg", photos / "raw" / "watch.jpg")
    (photos / ".simsearchignore").write_text("*.xmp\n*.MOV\nraw/\n")
    report = json.loads(ok(run("index", photos, "-c", tmp_path / "col", "--exclude", "IMG_4.*", "--json")).stdout)
    assert (report["added"], report["excluded"], report["skipped"]) == (3, 7, 1)  # 4 .xmp, .MOV, raw/, IMG_4.jpg
    summary = ok(run("index", photos, "-c", tmp_path / "col", "--exclude", "IMG_4.*")).stderr
    assert "left out: 7 excluded" in summary

    bad = run("index", photos, "-c", tmp_path / "col", "--exclude", "!")
    assert bad.exit_code == 2 and "Invalid value for '--exclude'" in bad.stderr


def test_the_collection_inside_the_indexed_folder_is_never_scanned(tmp_path: Path) -> None:
    photos = _photos_with_sidecars(tmp_path / "photos")
    col = photos / "search"  # not hidden: only its place keeps it out
    ok(run("index", photos, "-c", col, "--workers", "0", "-q"))
    report = json.loads(ok(run("index", photos, "-c", col, "--json")).stdout)
    assert report["images"] == 4 and report["skipped_folders"] == []
    assert not any("search" in Path(s["path"]).parts for s in report["skipped_files"])
    assert "data.mdb" not in json.dumps(report)


def test_junk_folders_are_skipped_unless_all_folders(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    for folder in ("@eaDir/IMG_1.jpg", ".thumbnails", "node_modules", "."):
        (photos / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLE_PHOTOS / "watch" / "image_0001.jpg", photos / folder / "SYNOPHOTO_THUMB_M.jpg")
    default = ok(run("index", photos, "-c", tmp_path / "col", "--workers", "0"))
    assert "1 added" in default.stderr and "left out: 2 folders not entered" in default.stderr
    every = json.loads(ok(run("index", photos, "-c", tmp_path / "col", "--all-folders", "--json")).stdout)
    assert every["images"] == 4 and every["reused"] == 3  # the same photo: its vector is copied


def test_named_pipes_dangling_links_and_loops_are_counted(tmp_path: Path) -> None:
    photos = _photos_with_sidecars(tmp_path / "photos")
    try:
        os.mkfifo(photos / "pipe.jpg")
        (photos / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
        (photos / "a").symlink_to(photos / "b")
        (photos / "b").symlink_to(photos / "a")
    except (OSError, AttributeError) as exc:
        pytest.skip(f"no FIFOs or symlinks here: {exc}")
    result = ok(run("index", photos, "-c", tmp_path / "col", "--workers", "0", "-v"))
    summary = next(line for line in result.stderr.splitlines() if " images in " in line)
    assert sorted(summary.split("; left out: ")[1].split(", ")) == [
        "1 dangling link",
        "1 named pipe",
        "2 symlink loops",
    ]
    assert f"named pipe: {(photos / 'pipe.jpg').resolve()}" in result.stderr
    report = json.loads(ok(run("index", photos, "-c", tmp_path / "col", "--json")).stdout)
    assert sorted(s["kind"] for s in report["special_files"]) == [
        "dangling link",
        "named pipe",
        "symlink loop",
        "symlink loop",
    ]


def test_index_takes_a_single_file_and_names_a_pipe_given_by_name(tmp_path: Path) -> None:
    photo = tmp_path / "watch.jpg"
    shutil.copy(SAMPLE_PHOTOS / "watch" / "image_0003.jpg", photo)
    report = json.loads(ok(run("index", photo, "-c", tmp_path / "col", "--workers", "0", "--json")).stdout)
    assert (report["images"], report["added"]) == (1, 1)
    try:
        os.mkfifo(tmp_path / "x.jpg")
    except (OSError, AttributeError) as exc:
        pytest.skip(f"no FIFOs here: {exc}")
    piped = ok(run("index", tmp_path / "x.jpg", "-c", tmp_path / "col", "--workers", "0"))
    assert f"skipped {tmp_path / 'x.jpg'}: not a regular file (a named pipe)" in piped.stderr


def test_a_missing_gpu_is_refused_before_a_collection_is_made(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    photos = _photos_with_sidecars(tmp_path / "photos")
    result = run("index", photos, "-c", tmp_path / "col", "--device", "cuda")
    assert result.exit_code == 1 and "no CUDA GPU" in result.stderr
    assert not (tmp_path / "col").exists()


@pytest.mark.parametrize("as_json", [False, True])
def test_remove_of_nothing_exits_1_in_every_output_mode(tmp_path: Path, as_json: bool) -> None:
    photo = tmp_path / "watch.jpg"
    shutil.copy(SAMPLE_PHOTOS / "watch" / "image_0003.jpg", photo)
    ok(run("index", photo, "-c", tmp_path / "col", "--workers", "0", "-q"))
    result = run("remove", tmp_path / "other.jpg", "-c", tmp_path / "col", *(["--json"] if as_json else []))
    assert result.exit_code == 1 and result.stderr.strip().endswith(f"nothing matched: {tmp_path / 'other.jpg'}")
    if as_json:
        assert json.loads(result.stdout) == {"removed": [], "images": 1}
