"""DATA as a user writes it: a labelled folder (one sub-folder per class, or a `simsearch pack` LMDB folder) or a shared
set's split by name ("fashion-mnist:test", "omniglot:evaluation", "caltech101:train"), so that the CLI, the
benchmarks and a library caller open the same string the same way."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from simsearch.data.caltech import caltech101_split
from simsearch.data.folders import ArrayDataset, DataNotFoundError, DatasetError, ImageFolderDataset
from simsearch.data.packed import LMDBImageDataset, open_image_dataset
from simsearch.data.real import load_fashion_mnist, load_omniglot

logger = logging.getLogger(__name__)


def open_data(
    spec: str, *, root: str | os.PathLike[str] | None = None
) -> ImageFolderDataset | LMDBImageDataset | ArrayDataset:
    """A labelled image set from a folder path or a shared set's name (a bare name is the training split).

    A folder wins over a shared set of the same name, unless it holds no classes: run from inside the shared data
    folder, "omniglot" names both, and the shared set is what is meant.

    Raises:
        DatasetError: a file instead of a folder, a folder without classes, an unknown split of a shared set.
        DataNotFoundError: neither a folder nor a shared set's name, or the shared set's files are missing.
    """
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise DatasetError(f"{spec} is a file: expected a folder with one sub-folder per class")
        try:
            return open_image_dataset(path)
        except DatasetError:
            if not is_shared_split_name(spec):
                raise
            logger.warning("%s: no class folders here, so the shared set %s is read instead", spec, spec)
    if is_shared_split_name(spec):
        return open_shared_split(spec, root=root)
    names = ", ".join(f"{name}:{split}" for name, splits in SHARED_SPLITS.items() for split in splits)
    raise DataNotFoundError(f"no such folder {spec!r} (or a shared set: {names})")


def data_label(spec: str) -> str:
    """DATA as a record keeps it: a folder's absolute path, or a shared set's name."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def data_file_name(spec: str) -> str:
    """A file-name-safe short name of DATA, for default record names: the folder's name, or the set's name."""
    path = Path(spec).expanduser()
    return path.resolve().name if path.exists() else spec.replace(":", "-")


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
