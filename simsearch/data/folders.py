"""Labelled image datasets for metric learning: class-per-folder trees, in-memory arrays, and an LMDB image file.

All three expose `labels` ((N,) int64, 0..C-1) and `classes` (C names), which is all the samplers need.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import os
import shutil
import struct
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from simsearch.errors import DataNotFoundError, DatasetError, ImageError
from simsearch.images import DEFAULT_MAX_PIXELS, load_image, open_regular_file, probe_image, scan_folder

__all__ = [
    "IMAGE_EXTENSIONS",
    "LMDB_FORMAT",
    "LMDB_FORMAT_VERSION",
    "ArrayDataset",
    "ClassSubset",
    "DataNotFoundError",
    "DatasetError",
    "ImageFolderDataset",
    "LMDBImageDataset",
    "is_lmdb_dataset",
    "open_image_dataset",
    "write_lmdb_dataset",
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
    views: tuple[Sequence[str], Sequence[int]] | None = None,
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
    _remove_stale_temporaries(target)
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

    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    labels: list[int] = []
    env = lmdb.open(str(tmp), map_size=_INITIAL_MAP_SIZE, subdir=True, meminit=False, map_async=True)
    try:
        pending: list[tuple[bytes, bytes]] = []
        skipped = 0
        kept: list[int] = []
        for position, (image, label) in enumerate(items):
            try:
                encoded = _encode(image, max_side, image_format)
            except ImageError as exc:
                logger.warning("skipping %s: %s", image if isinstance(image, (str, os.PathLike)) else "an image", exc)
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
    except BaseException:
        env.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    env.close()
    if target.exists():
        _close_reader(target)
        shutil.rmtree(target)
    os.replace(tmp, target)
    logger.info("wrote %d images to %s%s", len(labels), target, f" ({skipped} unreadable skipped)" if skipped else "")
    return len(labels)


def _remove_stale_temporaries(target: Path) -> None:
    """Delete the temporary folders that killed writers of `target` left (their process is gone): each one is
    named for its writer's pid, so no later run would ever reuse it."""
    for stale in target.parent.glob(f".{glob.escape(target.name)}.tmp-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            logger.info("removing %s, left by an interrupted pack", stale)
            shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass  # alive, under another user: not ours to delete


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
# Opening either kind of folder, and class subsets
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
