"""Labelled image datasets for metric learning: class-per-folder trees, in-memory arrays, and class subsets of any
labelled set (the packed LMDB folder lives in `simsearch.data.packed`).

All of them, the packed folder too, expose `labels` ((N,) int64, 0..C-1) and `classes` (C names), which is all the
samplers need.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from simsearch.errors import DataNotFoundError, DatasetError, ImageError
from simsearch.files import scan_folder
from simsearch.images import load_image, probe_image

__all__ = [
    "IMAGE_EXTENSIONS",
    "ArrayDataset",
    "ClassSubset",
    "DataNotFoundError",
    "DatasetError",
    "ImageFolderDataset",
]

logger = logging.getLogger(__name__)

Transform = Callable[[Image.Image], Any]

# Extensions decide what counts as an image in a class folder: probing every file would make opening a large
# tree slow, and a training set with an odd extension is rare enough to rename (or pass extensions=None).
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)


# --------------------------------------------------------------------------------------------------------------------
# Class-per-folder tree
# --------------------------------------------------------------------------------------------------------------------


class ImageFolderDataset(Dataset):
    """`root/<class>/<images...>`: one sub-folder per class, images found recursively inside it.

    Classes are the visible sub-folders of `root`, sorted by name (Python `sorted`), labelled 0..C-1; hidden entries
    (".name") and files lying directly in `root` are ignored. Inside a class folder every file with an image
    extension counts, at any depth, in `scan_folder` order.

    Unreadable files: by default nothing is decoded at construction (that would read the whole set), so a corrupt
    file raises `ImageError` naming its path when it is loaded, i.e. mid-epoch. Pass `skip_unreadable=True` to
    read every file's header up front (about a millisecond per file) and drop the bad ones with a warning; files
    whose header is fine but whose pixels are damaged still raise at load time (training then reports the file and
    lets another image of its class stand in; `simsearch pack` decodes every file and leaves such files out).

    Attributes:
        samples: `(path, label)` per image.
        labels: `(N,) int64`.
        classes: class names; `classes[label]` is the folder name.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        transform: Transform | None = None,
        *,
        classes: Sequence[str] | None = None,
        extensions: Iterable[str] | None = IMAGE_EXTENSIONS,
        min_side: int | None = None,
        skip_unreadable: bool = False,
    ) -> None:
        """Scan the tree.

        Args:
            root: folder holding one sub-folder per class.
            transform: applied to the RGB PIL image; without one `__getitem__` returns the PIL image.
            classes: use exactly these class folders, labelled in the given order (e.g. a split's classes, or
                the training label order to evaluate with the same ids). Default: every sub-folder, sorted.
            extensions: lower-case suffixes that count as images; None takes every file.
            min_side: lets big JPEGs decode at a reduced scale that keeps both sides >= this (see `load_image`);
                set it to the training resolution to make large photos several times faster to load.
            skip_unreadable: probe every header now and drop unreadable files (see above).

        Raises:
            DataNotFoundError: `root` or a requested class folder is missing.
            DatasetError: no classes, or a class without any image.
        """
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataNotFoundError(f"image folder not found: {self.root}")
        self.transform = transform
        self.min_side = min_side
        suffixes = None if extensions is None else frozenset(e.lower() for e in extensions)

        if classes is None:
            names = sorted(e.name for e in os.scandir(self.root) if e.is_dir() and not e.name.startswith("."))
        else:
            names = list(classes)
            missing = [c for c in names if not (self.root / c).is_dir()]
            if missing:
                raise DataNotFoundError(f"class folder(s) not found under {self.root}: {', '.join(missing[:5])}")
            if len(set(names)) != len(names):
                raise DatasetError("duplicate class names in `classes`")
        if not names:
            raise DatasetError(f"no class folders under {self.root} (expected root/<class>/<images>)")
        # A class folder may be a symlink, but two names for one folder would put every image under two labels.
        seen: dict[Path, str] = {}
        for name in names:
            real = (self.root / name).resolve()
            if real in seen:
                raise DatasetError(f"class folders {seen[real]!r} and {name!r} are the same folder: keep one")
            seen[real] = name

        samples: list[tuple[str, int]] = []
        empty: list[str] = []
        dropped = 0
        for label, name in enumerate(names):
            count = 0
            for path in scan_folder(self.root / name):
                if suffixes is not None and path.suffix.lower() not in suffixes:
                    continue
                if skip_unreadable:
                    try:
                        probe_image(path)
                    except ImageError as exc:
                        logger.warning("skipping unreadable image %s: %s", path, exc)
                        dropped += 1
                        continue
                samples.append((str(path), label))
                count += 1
            if count == 0:
                empty.append(name)
        if empty:
            # An empty class would shift nothing but silently hold a label with no images; refuse instead of guessing.
            raise DatasetError(f"class folder(s) without images under {self.root}: {', '.join(empty[:5])}")
        self.classes: list[str] = names
        self.samples: list[tuple[str, int]] = samples
        self.labels: np.ndarray = np.fromiter((s[1] for s in samples), dtype=np.int64, count=len(samples))
        logger.info(
            "%s: %d images in %d classes%s",
            self.root,
            len(samples),
            len(names),
            f" ({dropped} unreadable skipped)" if dropped else "",
        )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        try:
            image = load_image(path, min_side=self.min_side)
        except ImageError as exc:
            raise ImageError(f"{path}: {exc}") from exc
        return (self.transform(image) if self.transform is not None else image), label


# --------------------------------------------------------------------------------------------------------------------
# In-memory array
# --------------------------------------------------------------------------------------------------------------------


class ArrayDataset(Dataset):
    """Images held as one uint8 array (Omniglot, Fashion-MNIST): `(N, H, W)` grey or `(N, H, W, C)` with C in 1, 3.

    `__getitem__` gives a PIL image of mode "L" (grey) or "RGB" (or "RGB" always with `to_rgb=True`, which
    ImageNet backbones and timm's transforms expect) passed through `transform`.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | Sequence[int],
        transform: Transform | None = None,
        *,
        classes: Sequence[str] | None = None,
        to_rgb: bool = False,
    ) -> None:
        """Wrap arrays (no copy when already uint8 and contiguous).

        Args:
            images: `(N, H, W)` or `(N, H, W, C)` uint8.
            labels: `(N,)` integers in 0..C-1.
            transform: applied to the PIL image.
            classes: C class names; default "0".."C-1".
            to_rgb: convert grey images to 3-channel RGB.
        """
        images = np.ascontiguousarray(images)
        labels = np.asarray(labels)
        if images.dtype != np.uint8:
            raise DatasetError(f"images must be uint8, got {images.dtype}")
        if images.ndim == 4 and images.shape[-1] == 1:
            images = images[..., 0]
        if not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)):
            raise DatasetError(f"images must be (N, H, W) or (N, H, W, 3), got shape {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise DatasetError(f"labels must be ({len(images)},), got shape {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise DatasetError(f"labels must be integers, got {labels.dtype}")
        if len(labels) and labels.min() < 0:
            raise DatasetError("labels must be >= 0")
        n_classes = int(labels.max()) + 1 if len(labels) else 0
        if classes is None:
            classes = [str(c) for c in range(n_classes)]
        elif len(classes) < n_classes:
            raise DatasetError(f"{len(classes)} class names for labels up to {n_classes - 1}")
        self.images = images
        self.labels: np.ndarray = labels.astype(np.int64, copy=False)
        self.classes: list[str] = list(classes)
        self.transform = transform
        self.to_rgb = to_rgb

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = Image.fromarray(self.images[index])
        if self.to_rgb and image.mode != "RGB":
            image = image.convert("RGB")
        return (self.transform(image) if self.transform is not None else image), int(self.labels[index])


# --------------------------------------------------------------------------------------------------------------------
# Class subsets
# --------------------------------------------------------------------------------------------------------------------


class ClassSubset(Dataset):
    """The items of some classes of a labelled dataset, relabelled 0..C'-1 in the order of `classes`.

    Serves class-disjoint train/validation splits of any dataset with `labels` and `classes` (an LMDB file cannot
    be re-scanned per class as a folder tree can).

    Attributes:
        indices: `(N',) int64` positions in the parent dataset.
        labels: `(N',) int64` new labels.
        classes: the chosen class names.
    """

    def __init__(self, dataset: Any, classes: Sequence[str]) -> None:
        """Select the items.

        Raises:
            DataNotFoundError: a class name the parent does not have.
            DatasetError: duplicate names, or a chosen class without any item.
        """
        names = list(classes)
        parent = {name: i for i, name in enumerate(dataset.classes)}
        missing = [c for c in names if c not in parent]
        if missing:
            raise DataNotFoundError(f"class(es) not in the dataset: {', '.join(missing[:5])}")
        if len(set(names)) != len(names):
            raise DatasetError("duplicate class names in `classes`")
        old_labels = np.asarray(dataset.labels, dtype=np.int64)
        # Parent label -> new label, -1 for the classes left out.
        mapping = np.full(max(len(dataset.classes), int(old_labels.max(initial=-1)) + 1), -1, dtype=np.int64)
        mapping[[parent[c] for c in names]] = np.arange(len(names))
        new_labels = mapping[old_labels]
        self.indices: np.ndarray = np.flatnonzero(new_labels >= 0)
        self.labels: np.ndarray = new_labels[self.indices]
        counts = np.bincount(self.labels, minlength=len(names))
        empty = [names[c] for c in np.flatnonzero(counts == 0)]
        if empty:
            raise DatasetError(f"class(es) without images: {', '.join(empty[:5])}")
        self.dataset = dataset
        self.classes: list[str] = names

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        item, _ = self.dataset[int(self.indices[index])]
        return item, int(self.labels[index])
