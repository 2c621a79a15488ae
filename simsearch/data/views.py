"""Two-view (multi-view) data: the same items seen in two or more ways (a product photographed and drawn, a word in
two fonts), where a query in one view must find its item in another.

Two layouts on disk, both opened by `open_views`:

    DATA/<item>/<view>.<ext>     class folders, one image per view named by its view (``a/serif.png``, ``a/sans.png``)
    DATA/<view>/<item>.<ext>     view folders holding the same file names (``serif/a.png``, ``sans/a.png``)

The layout is told apart by the views the user names: when each is a folder of DATA, DATA holds view folders (every
visible sub-folder is a view); otherwise the views are the file names inside class folders. Either way the classes
are the items, so training sees an ordinary labelled set (P x K batches of an item's views); what is added is the
view of each image, which validation and `simsearch eval` use to search one view with the other. A packed LMDB
folder keeps the views (`pack_views`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from simsearch.data.folders import IMAGE_EXTENSIONS, ClassSubset, DataNotFoundError, DatasetError, ImageFolderDataset
from simsearch.data.packed import is_lmdb_dataset, open_image_dataset, write_lmdb_dataset
from simsearch.errors import ImageError
from simsearch.files import scan_folder
from simsearch.images import probe_image

__all__ = ["ViewFolderDataset", "ViewedDataset", "class_subset", "open_views", "pack_views"]

logger = logging.getLogger(__name__)


class ViewFolderDataset(ImageFolderDataset):
    """`root/<view>/<item files>`: one folder per view, an item's images named alike in each (``serif/a.png``,
    ``sans/a.png``). An item is a file's path inside its view folder without the extension; items are the classes,
    sorted by name and labelled 0..C-1, so the dataset reads, packs and trains as an `ImageFolderDataset` does.

    Attributes:
        view_names: the view folders, sorted; `views` `(N,) int64` the view of each image.
    """

    def __init__(self, root: str | os.PathLike[str], *, skip_unreadable: bool = True) -> None:
        """Scan every visible sub-folder of `root` as a view (its images at any depth).

        Raises:
            DataNotFoundError: `root` is missing.
            DatasetError: fewer than two view folders, or no image in one of them.
        """
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataNotFoundError(f"image folder not found: {self.root}")
        self.transform = None
        self.min_side = None
        names = sorted(e.name for e in os.scandir(self.root) if e.is_dir() and not e.name.startswith("."))
        if len(names) < 2:
            raise DatasetError(f"view folders need at least two views under {self.root}, found {names}")
        found: list[tuple[str, str, int]] = []  # (path, item, view)
        for view, name in enumerate(names):
            folder = self.root / name
            count = 0
            for path in scan_folder(folder):
                if path.suffix.lower() not in IMAGE_EXTENSIONS or not _readable(path, skip_unreadable):
                    continue
                found.append((str(path), path.relative_to(folder).with_suffix("").as_posix(), view))
                count += 1
            if not count:
                raise DatasetError(f"view folder {folder} holds no images")
        self.classes: list[str] = sorted({item for _, item, _ in found})
        label_of = {item: label for label, item in enumerate(self.classes)}
        self.samples: list[tuple[str, int]] = [(path, label_of[item]) for path, item, _ in found]
        self.labels: np.ndarray = np.array([label for _, label in self.samples], dtype=np.int64)
        self.view_names: list[str] = names
        self.views: np.ndarray = np.array([view for _, _, view in found], dtype=np.int64)


def _readable(path: Path, check: bool) -> bool:
    if not check:
        return True
    try:
        probe_image(path)
    except ImageError as exc:
        logger.warning("skipping unreadable image %s: %s", path, exc)
        return False
    return True


class ViewedDataset(Dataset):
    """A labelled dataset whose classes are items and whose images each show one view of their item.

    Items are `(image, label)` of the wrapped dataset; `labels` and `classes` are its own, so every sampler and loop
    that takes a labelled set takes this one.

    Attributes:
        dataset: the wrapped labelled dataset.
        view_names: the views, in order; `views` `(N,) int64` the view of each image.
    """

    def __init__(self, dataset: Any, views: np.ndarray, view_names: Sequence[str]) -> None:
        views = np.asarray(views, dtype=np.int64)
        if views.shape != (len(dataset),):
            raise DatasetError(f"{len(dataset)} images but {views.shape} views")
        if len(views) and not 0 <= views.min() <= views.max() < len(view_names):
            raise DatasetError(f"views must index the {len(view_names)} view names")
        self.dataset = dataset
        self.views = views
        self.view_names = list(view_names)
        self.labels: np.ndarray = np.asarray(dataset.labels, dtype=np.int64)
        self.classes: list[str] = list(dataset.classes)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.dataset[index]  # type: ignore[no-any-return]

    def view_index(self, name: str) -> int:
        """The number of view `name`.

        Raises:
            DatasetError: no such view (the message lists those there are).
        """
        if name not in self.view_names:
            raise DatasetError(f"no view {name!r} in the data; its views: {', '.join(self.view_names[:10])}")
        return self.view_names.index(name)

    def view(self, name: str) -> _ViewSubset:
        """The images of one view, labelled as here (every item keeps its number, present or not)."""
        return _ViewSubset(self, np.flatnonzero(self.views == self.view_index(name)), name)

    def class_subset(self, classes: Sequence[str]) -> ViewedDataset:
        """The items named, relabelled 0..C'-1 in that order, each image keeping its view."""
        subset = ClassSubset(self.dataset, classes)
        return ViewedDataset(subset, self.views[subset.indices], self.view_names)


class _ViewSubset(Dataset):
    """The images of one view of a `ViewedDataset`: a query set or a gallery, classes numbered as in the whole."""

    def __init__(self, parent: ViewedDataset, indices: np.ndarray, name: str) -> None:
        if not len(indices):
            raise DatasetError(f"view {name!r} holds no images")
        self.parent = parent
        self.indices = indices
        self.name = name
        self.labels: np.ndarray = parent.labels[indices]
        self.classes: list[str] = parent.classes

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.parent[int(self.indices[index])]


def class_subset(dataset: Any, classes: Sequence[str]) -> Any:
    """Some classes of a labelled dataset relabelled 0..C'-1 (`ClassSubset`); a two-view set keeps its views."""
    if isinstance(dataset, ViewedDataset):
        return dataset.class_subset(classes)
    return ClassSubset(dataset, classes)


def open_views(path: str | os.PathLike[str], views: Sequence[str]) -> ViewedDataset:
    """Two-view data from a folder in either layout (see the module), or an LMDB folder packed from one.

    Args:
        views: the views the caller will use (at least two, e.g. the query and the gallery view); they decide the
            layout of a folder and must all be there.

    Raises:
        DataNotFoundError: `path` is missing.
        DatasetError: fewer than two distinct views, a named view that the data lack, an LMDB folder without views.
    """
    names = list(dict.fromkeys(views))
    if len(names) < 2:
        raise DatasetError(f"two-view data need two different views, got {', '.join(views) or 'none'}")
    root = Path(path).expanduser()
    if is_lmdb_dataset(root):
        packed = open_image_dataset(root)
        if getattr(packed, "view_names", None) is None:
            raise DatasetError(f"{root} was packed without views (pack it with --views)")
        viewed = ViewedDataset(packed, packed.views, packed.view_names)  # type: ignore[union-attr, arg-type]
    elif all((root / name).is_dir() for name in names):
        folders = ViewFolderDataset(root)
        viewed = ViewedDataset(folders, folders.views, folders.view_names)
    else:
        classes = open_image_dataset(root)
        assert isinstance(classes, ImageFolderDataset)
        stems = [Path(sample).stem for sample, _ in classes.samples]
        view_names = sorted(set(stems))
        number = {name: i for i, name in enumerate(view_names)}
        viewed = ViewedDataset(classes, np.array([number[s] for s in stems], dtype=np.int64), view_names)
    for name in names:
        viewed.view_index(name)  # each named view must be there
    logger.info("%s: %d images of %d items in views %s", root, len(viewed), len(viewed.classes), viewed.view_names)
    return viewed


def pack_views(viewed: ViewedDataset, path: str | os.PathLike[str], **options: Any) -> int:
    """`write_lmdb_dataset` of two-view data, each image's view kept with it (`options` as that function takes)."""
    return write_lmdb_dataset(viewed.dataset, path, views=(viewed.view_names, viewed.views), **options)
