"""What a folder scan reaches (`simsearch.scanning`): ignore files and --exclude patterns in gitignore syntax, junk
and hidden folders, a collection's own folder, and special files counted instead of opened; and what a collection's
indexing run reports of them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import SAMPLE_PHOTOS

from simsearch.errors import CollectionError
from simsearch.scanning import ScanScope, ScanTally, is_not_an_image, walk


def _tree(root: Path, *names: str) -> Path:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return root


def _scan(root: Path, scope: ScanScope | None = None) -> tuple[list[str], ScanTally]:
    tally = ScanTally()
    found = [p.relative_to(root.resolve()).as_posix() for p in walk(root, scope, tally)]
    return found, tally


def test_junk_and_hidden_folders_are_skipped_by_default_and_all_folders_takes_them_in(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        "a.jpg",
        "@eaDir/a.jpg/SYNOPHOTO_THUMB_M.jpg",
        "node_modules/x/logo.png",
        "__pycache__/m.pyc",
        ".git/objects/ab",
        ".hidden/b.jpg",
        ".dot.jpg",
        "sub/c.jpg",
    )
    found, tally = _scan(tmp_path)
    assert found == ["a.jpg", "sub/c.jpg"]
    assert sorted(Path(p).name for p in tally.skipped_folders) == ["@eaDir", "__pycache__", "node_modules"]

    everything, _ = _scan(tmp_path, ScanScope().all_folders())
    assert everything == [
        ".git/objects/ab",
        ".hidden/b.jpg",
        "@eaDir/a.jpg/SYNOPHOTO_THUMB_M.jpg",
        "__pycache__/m.pyc",
        "a.jpg",
        "node_modules/x/logo.png",
        "sub/c.jpg",
    ], "hidden files stay out"


def test_ignore_files_follow_gitignore_rules_and_the_nearest_one_wins(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        "a.jpg",
        "a.xmp",
        "keep.xmp",
        "raw/b.cr2",
        "raw/b.jpg",
        "trips/c.jpg",
        "trips/c.xmp",
        "trips/drafts/d.jpg",
        "trips/e.jpg",
        "top.jpg",
        "trips/top.jpg",
    )
    (tmp_path / ".simsearchignore").write_text("# sidecars\n*.xmp\n!keep.xmp\nraw/\n/top.jpg\n")
    (tmp_path / "trips" / ".simsearchignore").write_text("drafts/\n!c.xmp\ne.jpg\n")
    found, tally = _scan(tmp_path)
    assert found == ["a.jpg", "keep.xmp", "trips/c.jpg", "trips/c.xmp", "trips/top.jpg"]
    assert tally.excluded == 5  # a.xmp, raw/, top.jpg, trips/drafts/, trips/e.jpg


def test_exclude_patterns_are_relative_to_the_scanned_folder_and_win_over_ignore_files(tmp_path: Path) -> None:
    _tree(tmp_path, "a.jpg", "b.png", "x/a.jpg", "x/keep.png", "y/z/c.jpg")
    (tmp_path / "x" / ".simsearchignore").write_text("!a.jpg\n")
    found, tally = _scan(tmp_path, ScanScope(exclude=("*.jpg", "!/y/z/c.jpg", "x/keep.png")))
    assert found == ["b.png", "y/z/c.jpg"]
    assert tally.excluded == 3
    without, _ = _scan(tmp_path, ScanScope(ignore_file=None))
    assert without == ["a.jpg", "b.png", "x/a.jpg", "x/keep.png", "y/z/c.jpg"]


def test_a_bad_pattern_is_a_collection_error_naming_its_source(tmp_path: Path) -> None:
    _tree(tmp_path, "a.jpg")
    with pytest.raises(CollectionError, match="--exclude"):
        _scan(tmp_path, ScanScope(exclude=("*.xmp", "!")))


def test_special_files_are_counted_by_kind_never_opened(tmp_path: Path) -> None:
    _tree(tmp_path, "a.jpg", "sub/b.jpg")
    try:
        os.mkfifo(tmp_path / "pipe.jpg")
        (tmp_path / "dangling.jpg").symlink_to(tmp_path / "nowhere")
        (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
        (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
        (tmp_path / "zero.jpg").symlink_to("/dev/zero")
        (tmp_path / "linked").symlink_to(tmp_path / "sub", target_is_directory=True)
        (tmp_path / "link.jpg").symlink_to(tmp_path / "a.jpg")
    except (OSError, AttributeError) as exc:
        pytest.skip(f"no FIFOs or symlinks here: {exc}")
    found, tally = _scan(tmp_path)
    assert found == ["a.jpg", "link.jpg", "sub/b.jpg"]
    kinds = sorted((Path(p).name, kind) for p, kind in tally.special)
    assert kinds == [
        ("dangling.jpg", "dangling link"),
        ("linked", "symlinked folder"),
        ("loop1", "symlink loop"),
        ("loop2", "symlink loop"),
        ("pipe.jpg", "named pipe"),
        ("zero.jpg", "device"),
    ]


def test_a_folder_never_to_enter_is_left_out_wherever_it_is(tmp_path: Path) -> None:
    _tree(tmp_path, "a.jpg", "col/store.lmdb/data.mdb", "col/manifest.json")
    found, tally = _scan(tmp_path, ScanScope().never_entering(tmp_path / "col"))
    assert found == ["a.jpg"] and tally.skipped_folders == [] and tally.excluded == 0


@pytest.mark.parametrize(
    ("name", "reason", "expected"),
    [
        ("IMG_1.xmp", "not an image", True),
        ("clip.MOV", "not an image", True),
        ("README", "not an image", True),
        ("photo.JPG", "not an image", False),  # claims to be an image: a damaged photo
        ("photo.png", "not an image", False),
        ("scan.tif", "truncated image file", False),
        ("IMG_1.xmp", "empty file", True),  # an empty sidecar is no more an image than a full one
        ("photo.jpg", "empty file", False),  # an empty photo is a damaged one
    ],
)
def test_is_not_an_image_tells_sidecars_from_damaged_photos(name: str, reason: str, expected: bool) -> None:
    assert is_not_an_image(f"/photos/{name}", reason) is expected


def test_an_indexing_run_counts_what_its_scan_left_out_and_skips_its_own_folder(tmp_path: Path) -> None:
    from simsearch import Collection

    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(SAMPLE_PHOTOS / "watch" / "image_0001.jpg", photos / "watch.jpg")
    shutil.copy(SAMPLE_PHOTOS / "watch" / "image_0002.jpg", photos / "watch2.jpg")
    (photos / "watch.xmp").write_text("<x:xmpmeta/>")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    _tree(photos, "@eaDir/watch.jpg/thumb.jpg", "raw/a.cr2")
    (photos / ".simsearchignore").write_text("raw/\n")
    with Collection.open(photos / "col", create=True, device="cpu") as col:
        report = col.index_folder(photos, workers=0, scope=ScanScope(exclude=("watch2.jpg",)))
        again = col.index_folder(photos, workers=0)
    assert (report.added, report.skipped, report.not_images) == (1, 2, [str(photos.resolve() / "watch.xmp")])
    assert report.failed_files() == [(str(photos.resolve() / "broken.jpg"), "truncated image file")]
    assert report.excluded == 2 and [Path(p).name for p in report.skipped_folders] == ["@eaDir"]
    assert not any("col" in Path(p).parts for p, _ in report.skipped_files), "the collection's own files"
    assert report.as_dict()["not_images"] == 1
    assert (again.added, again.unchanged, again.excluded) == (1, 1, 1)  # watch2.jpg joins once not excluded
