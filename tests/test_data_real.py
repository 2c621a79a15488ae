"""Tests of the real-data loaders (Omniglot, Fashion-MNIST, Caltech-101, shared splits) and where they look for data."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA
from PIL import Image

from simsearch.data import (
    DataNotFoundError,
    DatasetError,
    caltech101_split,
    data_root,
    is_shared_split_name,
    load_fashion_mnist,
    load_omniglot,
    omniglot_one_shot_runs,
    open_shared_split,
)


def _require(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set SIMSEARCH_DATA to the shared data folder)")
    return path


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
