"""Caltech-101 from the shared data folder: its tar unpacked once into a cache, and the class-disjoint protocol."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tarfile
from pathlib import Path, PurePosixPath
from typing import Literal

from simsearch.data.folders import DatasetError, ImageFolderDataset, Transform
from simsearch.data.real import _check_split, _data_file, data_root
from simsearch.fsio import atomic_folder, remove_stale_temps

__all__ = ["CALTECH101_BACKGROUND", "CALTECH101_COUNTS", "caltech101_classes", "caltech101_split", "default_cache_dir"]

logger = logging.getLogger(__name__)

CALTECH101_BACKGROUND = "BACKGROUND_Google"
_CALTECH_PREFIX = "101_ObjectCategories"
_CALTECH_TRAIN_CLASSES = 50
# (classes, images) per split of the class-disjoint protocol (the data folder's README.md).
CALTECH101_COUNTS: dict[str, tuple[int, int]] = {"train": (50, 5_526), "test": (51, 3_151)}
_CACHE_MARKER = ".simsearch-unpacked.json"


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
    remove_stale_temps(folder.parent, folder.name)  # left by killed unpackers
    logger.info("unpacking %s into %s (once)", tar_path, folder)
    counts: dict[str, int] = {}
    try:
        with atomic_folder(folder) as tmp:
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
            marker = {"source": str(tar_path), "images_per_class": counts}
            (tmp / _CACHE_MARKER).write_text(json.dumps(marker, indent=1))
            if folder.is_dir():
                folder.rmdir()  # empty (checked above)
    except OSError:
        if (folder / _CACHE_MARKER).is_file():  # another process finished first
            return folder
        raise
    logger.info("unpacked %d images of %d classes", sum(counts.values()), len(counts))
    return folder
