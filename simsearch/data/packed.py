"""The packed image set: one LMDB folder of encoded images and labels (what `simsearch pack` writes), its writer and
its reader, and opening either a packed folder or a class-per-folder tree."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import struct
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from simsearch.data.folders import ArrayDataset, ImageFolderDataset, Transform
from simsearch.errors import DataNotFoundError, DatasetError, ImageError
from simsearch.files import open_regular_file
from simsearch.fsio import atomic_folder, remove_stale_temps
from simsearch.images import DEFAULT_MAX_PIXELS, load_image, probe_image

__all__ = [
    "LMDB_FORMAT",
    "LMDB_FORMAT_VERSION",
    "LMDBImageDataset",
    "is_lmdb_dataset",
    "open_image_dataset",
    "write_lmdb_dataset",
]

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------------------------
# LMDB image file
# --------------------------------------------------------------------------------------------------------------------

# On-disk format of an LMDB image dataset (a folder holding LMDB's data.mdb and lock.mdb):
#   b"__meta__"   -> UTF-8 JSON {"format": LMDB_FORMAT, "version": 1, "length": N, "classes": [...]}
#   b"__labels__" -> the (N,) labels as little-endian int64 bytes, so a sampler gets them without a scan
#   8-byte big-endian index i (0..N-1) -> 8-byte little-endian int64 label, then the encoded image (PNG/JPEG/... bytes)
# The big-endian keys keep LMDB's B-tree in index order, so a sequential read is a sequential scan of the file.
LMDB_FORMAT = "simsearch-image-dataset"
LMDB_FORMAT_VERSION = 1
_META_KEY = b"__meta__"
_LABELS_KEY = b"__labels__"
_VIEWS_KEY = b"__views__"  # two-view data only: the (N,) view of each image, little-endian int64; meta["views"] names
_LABEL = struct.Struct("<q")
_INDEX = struct.Struct(">Q")
_COMMIT_EVERY = 1000
_INITIAL_MAP_SIZE = 1 << 30
# Files are checked by decoding them at a reduced scale with both sides at least this (cheap, and every byte read).
_CHECK_SIDE = 64


def write_lmdb_dataset(
    source: Dataset | Iterable[tuple[Any, int]],
    path: str | os.PathLike[str],
    *,
    classes: Sequence[str] | None = None,
    max_side: int | None = None,
    image_format: str = "PNG",
    overwrite: bool = False,
    views: tuple[Sequence[str], Sequence[int] | np.ndarray] | None = None,
) -> int:
    """Pack a labelled image set into one LMDB folder that `LMDBImageDataset` reads back fast.

    Image bytes are stored encoded, not decoded, so the file stays about as small as the originals. Files on disk
    (an `ImageFolderDataset`, or `(path, label)` pairs) are copied byte for byte unless `max_side` asks for a
    shrink; arrays and PIL images are encoded with `image_format` (PNG: lossless). The folder is written under a
    temporary name and renamed at the end, so an interrupted write never leaves a half file under `path`.

    Args:
        source: an `ImageFolderDataset` (its `samples` are read, its transform is not applied), any dataset or
            iterable of `(image, label)` where image is encoded bytes, a path, a PIL image or a uint8 array.
        path: the LMDB folder to create.
        classes: class names (default: `source.classes` when it has them, else "0".."C-1").
        max_side: shrink images whose longer side exceeds this (re-encoded as JPEG quality 95 for paths/bytes,
            `image_format` otherwise); for sets of big photos that will be resized down anyway.
        image_format: Pillow format name for images that must be encoded.
        overwrite: replace an existing `path`, which must be an LMDB folder (or an empty one): any other folder, an
            image tree above all, is refused rather than deleted.
        views: `(view names, view of each item)` of two-view data (`simsearch.data.views`), kept beside the labels.

    Files and bytes that do not decode (truncated, corrupt) are skipped with a warning naming them, so the store
    holds only images that decode.

    Returns:
        The number of images written.
    """
    target = Path(path).expanduser()
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists (pass overwrite=True to replace it)")
    if target.exists() and not (is_lmdb_dataset(target) or (target.is_dir() and not any(target.iterdir()))):
        raise FileExistsError(f"{target} is not an LMDB image folder: refusing to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target.parent, target.name)  # left by killed writers of this folder
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    items: Iterable[tuple[Any, int]]
    if isinstance(source, ImageFolderDataset):
        items = source.samples
    elif isinstance(source, ArrayDataset):
        items = zip(source.images, source.labels.tolist(), strict=True)
    elif isinstance(source, LMDBImageDataset):
        items = (source.read_bytes(i) for i in range(len(source)))
    elif isinstance(source, Dataset) and hasattr(source, "__len__"):
        items = (source[i] for i in range(len(source)))  # type: ignore[arg-type]
    else:
        items = source  # type: ignore[assignment]
    if classes is None:
        classes = getattr(source, "classes", None)

    labels: list[int] = []
    skipped = 0
    with atomic_folder(target) as tmp:
        env = lmdb.open(str(tmp), map_size=_INITIAL_MAP_SIZE, subdir=True, meminit=False, map_async=True)
        try:
            pending: list[tuple[bytes, bytes]] = []
            kept: list[int] = []
            for position, (image, label) in enumerate(items):
                try:
                    encoded = _encode(image, max_side, image_format)
                except ImageError as exc:
                    logger.warning(
                        "skipping %s: %s", image if isinstance(image, (str, os.PathLike)) else "an image", exc
                    )
                    skipped += 1
                    continue
                pending.append((_INDEX.pack(len(labels)), _LABEL.pack(int(label)) + encoded))
                labels.append(int(label))
                kept.append(position)
                if len(pending) >= _COMMIT_EVERY:
                    _put_all(env, pending)
                    pending = []
            n_classes = max(labels) + 1 if labels else 0
            names = list(classes) if classes is not None else [str(c) for c in range(n_classes)]
            if len(names) < n_classes:
                raise DatasetError(f"{len(names)} class names for labels up to {n_classes - 1}")
            meta = {"format": LMDB_FORMAT, "version": LMDB_FORMAT_VERSION, "length": len(labels), "classes": names}
            if views is not None:  # an optional key: a reader that does not know it reads the items as classes
                meta["views"] = list(views[0])
                pending.append((_VIEWS_KEY, np.asarray(views[1], dtype="<i8")[kept].tobytes()))
            pending.append((_META_KEY, json.dumps(meta).encode()))
            pending.append((_LABELS_KEY, np.asarray(labels, dtype="<i8").tobytes()))
            _put_all(env, pending)
            env.sync(True)
        finally:
            env.close()
        if target.exists():
            _close_reader(target)
            shutil.rmtree(target)
    logger.info("wrote %d images to %s%s", len(labels), target, f" ({skipped} unreadable skipped)" if skipped else "")
    return len(labels)


def _put_all(env: lmdb.Environment, pairs: list[tuple[bytes, bytes]]) -> None:
    """Write the pairs in one transaction, doubling the map until they fit: no size guess needed up front."""
    while True:
        try:
            with env.begin(write=True) as txn:
                for key, value in pairs:
                    txn.put(key, value)
            return
        except lmdb.MapFullError:
            env.set_mapsize(env.info()["map_size"] * 2)


def _encode(image: Any, max_side: int | None, image_format: str) -> bytes:
    """Encoded bytes for one image; files and bytes pass through untouched unless they must shrink.

    Raises:
        ImageError: a file or bytes that do not decode to the end (a truncated file's header alone looks fine).
    """
    if isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview)):
        if isinstance(image, (str, os.PathLike)):
            with open_regular_file(image) as f:
                raw = f.read()
        else:
            raw = bytes(image)
        # Decoded once to the end, at a reduced scale where the format allows (a JPEG's DCT scaling still reads
        # every byte), so a truncated or corrupt file is caught here and not in the middle of a training epoch.
        decoded = load_image(raw, max_pixels=DEFAULT_MAX_PIXELS, min_side=max_side or _CHECK_SIDE)
        if max_side is None or max(probe_image(raw)[1:]) <= max_side:
            return raw  # small enough already: the original bytes, not a lossy re-encoding
        image, image_format = decoded, "JPEG"
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise DatasetError(f"array images must be uint8, got {image.dtype}")
        image = Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image)
    elif not isinstance(image, Image.Image):
        raise DatasetError(f"cannot store an image of type {type(image).__name__} (a transform already applied?)")
    if max_side is not None and max(image.size) > max_side:
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
    out = io.BytesIO()
    if image_format.upper() in ("JPEG", "JPG"):
        if image.mode not in ("L", "RGB"):
            image = load_image(image)
        image.save(out, format="JPEG", quality=95)
    else:
        image.save(out, format=image_format)
    return out.getvalue()


# Read-only environments of this process, one per dataset folder, shared by every LMDBImageDataset reading it:
# py-lmdb refuses to open the same files twice in one process (two datasets on one file, e.g. train and
# validation transforms, would clash), and an environment must never cross a fork. Before any fork (DataLoader
# workers) they are all closed, so a child starts with none and opens its own; the parent reopens on next use.
_READERS: dict[str, tuple[tuple[int, int, int], lmdb.Environment]] = {}
_READERS_LOCK = threading.Lock()


def _reader_env(folder: Path) -> lmdb.Environment:
    """This process's shared read-only environment of `folder`, reopened when the folder was replaced."""
    data_file = folder / "data.mdb"
    try:
        st = data_file.stat()
    except FileNotFoundError as exc:
        raise DataNotFoundError(f"LMDB image dataset not found: {folder} (no data.mdb inside)") from exc
    identity = (os.getpid(), st.st_dev, st.st_ino)
    key = str(folder.resolve())
    with _READERS_LOCK:
        entry = _READERS.pop(key, None)
        if entry is not None:
            if entry[0] == identity:
                _READERS[key] = entry
                return entry[1]
            if entry[0][0] == identity[0]:
                entry[1].close()  # the folder was rewritten (overwrite=True): the old mapping is stale
            # else: inherited through a fork that bypassed the hook below; never touch a parent's environment
        env = lmdb.open(key, subdir=True, readonly=True, lock=False, readahead=False, meminit=False, max_readers=512)
        _READERS[key] = (identity, env)
        return env


def _close_reader(folder: Path) -> None:
    with _READERS_LOCK:
        entry = _READERS.pop(str(folder.resolve()), None)
    if entry is not None and entry[0][0] == os.getpid():
        entry[1].close()


def _close_all_readers() -> None:
    # Runs in the parent just before a fork: no environment (nor py-lmdb's record of it) passes to the child.
    with _READERS_LOCK:
        entries = list(_READERS.values())
        _READERS.clear()
    for (pid, _, _), env in entries:
        if pid == os.getpid():
            env.close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_close_all_readers)


class LMDBImageDataset(Dataset):
    """Reads an image set written by `write_lmdb_dataset`: one memory-mapped file instead of many small ones.

    The LMDB environment is opened lazily, read-only and without locking, once per process and folder (shared by
    every dataset object on that folder), and closed before any fork, so each DataLoader worker opens its own.
    A consequence: forking while another thread of the same process is reading this dataset interrupts that read.
    Images decode to RGB PIL images through `load_image`, so grey images come back as RGB too.
    """

    def __init__(
        self, path: str | os.PathLike[str], transform: Transform | None = None, *, min_side: int | None = None
    ) -> None:
        """Read the header and the labels; no image is touched.

        Raises:
            DataNotFoundError: `path` is missing.
            DatasetError: not a simsearch image dataset, or a newer format version.
        """
        self.path = Path(path).expanduser()
        self.transform = transform
        self.min_side = min_side
        with _reader_env(self.path).begin(buffers=False) as txn:
            raw_meta = txn.get(_META_KEY)
            raw_labels = txn.get(_LABELS_KEY)
            raw_views = txn.get(_VIEWS_KEY)
        if raw_meta is None or raw_labels is None:
            raise DatasetError(f"{self.path} is an LMDB folder but not a simsearch image dataset (no header)")
        meta = json.loads(raw_meta)
        if meta.get("format") != LMDB_FORMAT:
            raise DatasetError(f"{self.path}: unknown dataset format {meta.get('format')!r}")
        if meta.get("version", 0) > LMDB_FORMAT_VERSION:
            raise DatasetError(
                f"{self.path}: dataset format version {meta['version']} is newer than this simsearch reads "
                f"({LMDB_FORMAT_VERSION}); upgrade simsearch"
            )
        self.labels: np.ndarray = np.frombuffer(raw_labels, dtype="<i8").astype(np.int64)
        if len(self.labels) != meta["length"]:
            raise DatasetError(f"{self.path}: header says {meta['length']} images, labels hold {len(self.labels)}")
        self.classes: list[str] = list(meta["classes"])
        # Two-view data: the view of each image (`simsearch.data.views`); None for a plain labelled set.
        self.view_names: list[str] | None = list(meta["views"]) if raw_views is not None else None
        self.views: np.ndarray | None = None if raw_views is None else np.frombuffer(raw_views, "<i8").astype(np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def read_bytes(self, index: int) -> tuple[bytes, int]:
        """The stored `(encoded image, label)` of one item, undecoded."""
        if not 0 <= index < len(self.labels):
            raise IndexError(f"index {index} out of range for {len(self.labels)} images")
        with _reader_env(self.path).begin(buffers=False) as txn:
            value = txn.get(_INDEX.pack(index))
        if value is None:
            raise DatasetError(f"{self.path}: image {index} is missing")
        (label,) = _LABEL.unpack_from(value)
        return value[_LABEL.size :], label

    def __getitem__(self, index: int) -> tuple[Any, int]:
        if index < 0:
            index += len(self.labels)
        data, label = self.read_bytes(index)
        try:
            image = load_image(data, min_side=self.min_side)
        except ImageError as exc:
            raise ImageError(f"{self.path} item {index}: {exc}") from exc
        return (self.transform(image) if self.transform is not None else image), label

    def close(self) -> None:
        """Close this process's environment of the folder (optional; the next read reopens it)."""
        _close_reader(self.path)


# --------------------------------------------------------------------------------------------------------------------
# Opening either kind of folder
# --------------------------------------------------------------------------------------------------------------------


def is_lmdb_dataset(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is an LMDB folder (it holds LMDB's `data.mdb`), as `write_lmdb_dataset` makes."""
    return (Path(path).expanduser() / "data.mdb").is_file()


def open_image_dataset(
    path: str | os.PathLike[str], *, min_side: int | None = None, skip_unreadable: bool = True
) -> ImageFolderDataset | LMDBImageDataset:
    """A labelled image set from either a class-per-folder tree or an LMDB folder (one holding `data.mdb`).

    Items are `(RGB PIL image, label)`, no transform set. A folder tree's unreadable files are dropped with a
    warning by default (`ImageFolderDataset(skip_unreadable=True)`): one corrupt file must not stop a training run
    mid-epoch. An LMDB store holds only images that decoded when it was packed.

    Raises:
        DataNotFoundError: `path` is missing.
        DatasetError: an LMDB folder that is not a simsearch image dataset, or a tree without class folders.
    """
    if is_lmdb_dataset(path):
        return LMDBImageDataset(path, min_side=min_side)
    return ImageFolderDataset(path, min_side=min_side, skip_unreadable=skip_unreadable)
