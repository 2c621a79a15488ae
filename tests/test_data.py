"""Tests for simsearch.data: folder/array/LMDB datasets, the P x K sampler, pair views, and the real-data loaders."""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA
from PIL import Image
from torch.utils.data import DataLoader

import simsearch.data.packed as packed_module
from simsearch.data import (
    ArrayDataset,
    ClassSubset,
    DataNotFoundError,
    DatasetError,
    ImageFolderDataset,
    LMDBImageDataset,
    PKSampler,
    SiamesePairs,
    caltech101_split,
    data_root,
    is_shared_split_name,
    load_fashion_mnist,
    load_omniglot,
    omniglot_one_shot_runs,
    open_image_dataset,
    open_shared_split,
    pairs_from_batch,
    triplets_from_batch,
    write_lmdb_dataset,
)
from simsearch.errors import ImageError


def _require(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set SIMSEARCH_DATA to the shared data folder)")
    return path


def _png(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


@pytest.fixture
def class_tree(tmp_path: Path) -> Path:
    """root/{cat,dog,emu}: cat has a nested folder, hidden files and a text file that must not count."""
    root = tmp_path / "labeled"
    _png(root / "dog" / "a.png", (0, 0, 255))
    _png(root / "dog" / "b.PNG", (0, 0, 250))
    _png(root / "cat" / "x.png", (255, 0, 0))
    _png(root / "cat" / "nested" / "y.jpg", (250, 0, 0))
    _png(root / "cat" / ".hidden.png", (1, 1, 1))
    (root / "cat" / "notes.txt").write_text("not an image")
    _png(root / "emu" / "e.png", (0, 255, 0))
    _png(root / ".trash" / "t.png", (9, 9, 9))
    _png(root / "stray.png", (9, 9, 9))  # a file directly in root belongs to no class
    return root


# --------------------------------------------------------------------------------------------------------------------
# ImageFolderDataset
# --------------------------------------------------------------------------------------------------------------------


def test_image_folder_dataset_labels_sorted_class_folders_and_finds_nested_images(class_tree: Path) -> None:
    ds = ImageFolderDataset(class_tree)

    assert ds.classes == ["cat", "dog", "emu"]
    names = [(Path(p).relative_to(class_tree).as_posix(), label) for p, label in ds.samples]
    assert names == [("cat/nested/y.jpg", 0), ("cat/x.png", 0), ("dog/a.png", 1), ("dog/b.PNG", 1), ("emu/e.png", 2)]
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == [0, 0, 1, 1, 2]
    image, label = ds[2]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.getpixel((0, 0)) == (0, 0, 255)
    assert label == 1


def test_image_folder_dataset_applies_the_transform_and_honours_an_explicit_class_order(class_tree: Path) -> None:
    ds = ImageFolderDataset(class_tree, transform=lambda im: np.asarray(im).shape, classes=["emu", "cat"])

    assert ds.classes == ["emu", "cat"]
    assert ds.labels.tolist() == [0, 1, 1]
    assert ds[0] == ((6, 8, 3), 0)


def test_image_folder_dataset_refuses_missing_and_empty_classes(class_tree: Path, tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="owl"):
        ImageFolderDataset(class_tree, classes=["cat", "owl"])
    (class_tree / "empty").mkdir()
    with pytest.raises(DatasetError, match="without images.*empty"):
        ImageFolderDataset(class_tree)
    with pytest.raises(DataNotFoundError):
        ImageFolderDataset(tmp_path / "nowhere")
    (tmp_path / "flat").mkdir()
    with pytest.raises(DatasetError, match="no class folders"):
        ImageFolderDataset(tmp_path / "flat")


def test_an_unreadable_image_raises_with_its_path_on_access_or_is_skipped_on_request(class_tree: Path) -> None:
    (class_tree / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")

    ds = ImageFolderDataset(class_tree)
    broken = [i for i, (p, _) in enumerate(ds.samples) if p.endswith("broken.png")]
    assert len(broken) == 1
    with pytest.raises(ImageError, match="broken.png"):
        ds[broken[0]]

    checked = ImageFolderDataset(class_tree, skip_unreadable=True)
    assert len(checked) == len(ds) - 1
    assert not any(p.endswith("broken.png") for p, _ in checked.samples)
    # What `train`, `eval` and `pretrain` open: the bad file is dropped there too, not met mid-epoch.
    opened = open_image_dataset(class_tree)
    assert len(opened) == len(ds) - 1 and not any(p.endswith("broken.png") for p, _ in opened.samples)


# --------------------------------------------------------------------------------------------------------------------
# ArrayDataset
# --------------------------------------------------------------------------------------------------------------------


def test_array_dataset_gives_grey_or_rgb_pil_images_with_their_labels() -> None:
    grey = np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5)
    ds = ArrayDataset(grey, [1, 0])
    image, label = ds[0]
    assert image.mode == "L" and image.size == (5, 4) and np.array_equal(np.asarray(image), grey[0]) and label == 1
    assert ds.classes == ["0", "1"]

    rgb_view = ArrayDataset(grey, [1, 0], to_rgb=True)[1][0]
    assert rgb_view.mode == "RGB" and np.array_equal(np.asarray(rgb_view)[..., 2], grey[1])

    colour = np.zeros((3, 4, 4, 3), dtype=np.uint8)
    colour[1, ..., 0] = 200
    assert ArrayDataset(colour, [0, 1, 2], classes=["a", "b", "c"])[1][0].getpixel((0, 0)) == (200, 0, 0)


def test_array_dataset_refuses_wrong_dtypes_and_shapes() -> None:
    with pytest.raises(DatasetError, match="uint8"):
        ArrayDataset(np.zeros((2, 4, 4), dtype=np.float32), [0, 1])
    with pytest.raises(DatasetError, match="labels"):
        ArrayDataset(np.zeros((2, 4, 4), dtype=np.uint8), [0, 1, 2])
    with pytest.raises(DatasetError, match="shape"):
        ArrayDataset(np.zeros((2, 4, 4, 2), dtype=np.uint8), [0, 1])


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


# --------------------------------------------------------------------------------------------------------------------
# Samplers and pair views
# --------------------------------------------------------------------------------------------------------------------


def _labels_with_sizes(sizes: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(sizes)), sizes)


def test_open_image_dataset_reads_a_class_tree_or_an_lmdb_folder_alike(class_tree: Path, tmp_path: Path) -> None:
    tree = open_image_dataset(class_tree)
    write_lmdb_dataset(tree, tmp_path / "set.lmdb")
    packed = open_image_dataset(tmp_path / "set.lmdb")
    assert isinstance(tree, ImageFolderDataset) and isinstance(packed, LMDBImageDataset)
    assert packed.classes == tree.classes and packed.labels.tolist() == tree.labels.tolist()
    assert np.array_equal(np.asarray(packed[0][0]), np.asarray(tree[0][0]))
    with pytest.raises(DataNotFoundError):
        open_image_dataset(tmp_path / "missing")


def test_class_subset_keeps_the_chosen_classes_relabelled_in_the_given_order() -> None:
    images = np.arange(7 * 2 * 2, dtype=np.uint8).reshape(7, 2, 2)
    parent = ArrayDataset(images, [0, 1, 2, 0, 1, 2, 2], classes=["a", "b", "c"])
    subset = ClassSubset(parent, ["c", "a"])
    assert subset.classes == ["c", "a"]
    assert subset.indices.tolist() == [0, 2, 3, 5, 6]
    assert subset.labels.tolist() == [1, 0, 1, 0, 0]
    image, label = subset[1]
    assert label == 0 and np.array_equal(np.asarray(image), images[2])
    with pytest.raises(DataNotFoundError, match="zebra"):
        ClassSubset(parent, ["a", "zebra"])
    with pytest.raises(DatasetError, match="duplicate"):
        ClassSubset(parent, ["a", "a"])
    with pytest.raises(DatasetError, match="without images"):
        ClassSubset(ArrayDataset(images[:2], [0, 0], classes=["a", "b"]), ["b"])


def test_pk_sampler_yields_exactly_p_classes_with_k_distinct_images_each() -> None:
    labels = _labels_with_sizes([7, 12, 5, 9, 20, 6])
    sampler = PKSampler(labels, p=3, k=4, seed=0)

    batches = list(sampler)

    assert len(batches) == len(sampler) == len(labels) // 12
    for batch in batches:
        assert len(batch) == 12
        counts = Counter(labels[batch].tolist())
        assert len(counts) == 3 and set(counts.values()) == {4}
        assert len(set(batch)) == 12  # every class here has >= k images: no repeats inside a batch


def test_pk_sampler_is_deterministic_for_a_seed_and_epoch_and_reshuffles_per_epoch() -> None:
    labels = _labels_with_sizes([10] * 8)
    a = PKSampler(labels, p=4, k=2, seed=3)
    b = PKSampler(labels, p=4, k=2, seed=3)
    assert list(a) == list(b)
    assert list(a) == list(a)  # same epoch, same batches

    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(PKSampler(labels, p=4, k=2, seed=4)) != first


def test_pk_sampler_fills_small_classes_with_repeats_and_takes_a_dataset_or_tensor() -> None:
    labels = _labels_with_sizes([2, 2, 2])
    dataset = ArrayDataset(np.zeros((6, 2, 2), np.uint8), labels)
    for source in (dataset, torch.as_tensor(labels)):
        sampler = PKSampler(source, p=2, k=3, num_batches=20, seed=1)
        for batch in sampler:
            counts = Counter(labels[batch].tolist())
            assert len(counts) == 2 and set(counts.values()) == {3}
            for cls in counts:  # both images of the class appear, one of them twice
                assert {i for i in batch if labels[i] == cls} == set(np.flatnonzero(labels == cls).tolist())


def test_pk_sampler_serves_every_image_before_repeating_one_within_a_class() -> None:
    labels = _labels_with_sizes([8, 8])
    batches = list(PKSampler(labels, p=2, k=4, num_batches=2, seed=5))  # 2 batches x 4 per class = each image once
    assert sorted(i for b in batches for i in b) == list(range(16))


def test_pk_sampler_refuses_fewer_classes_than_p() -> None:
    with pytest.raises(DatasetError, match="at least p=4"):
        PKSampler([0, 0, 1, 1, 2, 2], p=4, k=2)


def test_pairs_and_triplets_from_a_batch_equal_python_loops() -> None:
    labels = np.array([0, 1, 0, 2, 1, 0])
    i, j, y = pairs_from_batch(labels)
    expected = [(a, b, int(labels[a] == labels[b])) for a in range(6) for b in range(a + 1, 6)]
    assert list(zip(i.tolist(), j.tolist(), y.tolist(), strict=True)) == expected

    a, p, n = triplets_from_batch(torch.as_tensor(labels))
    expected_t = [
        (x, q, r)
        for x in range(6)
        for q in range(6)
        for r in range(6)
        if q != x and labels[q] == labels[x] and labels[r] != labels[x]
    ]
    assert list(zip(a.tolist(), p.tolist(), n.tolist(), strict=True)) == expected_t


def test_siamese_pairs_have_the_requested_share_of_same_class_pairs_and_correct_targets() -> None:
    labels = _labels_with_sizes([5, 1, 4, 6])  # class 1 has a single image: never in a positive pair
    images = np.arange(16, dtype=np.uint8).reshape(16, 1, 1).repeat(2, 1).repeat(2, 2)
    dataset = ArrayDataset(images, labels, transform=lambda im: int(np.asarray(im)[0, 0]))
    pairs = SiamesePairs(dataset, pairs_per_epoch=200, positive_fraction=0.3, seed=0)

    assert len(pairs) == 200
    assert int(pairs.pairs[:, 2].sum()) == 60
    for idx in range(200):
        (x1, x2), y = pairs[idx]
        assert x1 != x2  # never an image with itself
        assert y == float(labels[x1] == labels[x2])
    first = pairs.pairs.copy()
    pairs.set_epoch(1)
    assert not np.array_equal(first, pairs.pairs)
    assert np.array_equal(SiamesePairs(dataset, 200, 0.3, seed=0).pairs, first)


# --------------------------------------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------------------------------------


def test_a_missing_data_folder_names_the_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMSEARCH_DATA", str(tmp_path / "absent"))
    with pytest.raises(DataNotFoundError, match="SIMSEARCH_DATA"):
        data_root()
    with pytest.raises(FileNotFoundError, match="SIMSEARCH_DATA"):
        load_fashion_mnist("test")


def test_without_the_variable_or_a_root_there_is_no_data_folder_and_the_error_says_which_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An installed package never guesses a folder next to its own files: $SIMSEARCH_DATA or `root` only."""
    monkeypatch.delenv("SIMSEARCH_DATA")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shared" / "data").mkdir(parents=True)  # a folder where a checkout would keep it is not looked at
    with pytest.raises(DataNotFoundError) as info:
        data_root()
    message = str(info.value)
    assert "$SIMSEARCH_DATA" in message and "\n" not in message
    with pytest.raises(DataNotFoundError, match="SIMSEARCH_DATA"):
        open_shared_split("fashion-mnist:test")
    # An unpacked Caltech-101 left in the cache by an earlier run does not stand in for the data folder either.
    monkeypatch.setenv("SIMSEARCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "caltech101" / "accordion").mkdir(parents=True)
    (tmp_path / "cache" / "caltech101" / ".simsearch-unpacked.json").write_text("{}")
    with pytest.raises(DataNotFoundError, match="SIMSEARCH_DATA"):
        open_shared_split("caltech101:test")
    assert data_root(tmp_path / "shared" / "data") == tmp_path / "shared" / "data"
    monkeypatch.setenv("SIMSEARCH_DATA", str(tmp_path / "shared" / "data"))
    assert data_root() == tmp_path / "shared" / "data"


def test_omniglot_splits_have_964_and_659_characters_of_20_drawings() -> None:
    _require("omniglot", "images_background.npz")
    background = load_omniglot("background", root=DATA)
    evaluation = load_omniglot("evaluation", root=DATA)

    assert background.images.shape == (964 * 20, 105, 105) and len(background.classes) == 964
    assert evaluation.images.shape == (659 * 20, 105, 105) and len(evaluation.classes) == 659
    assert np.array_equal(np.bincount(background.labels), np.full(964, 20))
    assert set(np.unique(evaluation.images[:20]).tolist()) == {0, 255}
    assert evaluation.images[:20].mean() > 200  # mostly white background, dark ink
    assert background.classes[0] == "Arcadian/character01" and evaluation.classes[-1] == "ULOG/character26"


def test_omniglot_one_shot_runs_are_20_runs_of_20_way_tasks_drawn_from_the_evaluation_split() -> None:
    _require("omniglot", "all_runs.zip")
    runs = omniglot_one_shot_runs(root=DATA)

    assert len(runs) == 20
    evaluation = {image.tobytes() for image in load_omniglot("evaluation", root=DATA).images}
    for run in runs:
        assert len(run.train_images) == 20 and len(run.test_images) == 20
        assert sorted(run.answers) == list(range(20))  # each class has exactly one test image
        # Same polarity and encoding as load_omniglot: every image is one of the evaluation images.
        assert all(im.shape == (105, 105) and im.dtype == np.uint8 for im in run.test_images)
        assert all(im.tobytes() in evaluation for im in run.train_images + run.test_images)
    assert runs[0].answers[:3] == [7, 8, 1]  # run01: item01 -> class08, item02 -> class09, item03 -> class02


def test_fashion_mnist_has_60k_train_and_10k_test_images_in_ten_balanced_classes() -> None:
    _require("fashion-mnist", "train-images-idx3-ubyte.gz")
    train = load_fashion_mnist("train", root=DATA)
    test = load_fashion_mnist("test", root=DATA)

    assert train.images.shape == (60_000, 28, 28) and test.images.shape == (10_000, 28, 28)
    assert np.array_equal(np.bincount(train.labels), np.full(10, 6_000))
    assert np.array_equal(np.bincount(test.labels), np.full(10, 1_000))
    assert train.classes[9] == "Ankle boot"
    assert test.labels[:4].tolist() == [9, 2, 1, 1]  # the first test labels of the official file


def test_shared_splits_open_by_name_and_a_bare_name_is_the_training_split() -> None:
    _require("fashion-mnist", "t10k-images-idx3-ubyte.gz")
    _require("omniglot", "images_evaluation.npz")
    test = open_shared_split("fashion-mnist:test", root=DATA)
    assert len(test) == 10_000 and np.array_equal(test.labels, load_fashion_mnist("test", root=DATA).labels)
    assert len(open_shared_split("omniglot", root=DATA)) == 964 * 20  # background
    assert len(open_shared_split("omniglot:evaluation", root=DATA)) == 659 * 20
    assert is_shared_split_name("caltech101:test") and not is_shared_split_name("./caltech101")
    with pytest.raises(DatasetError, match="no split 'test'"):
        open_shared_split("omniglot:test", root=DATA)
    with pytest.raises(DatasetError, match="unknown shared data set"):
        open_shared_split("mnist:train", root=DATA)


def test_the_cache_is_outside_the_repository_and_can_be_moved(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from simsearch.data import default_cache_dir

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.delenv("SIMSEARCH_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "simsearch"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert repo not in default_cache_dir().parents
    monkeypatch.setenv("SIMSEARCH_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"


def test_caltech101_class_disjoint_split_has_5526_train_and_3151_test_images() -> None:
    """Unpacks the tar once into ~/.cache/simsearch/caltech101 (1-2 s and 133 MB the first time), then reuses it."""
    _require("caltech101", "101_ObjectCategories.tar")
    train = caltech101_split("train", root=DATA)
    test = caltech101_split("test", root=DATA)

    assert len(train) == 5_526 and len(train.classes) == 50
    assert len(test) == 3_151 and len(test.classes) == 51
    assert not set(train.classes) & set(test.classes)
    assert "BACKGROUND_Google" not in train.classes + test.classes
    assert sorted(train.classes + test.classes) == train.classes + test.classes
    assert test.labels.max() == 50 and test[0][0].mode == "RGB"


def test_caltech101_unpacking_keeps_only_object_class_photos_and_checks_the_counts(tmp_path: Path) -> None:
    """A tiny fake tar: the background class, a path escaping the cache and a non-jpg must not be written."""
    data = tmp_path / "data"
    (data / "caltech101").mkdir(parents=True)
    photo = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(photo, format="JPEG")
    with tarfile.open(data / "caltech101" / "101_ObjectCategories.tar", "w") as tar:
        for name in (
            "101_ObjectCategories/ant/image_0001.jpg",
            "101_ObjectCategories/BACKGROUND_Google/image_0001.jpg",
            "101_ObjectCategories/../../escape.jpg",
            "101_ObjectCategories/ant/readme.txt",
        ):
            info = tarfile.TarInfo(name)
            info.size = len(photo.getvalue())
            tar.addfile(info, io.BytesIO(photo.getvalue()))
    cache = tmp_path / "cache" / "caltech"

    with pytest.raises(DatasetError, match="expected 101 class folders"):
        caltech101_split("train", cache, root=data)

    written = sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file())
    assert written == [".simsearch-unpacked.json", "ant/image_0001.jpg"]
    assert not (tmp_path / "escape.jpg").exists() and not (tmp_path / "cache" / "escape.jpg").exists()
