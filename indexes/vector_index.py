"""VectorIndex: one FAISS index over L2-normalised float32 vectors with int64 ids, inner product (= cosine).

Owns the index's life: building (`indexes.building`), training on first add, adding, removal for every index type,
search and reconstruction. Ids, GPU placement, the files on disk and the checks of what callers hand in
(`indexes.checks`) have their own modules.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from indexes.blas import blas_from_small_batches
from indexes.building import min_training_vectors, new_index, wrapped
from indexes.checks import as_k, as_vectors, check_enough_to_train, unique_new_ids
from indexes.errors import IndexLayerError, faiss_reason
from indexes.ids import SortedIds, as_ids, id_positions, native_ids, preview, stored_ids
from indexes.ondisk import lists_file
from indexes.params import default_search_params, set_params
from indexes.persistence import read_index, remove_older_files, sidecar_fields, sidecar_path, write_index_file
from indexes.placement import GpuPlacement, resolve_use_gpu

logger = logging.getLogger(__name__)

_IP = faiss.METRIC_INNER_PRODUCT
_DIRECT_MAP: Any = faiss.DirectMap  # type: ignore[attr-defined]  # missing from faiss's bundled stubs


class VectorIndex:
    """A FAISS index over L2-normalised float32 vectors, inner-product metric (= cosine), int64 ids kept by FAISS.

    Ids live inside faiss: an IndexIDMap2 wrapper for most index types, the inverted lists themselves for IVF
    indexes (faiss's IDMap cannot remove from an IVF correctly: the IVF does not compact its internal positions).
    A CPU master index takes every change and every save; with a GPU, searches run on a lazily made GPU copy that
    is dropped on each change (`indexes.placement`). Searches lower faiss's BLAS threshold while they run
    (`indexes.blas`). Not thread-safe: serialise calls from several threads.

    Build one with `create` or `load`, not the constructor.
    """

    def __init__(self, index: faiss.Index, *, factory: str, use_gpu: bool | None) -> None:
        self._index: Any = index  # Any: faiss's bundled stubs miss IDMap/IVF attributes and overloads
        self._native_ids = native_ids(index, factory)
        self.dim: int = int(index.d)
        self.factory: str = factory
        self._search_params = ""
        self._placement = GpuPlacement(index, factory, use_gpu)
        self._known = SortedIds(self.ids)  # sorted copy of ids(), for membership tests

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(cls, dim: int, factory: str = "Flat", *, use_gpu: bool | None = None) -> VectorIndex:
        """Build an empty index from a faiss factory string (kept verbatim), with its default search params.

        Args:
            dim: vector dimension D.
            factory: faiss factory string, e.g. "Flat", "HNSW32", "IVF1024,Flat", "IVF1024,PQ32".
            use_gpu: None = search on a GPU when faiss sees one; True = require one; False = CPU only.

        Raises:
            IndexLayerError: bad dim or factory string (with faiss's reason), or use_gpu=True without a GPU.
        """
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise IndexLayerError(f"vector dimension must be an integer >= 1, got {dim!r}")
        if not isinstance(factory, str) or not factory.strip():
            raise IndexLayerError(f"index factory must be a non-empty faiss factory string, got {factory!r}")
        resolve_use_gpu(use_gpu)  # fail before building anything
        obj = cls(new_index(int(dim), factory), factory=factory, use_gpu=use_gpu)
        defaults = default_search_params(factory)
        if defaults:
            try:
                obj.set_search_params(defaults)
            except IndexLayerError as exc:  # a guess from the factory text that this index type does not take
                logger.debug("default search params %r not applied to %r: %s", defaults, factory, exc)
        return obj

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, use_gpu: bool | None = None) -> VectorIndex:
        """Read an index written by `write_to`; its sidecar `<path>.json` restores factory string and search params.

        The index file is the truth for vectors and ids. A sidecar that does not describe this very file (its size
        or vector count differ: a crash between the index file and the sidecar) could name another index type, so it is
        ignored like a missing or unreadable one: the factory string is then unknown ("") and the search params
        are the file's own.

        Raises:
            IndexLayerError: missing or corrupt index file, wrong metric, no id mapping, or a sidecar format newer
                than this code.
        """
        path = Path(path)
        index, meta = read_index(path)
        factory = meta.get("factory")
        on_disk = lists_file(index) is not None  # searched where it lies: a GPU copy would hold it all in memory
        obj = cls(index, factory=factory if isinstance(factory, str) else "", use_gpu=False if on_disk else use_gpu)
        params = meta.get("search_params")
        if isinstance(params, str) and params:
            try:
                obj._apply_search_params(params.strip(), try_first=False)
            except IndexLayerError as exc:
                logger.warning("search params %r from %s not applied: %s", params, sidecar_path(path), exc)
        return obj

    @classmethod
    def on_disk_from(cls, index: faiss.Index, factory: str) -> VectorIndex:
        """Wrap an IVF index whose lists are on disk (`indexes.ondisk.merge_shards`), with `factory`'s default search
        params; it is searched on the CPU, read-only."""
        if lists_file(index) is None:
            raise IndexLayerError(f"{factory!r}: not an index with its inverted lists on disk")
        obj = cls(index, factory=factory, use_gpu=False)
        obj._apply_search_params(default_search_params(factory), try_first=False)
        return obj

    # ------------------------------------------------------------------ properties

    @property
    def on_disk(self) -> bool:
        """Whether the inverted lists are memory-mapped from a file (read-only: rebuilt, never changed in place)."""
        return lists_file(self._index) is not None

    @property
    def ntotal(self) -> int:
        """Number of vectors in the index."""
        return int(self._index.ntotal)

    @property
    def is_trained(self) -> bool:
        """False only for IVF/PQ-like indexes before their first training."""
        return bool(self._index.is_trained)

    @property
    def on_gpu(self) -> bool:
        """Whether searches run on a GPU copy (a GPU is wanted and faiss can put this index type on one)."""
        return self._placement.on_gpu

    @property
    def search_params(self) -> str:
        """The faiss ParameterSpace string last applied (e.g. "nprobe=16"); "" when none."""
        return self._search_params

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        return (
            f"VectorIndex(factory={self.factory!r}, dim={self.dim}, ntotal={self.ntotal}, "
            f"search_params={self._search_params!r}, on_gpu={self.on_gpu})"
        )

    # ------------------------------------------------------------------ mutation

    @property
    def min_training_vectors(self) -> int:
        """How many vectors an untrained index needs before it can train (0 for indexes that need no training)."""
        return 0 if self.is_trained else min_training_vectors(self._index)

    def train(self, vectors: np.ndarray) -> None:
        """Train IVF/PQ parts on `vectors` (N, D) float32; a no-op when the index is already trained.

        Raises:
            IndexLayerError: bad vectors, fewer than the index needs, or faiss failing to train.
        """
        x = as_vectors(vectors, self.dim, "training vectors")
        if self.is_trained:
            logger.debug("%r is already trained; train() ignored", self.factory)
            return
        check_enough_to_train(self._index, self.factory, len(x), "train()")
        self._train(x)
        self._changed()

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add `vectors` (N, D) float32 under `ids` (N,) int64; an untrained index first trains on them.

        Raises:
            IndexLayerError: wrong shape or dimension, NaN/inf, negative or duplicate ids, ids already present, or
                too few vectors to train an untrained index (the message says how many are needed).
        """
        self._check_writable()
        x = as_vectors(vectors, self.dim, "vectors")
        new_ids = as_ids(ids)
        unique = unique_new_ids(new_ids, len(x))
        if len(x) == 0:
            return
        present = self._contains(unique)
        if present.any():
            raise IndexLayerError(
                f"ids already in the index: {preview(unique[present])} (remove them first to replace their vectors)"
            )
        if not self.is_trained:
            check_enough_to_train(self._index, self.factory, len(x), "the first add()")
            logger.info("training %r on the %d vectors of the first add", self.factory, len(x))
            self._train(x)
        try:
            self._index.add_with_ids(x, new_ids)
        except RuntimeError as exc:
            self._changed()
            raise IndexLayerError(f"faiss could not add to {self.factory!r}: {faiss_reason(exc)}") from exc
        self._changed(added=unique)

    def remove(self, ids: np.ndarray) -> int:
        """Remove the vectors of `ids` (N,) int64 and return how many were removed; unknown ids are ignored.

        Works for every index type. Where faiss implements remove_ids it is used directly: Flat/PQ/SQ codes under
        the IDMap2 wrapper are compacted, and IVF indexes (any code, PQ included) drop entries from their inverted
        lists, so lossy codes are never decoded. Index types without remove_ids (HNSW, refine, ...) are rebuilt in
        place from their reconstructed kept vectors: exact for HNSWFlat; HNSW over PQ/SQ storage re-encodes its own
        decoded vectors with the trained quantizer, which reproduces the same codes (ties aside). The graph is
        rebuilt from scratch, costing about as much as adding the kept vectors again.

        Raises:
            IndexLayerError: ids not integers, or an index type faiss can neither remove from nor reconstruct.
        """
        self._check_writable()
        targets = np.unique(as_ids(ids))
        if len(targets) == 0 or self.ntotal == 0:
            return 0
        targets = targets[self._contains(targets)]
        if len(targets) == 0:
            return 0
        before = self.ntotal
        try:
            removed = int(self._index.remove_ids(targets))
        except RuntimeError as exc:
            if self._native_ids or self.ntotal != before:
                self._changed()
                raise IndexLayerError(f"faiss could not remove from {self.factory!r}: {faiss_reason(exc)}") from exc
            logger.debug(
                "%r has no remove_ids (%s); rebuilding without %d vectors",
                self.factory,
                faiss_reason(exc),
                len(targets),
            )
            removed = self._rebuild_without(targets)
        self._changed(removed=targets)
        if removed != len(targets):  # would mean faiss and our id bookkeeping disagree
            logger.warning("asked %r to remove %d ids, it removed %d", self.factory, len(targets), removed)
        return removed

    def set_search_params(self, params: str) -> None:
        """Apply a faiss ParameterSpace string (e.g. "nprobe=16", "efSearch=64") and keep it for the sidecar.

        Raises:
            IndexLayerError: a parameter this index type does not have, or a malformed string.
        """
        if not isinstance(params, str):
            raise IndexLayerError(f"search params must be a string like 'nprobe=16', got {params!r}")
        self._apply_search_params(params.strip(), try_first=True)

    def _apply_search_params(self, params: str, *, try_first: bool) -> None:
        """`set_search_params` without the type check; `try_first=False` for a string this index type took before
        (its sidecar's), which opening a collection need not try on an empty index again."""
        if params:
            try:
                # faiss applies the items left to right and stops at a bad one: try them on an empty index of the
                # same type first, so a refused string leaves this index as it was.
                if try_first and self.factory:
                    set_params(wrapped(faiss.index_factory(self.dim, self.factory, _IP)), params)
                set_params(self._index, params)
            except RuntimeError as exc:
                raise IndexLayerError(
                    f"cannot apply search params {params!r} to {self.factory!r}: {faiss_reason(exc)}"
                ) from exc
            self._placement.apply_params(params)
        self._search_params = params

    # ------------------------------------------------------------------ queries

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Find the k best vectors for each query.

        Args:
            queries: (Q, D) float32, or a single (D,) vector treated as Q=1.
            k: results per query, >= 1.

        Returns:
            scores (Q, k) float32 (inner products, best first) and ids (Q, k) int64. Where fewer than k results
            exist (k > ntotal, an empty index, or an approximate index that found fewer) ids are -1 and scores -inf.

        Raises:
            IndexLayerError: k < 1, wrong dimension, NaN/inf in the queries.
        """
        k = as_k(k)
        q = as_vectors(queries, self.dim, "queries", allow_1d=True)
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        ids = np.full((len(q), k), -1, dtype=np.int64)
        n = self.ntotal
        if n == 0 or len(q) == 0:
            return scores, ids
        k_eff = min(k, n)  # asking faiss for more than ntotal only allocates bigger heaps of padding
        index = self._placement.index_for_search(self._index, k_eff, self._search_params)
        try:
            with blas_from_small_batches():
                found_scores, found_ids = index.search(q, k_eff)
        except RuntimeError as exc:
            raise IndexLayerError(f"faiss search failed on {self.factory!r}: {faiss_reason(exc)}") from exc
        ids[:, :k_eff] = found_ids
        scores[:, :k_eff] = np.where(found_ids < 0, -np.inf, found_scores)
        return scores, ids

    def ids(self) -> np.ndarray:
        """Every id in the index, (ntotal,) int64, in faiss's storage order (insertion order unless IVF)."""
        return stored_ids(self._index, self._native_ids)

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors of `ids` (N,) as (N, D) float32: exact for Flat/HNSWFlat/IVF-Flat, decoded for PQ/SQ.

        IVF indexes get a faiss direct map (id -> list entry hash table) on first use; it is kept and saved.

        Raises:
            IndexLayerError: an id not in the index, or an index type that cannot reconstruct.
        """
        wanted = as_ids(ids)
        if len(wanted) == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        known = self._contains(wanted)
        if not known.all():
            raise IndexLayerError(f"ids not in the index: {preview(np.unique(wanted[~known]))}")
        try:
            if self._native_ids:
                ivf: Any = faiss.extract_index_ivf(self._index)
                if ivf.direct_map.type == _DIRECT_MAP.NoMap:
                    ivf.set_direct_map_type(_DIRECT_MAP.Hashtable)  # Hashtable, unlike Array, allows remove_ids
                out = self._index.reconstruct_batch(wanted)
            else:
                out = faiss.downcast_index(self._index.index).reconstruct_batch(id_positions(self._index, wanted))
        except RuntimeError as exc:
            raise IndexLayerError(f"{self.factory!r} cannot reconstruct vectors: {faiss_reason(exc)}") from exc
        return np.ascontiguousarray(out, dtype=np.float32).reshape(len(wanted), self.dim)

    # ------------------------------------------------------------------ persistence

    def write_to(self, path: str | os.PathLike[str]) -> None:
        """Write the index (always the CPU master) to `path` as a plain faiss file, not crash-safe by itself.

        A caller saving for good writes to a temporary file beside the target and renames it, then writes
        `sidecar(...)` to `sidecar_path(path)` the same way, second: a crash in between leaves the new index beside
        the previous sidecar, which `load` recognises as stale.

        Raises:
            IndexLayerError: faiss cannot write the file.
        """
        write_index_file(self._index, Path(path))

    def sidecar(self, file_bytes: int) -> dict[str, Any]:
        """The JSON sidecar's fields for this index written as a file of `file_bytes` bytes (see `write_to`)."""
        return sidecar_fields(
            self._index, factory=self.factory, search_params=self._search_params, file_bytes=file_bytes
        )

    def remove_older_files(self, path: str | os.PathLike[str]) -> None:
        """Once this index and its sidecar are saved at `path`: remove the lists files of earlier on-disk builds."""
        remove_older_files(self._index, Path(path))

    # ------------------------------------------------------------------ internals

    def _check_writable(self) -> None:
        # faiss would throw inside a parallel loop on read-only lists, which aborts the process: refuse first.
        if self.on_disk:
            raise IndexLayerError(f"{self.factory!r} is on disk, read-only: rebuild it to change it")

    def _contains(self, ids: np.ndarray) -> np.ndarray:
        """Boolean mask: which of `ids` are in the index."""
        return self._known.contains(ids)

    def _changed(self, *, added: np.ndarray | None = None, removed: np.ndarray | None = None) -> None:
        """Keep the sorted-id cache in step and drop the stale GPU copy after any change of the master."""
        self._placement.drop()
        self._known.changed(added=added, removed=removed)

    def _train(self, x: np.ndarray) -> None:
        try:
            self._index.train(x)
        except RuntimeError as exc:
            raise IndexLayerError(f"faiss could not train {self.factory!r}: {faiss_reason(exc)}") from exc

    def _rebuild_without(self, targets: np.ndarray) -> int:
        """Remove by rebuilding: reconstruct all vectors, reset (trained parts survive reset), re-add the kept."""
        n = self.ntotal
        id_map = faiss.vector_to_array(self._index.id_map).astype(np.int64, copy=False)
        try:
            vectors = faiss.downcast_index(self._index.index).reconstruct_n(0, n)
        except RuntimeError as exc:
            raise IndexLayerError(
                f"cannot remove from {self.factory!r}: faiss can neither remove from nor reconstruct this index "
                f"type ({faiss_reason(exc)})"
            ) from exc
        keep = ~np.isin(id_map, targets)
        self._index.reset()
        self._index.add_with_ids(np.ascontiguousarray(vectors[keep]), np.ascontiguousarray(id_map[keep]))
        return int(n - keep.sum())
