"""Ids of a VectorIndex: checking what callers pass, where faiss keeps them (an IDMap wrapper or the IVF's own
inverted lists), reading them back, and the sorted copy that answers membership tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faiss
import numpy as np

from indexes.building import ivf_below_transforms
from indexes.errors import IndexLayerError


def as_ids(data: Any) -> np.ndarray:
    """Validate and convert ids to C-contiguous (N,) int64."""
    arr = np.asarray(data)
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)  # np.asarray([]) is float64
    if arr.ndim != 1:
        raise IndexLayerError(f"ids must have shape (N,), got {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise IndexLayerError(f"ids must be integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.max() > np.iinfo(np.int64).max:
        raise IndexLayerError("ids must fit in int64")
    return np.ascontiguousarray(arr, dtype=np.int64)


def preview(ids: np.ndarray, limit: int = 5) -> str:
    """The first few ids for a message, with how many more there are."""
    shown = ", ".join(str(int(i)) for i in ids[:limit])
    return shown if len(ids) <= limit else f"{shown} (+{len(ids) - limit} more)"


def native_ids(index: faiss.Index, origin: str) -> bool:
    """True when the IVF keeps the ids, False for an IDMap wrapper; anything else cannot be used."""
    if isinstance(index, faiss.IndexIDMap):
        if ivf_below_transforms(index.index) is not None:
            # IndexIDMap::remove_ids assumes the wrapped index compacts its positions; an IVF does not, so ids and
            # vectors would silently come apart after the first removal (observed with faiss 1.15.1).
            raise IndexLayerError(
                f"{origin!r}: an IDMap around an IVF index cannot remove vectors correctly; "
                "IVF indexes keep ids themselves, drop the IDMap"
            )
        return False
    if ivf_below_transforms(index) is not None:
        return True
    raise IndexLayerError(f"{origin!r} is not an id-mapped faiss index (expected IDMap/IDMap2 or IVF)")


def stored_ids(index: Any, native: bool) -> np.ndarray:
    """Every id in `index`, (ntotal,) int64, in faiss's storage order (insertion order unless IVF)."""
    if not native:
        return faiss.vector_to_array(index.id_map).astype(np.int64, copy=False)
    ivf: Any = faiss.extract_index_ivf(index)
    invlists = ivf.invlists
    parts = []
    for list_no in range(ivf.nlist):
        size = invlists.list_size(list_no)
        if size:
            ptr = invlists.get_ids(list_no)
            parts.append(faiss.rev_swig_ptr(ptr, size).astype(np.int64))  # copy before release
            invlists.release_ids(list_no, ptr)
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def id_positions(index: Any, ids: np.ndarray) -> np.ndarray:
    """Storage positions (inside an IDMap wrapper) of ids known to be present."""
    id_map = faiss.vector_to_array(index.id_map)
    order = np.argsort(id_map, kind="stable")
    return order[np.searchsorted(id_map[order], ids)]


class SortedIds:
    """A sorted copy of an index's ids for membership tests, read lazily and kept in step with adds and removals."""

    def __init__(self, read: Callable[[], np.ndarray]) -> None:
        self._read = read
        self._sorted: np.ndarray | None = None

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Boolean mask: which of `ids` are in the index (binary search)."""
        if self._sorted is None:
            self._sorted = np.sort(self._read())
        known = self._sorted
        if len(known) == 0:
            return np.zeros(len(ids), dtype=bool)
        pos = np.minimum(np.searchsorted(known, ids), len(known) - 1)
        return known[pos] == ids

    def changed(self, *, added: np.ndarray | None = None, removed: np.ndarray | None = None) -> None:
        """Follow a change: `added` sorted and disjoint from the ids present, or `removed`; neither: read again."""
        if self._sorted is None:
            return
        if added is not None:
            self._sorted = np.insert(self._sorted, np.searchsorted(self._sorted, added), added)
        elif removed is not None:
            self._sorted = self._sorted[~np.isin(self._sorted, removed)]
        else:
            self._sorted = None
