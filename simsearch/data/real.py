"""Loaders for the three real datasets of the shared data folder, with their class-disjoint evaluation protocols.

Omniglot (npz + the official one-shot runs), Fashion-MNIST (idx .gz) and Caltech-101 (tar, unpacked once into a
cache). The data are read where they lie; nothing is copied into the repository.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import shutil
import struct
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
from PIL import Image

from simsearch.data.folders import ArrayDataset, DataNotFoundError, DatasetError, ImageFolderDataset, Transform

__all__ = [
    "CALTECH101_COUNTS",
    "DATA_ENV",
    "FASHION_MNIST_CLASSES",
    "OneShotRun",
    "caltech101_classes",
    "caltech101_split",
    "data_root",
    "default_cache_dir",
    "load_fashion_mnist",
    "load_omniglot",
    "omniglot_one_shot_runs",
]

logger = logging.getLogger(__name__)

DATA_ENV = "SIMSEARCH_DATA"

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FASHION_COUNTS = {"train": 60_000, "test": 10_000}
_FASHION_FILES = {"train": "train", "test": "t10k"}
_IDX_IMAGES_MAGIC = 2051
_IDX_LABELS_MAGIC = 2049

_OMNIGLOT_CHARS = {"background": 964, "evaluation": 659}
_OMNIGLOT_DRAWERS = 20
_ONE_SHOT_WAYS = 20

CALTECH101_BACKGROUND = "BACKGROUND_Google"
_CALTECH_PREFIX = "101_ObjectCategories"
_CALTECH_TRAIN_CLASSES = 50
# (classes, images) per split of the class-disjoint protocol (the data folder's README.md).
CALTECH101_COUNTS: dict[str, tuple[int, int]] = {"train": (50, 5_526), "test": (51, 3_151)}
_CACHE_MARKER = ".simsearch-unpacked.json"


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The shared data folder: `root` if given, else $SIMSEARCH_DATA; there is no other default, so an installed
    package never guesses a folder next to its own files.

    Raises:
        DataNotFoundError: neither is given, or the folder does not exist (the message names the variable to set).
    """
    if root is not None:
        path = Path(root).expanduser()
        source = "the given data root"
    elif os.environ.get(DATA_ENV):
        path = Path(os.environ[DATA_ENV]).expanduser()
        source = f"${DATA_ENV}"
    else:
        raise DataNotFoundError(
            f"no shared data folder: set ${DATA_ENV} to the folder that holds caltech101/, fashion-mnist/ and omniglot/"
        )
    if not path.is_dir():
        raise DataNotFoundError(f"data folder not found: {path} ({source})")
    return path


def _data_file(root: str | os.PathLike[str] | None, *parts: str) -> Path:
    path = data_root(root).joinpath(*parts)
    if not path.exists():
        raise DataNotFoundError(f"dataset file not found: {path} (is ${DATA_ENV} the shared data folder?)")
    return path


def _check_split(split: str, allowed: tuple[str, ...]) -> None:
    if split not in allowed:
        raise ValueError(f"split must be one of {', '.join(allowed)}; got {split!r}")


# --------------------------------------------------------------------------------------------------------------------
# Omniglot
# --------------------------------------------------------------------------------------------------------------------


def load_omniglot(
    split: Literal["background", "evaluation"],
    transform: Transform | None = None,
    *,
    to_rgb: bool = False,
    root: str | os.PathLike[str] | None = None,
) -> ArrayDataset:
    """One Omniglot split: `(chars * 20, 105, 105)` uint8, one label per character (0..chars-1 within the split).

    Pixels keep the source's look, black ink (0) on a white background (255), the same as the one-shot run PNGs
    (`omniglot_one_shot_runs`), so a model trained here sees test images of the same polarity. Images are ordered
    character by character (the 20 drawings of label 0 first). Class names are "<alphabet>/characterNN" when
    `alphabets.tsv` is present.

    Args:
        split: "background" (964 characters, 30 alphabets: train) or "evaluation" (659 characters, 20 alphabets).
        transform: applied to the PIL image (mode "L", or "RGB" with `to_rgb`).
        to_rgb: give 3-channel images (what ImageNet backbones expect).
        root: data folder (default: see `data_root`).
    """
    _check_split(split, ("background", "evaluation"))
    path = _data_file(root, "omniglot", f"images_{split}.npz")
    with np.load(path) as npz:
        raw, raw_labels = npz["images"], npz["labels"]
    chars = _OMNIGLOT_CHARS[split]
    if raw.shape != (chars, _OMNIGLOT_DRAWERS, 105, 105) or raw.dtype != np.bool_:
        raise DatasetError(
            f"{path}: expected bool images of shape ({chars}, 20, 105, 105), got {raw.dtype} {raw.shape}"
        )
    if raw_labels.shape != (chars, _OMNIGLOT_DRAWERS) or not (raw_labels == np.arange(chars)[:, None]).all():
        raise DatasetError(f"{path}: labels are not the character index 0..{chars - 1} per row")
    # True = white background in the source; keep it white.
    # astype, not a view: the file stores True as 0xFF bytes, so the raw bytes are not 0/1.
    images = raw.reshape(-1, 105, 105).astype(np.uint8) * np.uint8(255)
    labels = raw_labels.reshape(-1).astype(np.int64)
    return ArrayDataset(images, labels, transform, classes=_omniglot_class_names(split, root), to_rgb=to_rgb)


def _omniglot_class_names(split: str, root: str | os.PathLike[str] | None) -> list[str] | None:
    """Names from alphabets.tsv (global 1-based character ids per alphabet); None when the table is absent."""
    table = data_root(root) / "omniglot" / "alphabets.tsv"
    if not table.is_file():
        return None
    ranges: list[tuple[int, int, str]] = []
    for line in table.read_text().splitlines()[1:]:
        if not line.strip():
            continue
        first_id, last_id, row_split, alphabet = line.split("\t")
        if row_split == split:
            ranges.append((int(first_id), int(last_id), alphabet))
    if not ranges:
        return None
    ranges.sort()
    offset = ranges[0][0]  # the split's first global id is its label 0
    names: list[str] = []
    for first, last, alphabet in ranges:
        names.extend(f"{alphabet}/character{i - first + 1:02d}" for i in range(first, last + 1))
    if len(names) != _OMNIGLOT_CHARS[split] or offset + len(names) - 1 != ranges[-1][1]:
        logger.warning("%s does not cover the %s split exactly; using numeric class names", table, split)
        return None
    return names


@dataclass(frozen=True)
class OneShotRun:
    """One official 20-way one-shot run (Lake et al. 2015): 20 training images, one per class, and 20 test images.

    Images are `(105, 105)` uint8, black ink (0) on white (255) as in `load_omniglot`. `answers[i]` is the index
    into `train_images` of the class that `test_images[i]` belongs to.
    """

    name: str
    train_images: list[np.ndarray] = field(repr=False)
    test_images: list[np.ndarray] = field(repr=False)
    answers: list[int]


def omniglot_one_shot_runs(root: str | os.PathLike[str] | None = None) -> list[OneShotRun]:
    """The 20 runs of `omniglot/all_runs.zip`, read straight from the zip (nothing unpacked).

    Each run folder holds `training/classNN.png`, `test/itemNN.png` and `class_labels.txt`, whose lines read
    "runXX/test/itemNN.png runXX/training/classMM.png". Test and training images are taken in file-name order.
    """
    path = _data_file(root, "omniglot", "all_runs.zip")
    runs: list[OneShotRun] = []
    with zipfile.ZipFile(path) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        run_dirs = sorted({PurePosixPath(n).parts[0] for n in names if n.endswith("class_labels.txt")})
        for run in run_dirs:
            train_names = sorted(n for n in names if n.startswith(f"{run}/training/") and n.endswith(".png"))
            test_names = sorted(n for n in names if n.startswith(f"{run}/test/") and n.endswith(".png"))
            if len(train_names) != _ONE_SHOT_WAYS or len(test_names) != _ONE_SHOT_WAYS:
                raise DatasetError(f"{path}: {run} has {len(train_names)} training and {len(test_names)} test images")
            mapping: dict[str, str] = {}
            for line in zf.read(f"{run}/class_labels.txt").decode().splitlines():
                if line.strip():
                    test_name, train_name = line.split()
                    mapping[test_name] = train_name
            train_index = {n: i for i, n in enumerate(train_names)}
            try:
                answers = [train_index[mapping[n]] for n in test_names]
            except KeyError as exc:
                raise DatasetError(f"{path}: {run}/class_labels.txt does not map {exc.args[0]}") from exc
            runs.append(
                OneShotRun(
                    name=run,
                    train_images=[_png_to_uint8(zf.read(n)) for n in train_names],
                    test_images=[_png_to_uint8(zf.read(n)) for n in test_names],
                    answers=answers,
                )
            )
    if len(runs) != 20:
        raise DatasetError(f"{path}: expected 20 runs, found {len(runs)}")
    return runs


def _png_to_uint8(data: bytes) -> np.ndarray:
    """A bilevel or grey PNG as `(H, W)` uint8 with white = 255 (mode "1" stores True for white)."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("L"), dtype=np.uint8).copy()


# --------------------------------------------------------------------------------------------------------------------
# Fashion-MNIST
# --------------------------------------------------------------------------------------------------------------------


def load_fashion_mnist(
    split: Literal["train", "test"],
    transform: Transform | None = None,
    *,
    to_rgb: bool = False,
    root: str | os.PathLike[str] | None = None,
) -> ArrayDataset:
    """Fashion-MNIST: 60,000 train or 10,000 test images, `(N, 28, 28)` uint8 (ink bright on black), labels 0..9.

    The same ten classes in both splits: a closed-set task, unlike the class-disjoint Omniglot and Caltech splits.
    """
    _check_split(split, ("train", "test"))
    prefix = _FASHION_FILES[split]
    images = _read_idx(_data_file(root, "fashion-mnist", f"{prefix}-images-idx3-ubyte.gz"), _IDX_IMAGES_MAGIC)
    labels = _read_idx(_data_file(root, "fashion-mnist", f"{prefix}-labels-idx1-ubyte.gz"), _IDX_LABELS_MAGIC)
    expected = _FASHION_COUNTS[split]
    if images.shape != (expected, 28, 28) or labels.shape != (expected,):
        raise DatasetError(f"Fashion-MNIST {split}: expected {expected} images of 28x28, got {images.shape}")
    if labels.max() > 9:
        raise DatasetError(f"Fashion-MNIST {split}: label {labels.max()} out of 0..9")
    return ArrayDataset(images, labels.astype(np.int64), transform, classes=FASHION_MNIST_CLASSES, to_rgb=to_rgb)


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """An idx file of unsigned bytes: big-endian int32 magic, then one big-endian int32 per dimension, then data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise DatasetError(f"{path}: too short for an idx header")
    (found,) = struct.unpack_from(">i", raw, 0)
    if found != magic:
        raise DatasetError(f"{path}: idx magic number {found}, expected {magic}")
    ndim = magic & 0xFF  # the low byte counts dimensions; 0x08 in the third byte means unsigned bytes
    dims = struct.unpack_from(f">{ndim}i", raw, 4)
    offset = 4 + 4 * ndim
    data = np.frombuffer(raw, dtype=np.uint8, offset=offset)
    if data.size != int(np.prod(dims)):
        raise DatasetError(f"{path}: header says {dims}, file holds {data.size} values")
    return data.reshape(dims)


# --------------------------------------------------------------------------------------------------------------------
# Caltech-101
# --------------------------------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """Where unpacked data go: $SIMSEARCH_CACHE, else $XDG_CACHE_HOME/simsearch (~/.cache/simsearch).

    Never inside the repository (the data README asks for that): a clone stays small, and every clone on a machine
    shares one unpacked copy.
    """
    if os.environ.get("SIMSEARCH_CACHE"):
        return Path(os.environ["SIMSEARCH_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "simsearch"


def caltech101_classes(
    cache_dir: str | os.PathLike[str] | None = None, root: str | os.PathLike[str] | None = None
) -> list[str]:
    """The 101 object classes (BACKGROUND_Google dropped) in Python `sorted` order, unpacking the tar if needed."""
    folder = _unpacked_caltech(cache_dir, root)
    names = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    if len(names) != 101:
        raise DatasetError(f"{folder}: expected 101 class folders, found {len(names)} (delete it to unpack again)")
    return names


def caltech101_split(
    split: Literal["train", "test"],
    cache_dir: str | os.PathLike[str] | None = None,
    transform: Transform | None = None,
    *,
    min_side: int | None = None,
    root: str | os.PathLike[str] | None = None,
) -> ImageFolderDataset:
    """The class-disjoint Caltech-101 protocol: the first 50 sorted classes train (5,526), the last 51 test (3,151).

    The tar is unpacked once (the 101 object classes, BACKGROUND_Google left out) into `cache_dir`, by default
    `default_cache_dir() / "caltech101"`, and reused afterwards. The test split is meant as query and gallery at
    once, leave-one-out. Labels are 0..49 (train) or 0..50 (test), in the split's own class order.

    Args:
        split: "train" or "test".
        cache_dir: folder for the unpacked photos (never inside the package).
        transform: applied to the RGB PIL image.
        min_side: fast reduced-scale JPEG decoding, see `ImageFolderDataset`.
        root: data folder (default: see `data_root`).

    Raises:
        DatasetError: the unpacked folder does not give the protocol's counts.
    """
    _check_split(split, ("train", "test"))
    folder = _unpacked_caltech(cache_dir, root)
    classes = caltech101_classes(cache_dir, root)
    chosen = classes[:_CALTECH_TRAIN_CLASSES] if split == "train" else classes[_CALTECH_TRAIN_CLASSES:]
    dataset = ImageFolderDataset(folder, transform, classes=chosen, min_side=min_side)
    expected_classes, expected_images = CALTECH101_COUNTS[split]
    if len(dataset.classes) != expected_classes or len(dataset) != expected_images:
        raise DatasetError(
            f"Caltech-101 {split}: {len(dataset)} images in {len(dataset.classes)} classes, expected "
            f"{expected_images} in {expected_classes} (delete {folder} to unpack again)"
        )
    return dataset


def _unpacked_caltech(cache_dir: str | os.PathLike[str] | None, root: str | os.PathLike[str] | None) -> Path:
    """The unpacked class folders, extracting them from the tar on first use.

    Extraction goes to a temporary sibling folder renamed at the end, so an interrupted run leaves nothing that a
    later run would mistake for a complete copy. Only regular `.jpg` members of the 101 object classes are
    written, by name checks of our own, so a hostile tar cannot write outside the cache.

    The default cache only stands in for the tar of a data folder that is named ($SIMSEARCH_DATA or `root`): an
    unpacked copy left by an earlier run is not a way to find the data set without one. An explicit `cache_dir` is
    used as it is (it may be a copy unpacked by hand).
    """
    if cache_dir is None:
        data_root(root)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir() / "caltech101"
    if (folder / _CACHE_MARKER).is_file():
        return folder
    if folder.is_dir() and any(folder.iterdir()):
        # Someone unpacked it by hand (or an older layout): use it; the split counts are checked by the caller.
        logger.info("using the existing unpacked Caltech-101 at %s", folder)
        return folder
    tar_path = _data_file(root, "caltech101", f"{_CALTECH_PREFIX}.tar")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    logger.info("unpacking %s into %s (once)", tar_path, folder)
    counts: dict[str, int] = {}
    try:
        with tarfile.open(tar_path) as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if (
                    not member.isfile()
                    or len(parts) != 3
                    or parts[0] != _CALTECH_PREFIX
                    or parts[1] == CALTECH101_BACKGROUND
                    or parts[1].startswith(".")
                    or parts[2].startswith(".")
                    or not parts[2].lower().endswith(".jpg")
                ):
                    continue
                source = tar.extractfile(member)
                if source is None:
                    continue
                (tmp / parts[1]).mkdir(parents=True, exist_ok=True)
                with source, open(tmp / parts[1] / parts[2], "wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
                counts[parts[1]] = counts.get(parts[1], 0) + 1
        (tmp / _CACHE_MARKER).write_text(json.dumps({"source": str(tar_path), "images_per_class": counts}, indent=1))
        if folder.is_dir():
            folder.rmdir()  # empty (checked above)
        os.replace(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if (folder / _CACHE_MARKER).is_file():  # another process finished first
            return folder
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("unpacked %d images of %d classes", sum(counts.values()), len(counts))
    return folder


# --------------------------------------------------------------------------------------------------------------------
# The shared sets by name
# --------------------------------------------------------------------------------------------------------------------

#: Each shared set's splits, training split first: what `open_shared_split` and the CLI's DATA names take.
SHARED_SPLITS: dict[str, tuple[str, ...]] = {
    "fashion-mnist": ("train", "test"),
    "omniglot": ("background", "evaluation"),
    "caltech101": ("train", "test"),
}


def is_shared_split_name(name: str) -> bool:
    """Whether `name` reads as "<set>" or "<set>:<split>" of a shared set (the split is checked on opening)."""
    return name.partition(":")[0] in SHARED_SPLITS


def open_shared_split(name: str, *, root: str | os.PathLike[str] | None = None) -> ArrayDataset | ImageFolderDataset:
    """A split of a shared set by name: "fashion-mnist:test", "omniglot:evaluation", "caltech101:train"...; a bare set
    name is its training split. Items are `(PIL image, label)` with the set's class names, no transform set.

    Raises:
        DatasetError: an unknown set or split.
        DataNotFoundError: the set's files are not in the data folder.
    """
    set_name, _, split = name.partition(":")
    if set_name not in SHARED_SPLITS:
        raise DatasetError(f"unknown shared data set {set_name!r}: one of {', '.join(SHARED_SPLITS)}")
    split = split or SHARED_SPLITS[set_name][0]
    if split not in SHARED_SPLITS[set_name]:
        raise DatasetError(f"{set_name} has no split {split!r}: one of {', '.join(SHARED_SPLITS[set_name])}")
    if set_name == "fashion-mnist":
        return load_fashion_mnist(split, root=root)  # type: ignore[arg-type]
    if set_name == "omniglot":
        return load_omniglot(split, root=root)  # type: ignore[arg-type]
    return caltech101_split(split, root=root)  # type: ignore[arg-type]
