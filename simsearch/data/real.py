"""The shared data folder ($SIMSEARCH_DATA or an argument) and the loaders of its small sets, with their class-disjoint
evaluation protocols: Omniglot (npz + the official one-shot runs) and Fashion-MNIST (idx .gz). Caltech-101, unpacked
once into a cache, has its own module (`simsearch.data.caltech`). The data are read where they lie; nothing is copied
into the repository.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
from PIL import Image

from simsearch.data.folders import ArrayDataset, DataNotFoundError, DatasetError, Transform

__all__ = [
    "DATA_ENV",
    "FASHION_MNIST_CLASSES",
    "OneShotRun",
    "data_root",
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
