"""Tests of the packed (LMDB) datasets: writing, reading back, replacing, workers and bad files."""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import _png
from PIL import Image
from torch.utils.data import DataLoader

import simsearch.data.packed as packed_module
from simsearch.data import (
    ArrayDataset,
    DataNotFoundError,
    DatasetError,
    ImageFolderDataset,
    LMDBImageDataset,
    write_lmdb_dataset,
)

pytest_plugins = ["data_helpers"]  # the class_tree fixture


# --------------------------------------------------------------------------------------------------------------------
# LMDB
# --------------------------------------------------------------------------------------------------------------------


def test_lmdb_round_trip_of_an_array_dataset_is_lossless(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(25, 9, 7), dtype=np.uint8)
    labels = rng.integers(0, 4, size=25)
    source = ArrayDataset(images, labels, classes=["a", "b", "c", "d"])

    assert write_lmdb_dataset(source, tmp_path / "set.lmdb") == 25
    ds = LMDBImageDataset(tmp_path / "set.lmdb")

    assert len(ds) == 25 and ds.classes == ["a", "b", "c", "d"]
    assert np.array_equal(ds.labels, labels)
    for i in (0, 13, 24, -1):
        image, label = ds[i]
        assert image.mode == "RGB"  # decoding goes through load_image
        assert np.array_equal(np.asarray(image)[..., 0], images[i]) and label == labels[i]
    with pytest.raises(IndexError):
        ds.read_bytes(25)


def test_lmdb_keeps_the_original_file_bytes_of_an_image_folder(class_tree: Path, tmp_path: Path) -> None:
    folder = ImageFolderDataset(class_tree)
    write_lmdb_dataset(folder, tmp_path / "tree.lmdb")
    ds = LMDBImageDataset(tmp_path / "tree.lmdb", transform=lambda im: im.size)

    assert ds.classes == folder.classes and np.array_equal(ds.labels, folder.labels)
    for i, (path, label) in enumerate(folder.samples):
        assert ds.read_bytes(i) == (Path(path).read_bytes(), label)
    assert ds[0] == ((8, 6), 0)


def test_lmdb_writer_shrinks_big_images_on_request(tmp_path: Path) -> None:
    big = _png(tmp_path / "big.png", (10, 200, 30), size=(400, 100))
    write_lmdb_dataset([(big, 0), (big.read_bytes(), 1)], tmp_path / "small.lmdb", max_side=40)
    ds = LMDBImageDataset(tmp_path / "small.lmdb")
    for i in range(2):
        image, _ = ds[i]
        assert image.size == (40, 10)
        assert Image.open(io.BytesIO(ds.read_bytes(i)[0])).format == "JPEG"


def test_lmdb_writer_grows_the_map_when_the_data_outgrow_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packed_module, "_INITIAL_MAP_SIZE", 64 * 1024)
    noise = np.random.default_rng(1).integers(0, 256, size=(40, 64, 64), dtype=np.uint8)  # ~4 KB PNG each

    write_lmdb_dataset(ArrayDataset(noise, np.zeros(40, dtype=np.int64)), tmp_path / "grown.lmdb")

    ds = LMDBImageDataset(tmp_path / "grown.lmdb")
    assert len(ds) == 40 and np.array_equal(np.asarray(ds[39][0])[..., 0], noise[39])


def test_lmdb_writer_never_overwrites_by_accident_and_leaves_no_temporary_folder(tmp_path: Path) -> None:
    target = tmp_path / "set.lmdb"
    write_lmdb_dataset([(np.zeros((2, 2), np.uint8), 0)], target)
    with pytest.raises(FileExistsError):
        write_lmdb_dataset([(np.zeros((2, 2), np.uint8), 0)], target)
    write_lmdb_dataset([(np.zeros((2, 2), np.uint8), 0), (np.ones((2, 2), np.uint8), 1)], target, overwrite=True)
    assert len(LMDBImageDataset(target)) == 2

    with pytest.raises(DatasetError):
        write_lmdb_dataset([(np.zeros((2, 2), np.uint8), 0), (torch.zeros(2), 1)], tmp_path / "bad.lmdb")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set.lmdb"]


def _noise_jpeg(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=90)
    return path


@pytest.mark.parametrize("max_side", [None, 32])
def test_lmdb_writer_skips_a_truncated_image_that_only_its_header_made_look_fine(
    tmp_path: Path, max_side: int | None, caplog: pytest.LogCaptureFixture
) -> None:
    good = [_noise_jpeg(tmp_path / "tree" / "a" / f"{i}.jpg", seed=i) for i in range(3)]
    cut = _noise_jpeg(tmp_path / "tree" / "a" / "cut.jpg", seed=9)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 3])
    folder = ImageFolderDataset(tmp_path / "tree")
    assert len(folder) == 4  # the header probe lets the truncated file in

    with caplog.at_level(logging.WARNING):
        count = write_lmdb_dataset(folder, tmp_path / "set.lmdb", max_side=max_side)
    assert count == 3 and str(cut) in caplog.text
    ds = LMDBImageDataset(tmp_path / "set.lmdb")
    assert len(ds) == 3 and all(ds[i][0].size for i in range(3))  # every stored item decodes
    if max_side is None:
        assert [ds.read_bytes(i)[0] for i in range(3)] == [p.read_bytes() for p in good]


def test_lmdb_writer_keeps_the_bytes_of_images_already_within_max_side(tmp_path: Path) -> None:
    small = _png(tmp_path / "small.png", (10, 200, 30), size=(40, 30))
    write_lmdb_dataset([(small, 0)], tmp_path / "set.lmdb", max_side=100)
    assert LMDBImageDataset(tmp_path / "set.lmdb").read_bytes(0) == (small.read_bytes(), 0)


def test_lmdb_writer_replaces_only_an_lmdb_folder_and_makes_missing_parents(tmp_path: Path) -> None:
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.txt").write_text("years of work")
    with pytest.raises(FileExistsError, match="not an LMDB image folder"):
        write_lmdb_dataset([(np.zeros((2, 2), np.uint8), 0)], precious, overwrite=True)
    assert (precious / "chapter1.txt").read_text() == "years of work"

    nested = tmp_path / "new" / "deeper" / "set.lmdb"
    assert write_lmdb_dataset([(np.zeros((2, 2), np.uint8), 0)], nested) == 1
    (tmp_path / "empty").mkdir()
    assert write_lmdb_dataset([(np.zeros((2, 2), np.uint8), 0)], tmp_path / "empty", overwrite=True) == 1


def test_lmdb_writer_removes_the_temporary_folder_a_killed_writer_left(tmp_path: Path) -> None:
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".set.lmdb.{gone.stdout.strip()}.0123abcd.tmp"
    stale.mkdir()
    (stale / "data.mdb").write_bytes(b"half")
    alive = tmp_path / f".set.lmdb.{os.getppid()}.89abcdef.tmp"  # a live process's: maybe still writing
    alive.mkdir()
    write_lmdb_dataset([(np.zeros((2, 2), np.uint8), 0)], tmp_path / "set.lmdb")
    assert not stale.exists() and alive.exists()


def test_two_class_names_for_one_folder_are_refused(tmp_path: Path) -> None:
    _png(tmp_path / "tree" / "dog" / "a.png", (0, 0, 255))
    _png(tmp_path / "tree" / "cat" / "b.png", (255, 0, 0))
    try:
        (tmp_path / "tree" / "puppy").symlink_to(tmp_path / "tree" / "dog", target_is_directory=True)
    except OSError as exc:
        pytest.skip(f"symlinks not supported here: {exc}")
    with pytest.raises(DatasetError, match="'dog' and 'puppy' are the same folder"):
        ImageFolderDataset(tmp_path / "tree")


def test_lmdb_reader_refuses_missing_foreign_and_newer_files(tmp_path: Path) -> None:
    import lmdb

    with pytest.raises(DataNotFoundError):
        LMDBImageDataset(tmp_path / "none.lmdb")
    env = lmdb.open(str(tmp_path / "foreign.lmdb"))
    with env.begin(write=True) as txn:
        txn.put(b"k", b"v")
    env.close()
    with pytest.raises(DatasetError, match="not a simsearch image dataset"):
        LMDBImageDataset(tmp_path / "foreign.lmdb")

    write_lmdb_dataset([(np.zeros((2, 2), np.uint8), 0)], tmp_path / "new.lmdb")
    env = lmdb.open(str(tmp_path / "new.lmdb"))
    with env.begin(write=True) as txn:
        meta = json.loads(txn.get(b"__meta__"))
        txn.put(b"__meta__", json.dumps(meta | {"version": 99}).encode())
    env.close()
    with pytest.raises(DatasetError, match="newer"):
        LMDBImageDataset(tmp_path / "new.lmdb")


def _first_pixel(image: Image.Image) -> int:
    return int(np.asarray(image)[0, 0, 0])


def test_lmdb_datasets_on_one_file_coexist_pickle_and_load_in_forked_workers(tmp_path: Path) -> None:
    images = np.stack([np.full((4, 4), i, dtype=np.uint8) for i in range(12)])
    write_lmdb_dataset(ArrayDataset(images, np.arange(12) % 3), tmp_path / "w.lmdb")
    ds = LMDBImageDataset(tmp_path / "w.lmdb", transform=_first_pixel)
    other = LMDBImageDataset(tmp_path / "w.lmdb")  # same file, another transform: must not clash
    assert ds[0] == (0, 0) and other[1][1] == 1  # the environment is now open in this process

    clone = pickle.loads(pickle.dumps(ds))
    assert clone[5] == (5, 2)

    # Fork-started workers: the parent's open environment must not leak into (and break) the children.
    loader = DataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context="fork")
    for _ in range(2):
        assert torch.cat([batch[0] for batch in loader]).tolist() == list(range(12))
    assert ds[11] == (11, 2)  # the parent reopens after the fork
    ds.close()
    assert other[2][1] == 2


def test_rewriting_an_lmdb_dataset_in_place_is_seen_by_new_readers(tmp_path: Path) -> None:
    target = tmp_path / "set.lmdb"
    write_lmdb_dataset([(np.zeros((2, 2), np.uint8), 0)], target)
    assert len(LMDBImageDataset(target)) == 1
    write_lmdb_dataset([(np.zeros((2, 2), np.uint8), 0)] * 3, target, overwrite=True)
    assert len(LMDBImageDataset(target)) == 3
