"""Checks of what callers hand to a `VectorIndex`: faiss reads raw memory and aborts or misreads on a wrong shape,
dtype, NaN or id, so everything is checked and converted before it reaches faiss."""

from __future__ import annotations

from typing import Any

import numpy as np

from indexes.building import min_training_vectors
from indexes.errors import IndexLayerError
from indexes.ids import preview


def as_vectors(data: Any, dim: int, name: str, *, allow_1d: bool = False) -> np.ndarray:
    """Validate and convert to C-contiguous (N, dim) float32; faiss would misread anything else."""
    arr = np.asarray(data)
    if arr.ndim == 1 and allow_1d:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise IndexLayerError(f"{name} must have shape (N, {dim}), got {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise IndexLayerError(f"{name} must be real numbers, got dtype {arr.dtype}")
    x = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        raise IndexLayerError(f"{name} contain NaN or inf (first at row {int(np.flatnonzero(~finite)[0])})")
    return x


def as_k(k: Any) -> int:
    """The number of results asked for, an integer >= 1."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise IndexLayerError(f"k must be an integer >= 1, got {k!r}")
    return int(k)


def unique_new_ids(ids: np.ndarray, n_vectors: int) -> np.ndarray:
    """The sorted ids of one add, checked: one per vector, none negative, no id twice."""
    if len(ids) != n_vectors:
        raise IndexLayerError(f"got {len(ids)} ids for {n_vectors} vectors")
    if n_vectors and ids.min() < 0:
        raise IndexLayerError("ids must be >= 0 (faiss uses -1 for 'no result')")
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise IndexLayerError(f"duplicate ids in one add: {preview(unique[counts > 1])}")
    return unique


def check_enough_to_train(index: Any, factory: str, n: int, where: str) -> None:
    """Refuse to train `index` on fewer vectors than faiss needs (it would fail, or train useless centroids)."""
    need = min_training_vectors(index)
    if n < need:
        raise IndexLayerError(
            f"index {factory!r} is untrained and needs at least {need} vectors to train; {where} has {n} "
            f"(add at least {need} at once, or call train() with enough vectors first)"
        )
