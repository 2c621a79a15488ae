"""Tests for simsearch.data: folder and array datasets, opening either by path, and class subsets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simsearch.data import (
    ArrayDataset,
    ClassSubset,
    DataNotFoundError,
    DatasetError,
    ImageFolderDataset,
    LMDBImageDataset,
    open_image_dataset,
    write_lmdb_dataset,
)
from simsearch.errors import ImageError

pytest_plugins = ["data_helpers"]  # the class_tree fixture


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
