"""IVF indexes larger than memory: trained once on a sample, filled shard by shard (each shard a copy of the trained
index, so shards can be filled in parallel anywhere), merged list by list into one file of inverted lists on disk
(faiss's `OnDiskInvertedLists`) and searched memory-mapped, read-only: the operating system pages in only the lists a
query probes, and every process that searches the file shares those pages.

Files: the index file (coarse quantizer, codec, list offsets and the lists file's name) and beside it the lists file
`<index file name>.<random>.ivfdata`. A new build writes a new lists file and never touches the one in use; the index
file names the current one, and `remove_stale_lists` removes the others once the new index file is written.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from indexes.building import ivf_below_transforms, new_index
from indexes.errors import IndexLayerError, faiss_reason
from indexes.factory import ivf_nlist
from indexes.tuning import HNSW_QUANTIZER_MIN_LISTS

_FAISS: Any = faiss  # faiss's bundled stubs lack InvertedListsPtrVector and SWIG's `this`
LISTS_SUFFIX = ".ivfdata"
#: The index goes on disk when its vectors (float32, what an exact or IVF-Flat index holds) would take more than this
#: share of the memory available when the collection is saved.
ON_DISK_FRACTION = 0.25
#: Training vectors per inverted list (faiss warns below 39; more adds k-means time for little gain).
TRAIN_PER_LIST = 64
#: Raw vectors per shard: one shard and its codes must fit a worker's memory beside the others in flight.
SHARD_BYTES = 1 << 30


def available_memory() -> int:
    """Bytes of memory available to a new allocation now (Linux MemAvailable; elsewhere free physical pages)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: never go on disk by this rule


def should_go_on_disk(n: int, dim: int, available: int | None = None) -> bool:
    """Whether `n` vectors of dimension `dim` are too many to index in memory (see ON_DISK_FRACTION)."""
    return n * dim * 4 > ON_DISK_FRACTION * (available_memory() if available is None else available)


def on_disk_factory(n: int) -> str:
    """The on-disk index for `n` vectors: IVF with nlist from `ivf_nlist`, an HNSW coarse quantizer from
    HNSW_QUANTIZER_MIN_LISTS lists on (a flat scan of 65,536 centroids would cost more than the probed lists), and
    8-bit scalar codes (a quarter of float32 on disk and per probe, at a recall close to IVF-Flat's; the full-size
    check sets nprobe)."""
    nlist = ivf_nlist(n)
    quantizer = "_HNSW32" if nlist >= HNSW_QUANTIZER_MIN_LISTS else ""
    return f"IVF{nlist}{quantizer},SQ8"


def training_size(factory: str, n: int, dim: int) -> int:
    """How many of `n` vectors train `factory`: TRAIN_PER_LIST per list."""
    index = new_index(dim, factory)
    ivf = ivf_below_transforms(index)
    if ivf is None:
        raise IndexLayerError(f"{factory!r} is not an IVF index: only IVF indexes are built on disk")
    return min(n, max(int(ivf.nlist) * TRAIN_PER_LIST, int(ivf.nlist)))


def train(dim: int, factory: str, sample: np.ndarray) -> np.ndarray:
    """An empty IVF index of `factory` trained on `sample`, serialised (what each shard starts from)."""
    index = new_index(dim, factory)
    if ivf_below_transforms(index) is None:
        raise IndexLayerError(f"{factory!r} is not an IVF index: only IVF indexes are built on disk")
    x = np.ascontiguousarray(sample, dtype=np.float32)
    try:
        index.train(x)
    except RuntimeError as exc:
        raise IndexLayerError(f"faiss could not train {factory!r}: {faiss_reason(exc)}") from exc
    return faiss.serialize_index(index)


def trained_from_file(path: Path) -> np.ndarray:
    """The trained, empty index of an on-disk index file, serialised: a rebuild at the same factory keeps the
    coarse quantizer and codec instead of training again."""
    index = faiss.read_index(str(path), faiss.IO_FLAG_SKIP_IVF_DATA | faiss.IO_FLAG_READ_ONLY)
    ivf = faiss.extract_index_ivf(index)
    empty: Any = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    ivf.replace_invlists(empty, True)
    empty.this.disown()  # the index owns it now
    ivf.ntotal = index.ntotal = 0
    return faiss.serialize_index(index)


def fill_shard(trained: np.ndarray, ids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """A copy of the trained index holding `vectors` under `ids`, serialised (one shard of a build)."""
    index = faiss.deserialize_index(np.asarray(trained, dtype=np.uint8))
    index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))
    return faiss.serialize_index(index)


def new_lists_path(index_path: Path) -> Path:
    """A fresh name for the lists file of a new build beside `index_path`."""
    return index_path.with_name(f"{index_path.name}.{uuid.uuid4().hex[:12]}{LISTS_SUFFIX}")


def merge_shards(trained: np.ndarray, shard_files: Sequence[Path], lists_path: Path) -> Any:
    """The trained index with the lists of every shard file merged into `lists_path` (written here, list by list),
    searched memory-mapped. Shards are read memory-mapped too, so no step holds more than a list in memory."""
    index = faiss.deserialize_index(np.asarray(trained, dtype=np.uint8))
    ivf = faiss.extract_index_ivf(index)
    shards = [faiss.read_index(str(f), faiss.IO_FLAG_MMAP) for f in shard_files]
    parts = _FAISS.InvertedListsPtrVector()
    for shard in shards:
        parts.push_back(faiss.extract_index_ivf(shard).invlists)
    lists: Any = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(lists_path))
    try:
        with _c_stdout_to_stderr():  # faiss prints the resize of the lists file to stdout
            total = lists.merge_from_multiple(parts.data(), parts.size(), False, False)
    except RuntimeError as exc:
        raise IndexLayerError(f"cannot merge the shards into {lists_path}: {faiss_reason(exc)}") from exc
    del shards, parts
    lists.read_only = True  # a built index is never changed in place: readers may be mapping the same file
    ivf.replace_invlists(lists, True)
    lists.this.disown()  # the index owns it now
    ivf.ntotal = index.ntotal = int(total)
    return index


def lists_file(index: Any) -> Path | None:
    """The lists file of an on-disk index, None for an index held in memory."""
    ivf: Any = ivf_below_transforms(index)
    if ivf is None:
        return None
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    return Path(lists.filename) if isinstance(lists, faiss.OnDiskInvertedLists) and lists.filename else None


def open_lists(index: Any, folder: Path) -> None:
    """Map the lists of an index file read with IO_FLAG_SKIP_IVF_DATA, from the file of that name in `folder` (the
    index file's own folder: a collection may have moved since the build)."""
    ivf: Any = ivf_below_transforms(index)
    lists = None if ivf is None else faiss.downcast_InvertedLists(ivf.invlists)
    if not isinstance(lists, faiss.OnDiskInvertedLists) or lists.ptr is not None or not lists.filename:
        return  # held in memory, or lists already mapped (from the index file itself)
    path = folder / Path(lists.filename).name
    if not path.is_file():
        raise IndexLayerError(f"the inverted lists of the index, {path}, are missing")
    lists.filename = str(path)
    lists.read_only = True
    try:
        lists.do_mmap()
    except RuntimeError as exc:
        raise IndexLayerError(f"cannot map the inverted lists {path}: {faiss_reason(exc)}") from exc


def sync_lists(index: Any) -> None:
    """Make the lists file of an on-disk index durable (its pages were written through the mapping)."""
    path = lists_file(index)
    if path is None:
        return
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def remove_stale_lists(index_path: Path, keep: Path | None) -> None:
    """Remove lists files of earlier builds of `index_path` (every one but `keep`); a process still searching one
    keeps its mapping until it closes it."""
    for stale in index_path.parent.glob(f"{index_path.name}.*{LISTS_SUFFIX}"):
        if keep is None or stale.name != keep.name:
            with contextlib.suppress(OSError):
                stale.unlink()


@contextlib.contextmanager
def _c_stdout_to_stderr() -> Iterator[None]:
    """Send what C code prints to stdout to stderr meanwhile: a command's stdout is for its results (--json)."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    libc.fflush(None)
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)
