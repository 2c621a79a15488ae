"""A photo whose path is longer than the image store can key (LMDB keys are at most 511 bytes) is skipped and named,
like any file that cannot be indexed; it once failed the whole run, every run, with an LMDB error."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from cli_helpers import ok, run
from conftest import SAMPLE_PHOTOS

from simsearch.collection.store import Store


def _long_folder(root: Path, min_bytes: int) -> Path:
    folder = root
    while len(os.fsencode(folder)) <= min_bytes:
        folder = folder / ("deep_folder_" + "x" * 40)
    folder.mkdir(parents=True)
    return folder


def test_the_store_tells_how_long_a_path_it_can_keep(tmp_path: Path) -> None:
    store = Store(tmp_path / "store.lmdb")
    try:
        assert store.max_path_bytes == 511
        assert store.id_for_path("/" + "x" * 600) is None and store.skipped("/" + "x" * 600) is None
    finally:
        store.close()


def test_a_photo_at_a_path_too_long_for_the_store_is_skipped_and_named_and_the_rest_indexed(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    deep = _long_folder(photos, 520)
    shutil.copy(SAMPLE_PHOTOS / "watch" / "image_0001.jpg", deep / "watch.jpg")
    (deep / "damaged.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a whole photo")  # a bad file there too: not remembered
    shutil.copy(SAMPLE_PHOTOS / "watch" / "image_0002.jpg", photos / "short.jpg")
    for attempt in range(2):
        report = json.loads(ok(run("index", photos, "-c", tmp_path / "col", "--workers", "0", "--json")).stdout)
        assert report["added"] == (1 if attempt == 0 else 0) and report["skipped"] == 2
        reasons = {Path(item["path"]).name: item["reason"] for item in report["skipped_files"]}
        assert set(reasons) == {"watch.jpg", "damaged.jpg"}
        assert all(reason.startswith("path too long for the image store") for reason in reasons.values())
    info = json.loads(ok(run("info", "-c", tmp_path / "col", "--json")).stdout)
    assert info["images"] == 1
