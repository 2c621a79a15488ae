"""VectorIndex: one FAISS index over L2-normalised float32 vectors with int64 ids, inner product (= cosine).

Owns id mapping, training on first add, removal for every index type, CPU/GPU placement and crash-safe save/load.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import faiss
import numpy as np

from indexes.errors import IndexLayerError
from indexes.factory import HNSW_EF_CONSTRUCTION, OPQ_ITERATIONS, default_search_params, gpu_count

logger = logging.getLogger(__name__)

#: Version of the JSON sidecar written next to every index file; a newer one is refused on load.
SIDECAR_FORMAT = 1
METRIC = "inner_product"
_IP = faiss.METRIC_INNER_PRODUCT
#: faiss GPU k-selection handles k <= 2048; larger k is searched on the CPU master instead.
GPU_MAX_K = 2048

# faiss 1.15 computes exhaustive (Flat, IVF coarse) distances with BLAS only when n_queries * dim reaches
# `distance_compute_blas_threshold` (default 128_000, i.e. ~1000 queries at D=128). Below it a scalar path ran
# 2-9x slower per query for batches of 8-256 on this project's 2-core CPU (see shared/PERFORMANCE.md; re-measured
# while writing this: BLAS wins from ~8 queries at D=128 and ~4 at D=1280, loses for 2 queries). 4096 switches to
# BLAS from 32 queries at D=128, 8 at D=512 and 4 at D=1280, and leaves single queries on the scalar path.
# Only ever lowered, so a caller that tuned it further keeps its value.
# Threads are deliberately left alone: for single queries one faiss thread measured faster than two here, but
# faiss.omp_set_num_threads is process-wide and belongs to the application or the benchmark, not this library.
_BLAS_THRESHOLD = 4096
if faiss.cvar.distance_compute_blas_threshold > _BLAS_THRESHOLD:
    faiss.cvar.distance_compute_blas_threshold = _BLAS_THRESHOLD

_DIRECT_MAP: Any = faiss.DirectMap  # type: ignore[attr-defined]  # missing from faiss's bundled stubs
_FAISS_LOCATION = re.compile(r"^Error in .*? at \S+:\d+: ", re.DOTALL)
_CHILD_ATTRS = ("index", "base_index", "refine_index", "storage", "quantizer")


class VectorIndex:
    """A FAISS index over L2-normalised float32 vectors, inner-product metric (= cosine), int64 ids kept by FAISS.

    Ids live inside faiss: an IndexIDMap2 wrapper for most index types, the inverted lists themselves for IVF
    indexes (faiss's IDMap cannot remove from an IVF correctly: the IVF does not compact its internal positions).
    A CPU master index takes every change and every save; with a GPU, searches run on a lazily made GPU copy that
    is dropped on each change. Not thread-safe: serialise calls from several threads.

    Build one with `create` or `load`, not the constructor.
    """

    def __init__(self, index: faiss.Index, *, factory: str, use_gpu: bool | None) -> None:
        self._index: Any = index  # Any: faiss's bundled stubs miss IDMap/IVF attributes and overloads
        self._native_ids = _native_ids(index, factory)
        self.dim: int = int(index.d)
        self.factory: str = factory
        self._search_params = ""
        self._want_gpu = _resolve_use_gpu(use_gpu)
        self._gpu_refused = self._want_gpu and not _gpu_capable(index)
        if self._gpu_refused:
            logger.debug("faiss has no GPU version of %r; it stays on the CPU", factory)
        self._gpu_index: faiss.Index | None = None
        self._gpu_res: Any = None
        self._sorted_ids: np.ndarray | None = None  # sorted copy of ids(), for membership tests

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
        _resolve_use_gpu(use_gpu)  # fail before building anything
        try:
            raw = faiss.index_factory(int(dim), factory, _IP)
        except RuntimeError as exc:
            raise IndexLayerError(f"bad index factory string {factory!r}: {_faiss_reason(exc)}") from exc
        if raw.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise IndexLayerError(f"index factory {factory!r} does not support the inner-product metric")
        if not isinstance(raw, faiss.IndexIDMap) and _ivf_below_transforms(raw) is None and "IDMap" in factory:
            raise IndexLayerError(f"index factory {factory!r}: IDMap must wrap the whole index (put it first)")
        problem = _transform_problem(raw)
        if problem:
            raise IndexLayerError(f"index factory {factory!r}: {problem}; use OPQ or RR at full dimension to rotate")
        raw = _wrapped(raw)
        apply_build_settings(raw)
        obj = cls(raw, factory=factory, use_gpu=use_gpu)
        defaults = default_search_params(factory)
        if defaults:
            try:
                obj.set_search_params(defaults)
            except IndexLayerError as exc:  # a guess from the factory text that this index type does not take
                logger.debug("default search params %r not applied to %r: %s", defaults, factory, exc)
        return obj

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, use_gpu: bool | None = None) -> VectorIndex:
        """Read an index written by `save`; its sidecar `<path>.json` restores factory string and search params.

        The index file is the truth for vectors and ids. A sidecar that does not describe this very file (its size
        or vector count differ: a crash between the two writes of `save`) could name another index type, so it is
        ignored like a missing or unreadable one: the factory string is then unknown ("") and the search params
        are the file's own.

        Raises:
            IndexLayerError: missing or corrupt index file, wrong metric, no id mapping, or a sidecar format newer
                than this code.
        """
        path = Path(path)
        if not path.is_file():
            raise IndexLayerError(f"no index file at {path}")
        try:
            index = faiss.read_index(str(path))
        except (RuntimeError, MemoryError, ValueError) as exc:
            raise IndexLayerError(
                f"cannot read index file {path} (corrupt or not a faiss index): {_faiss_reason(exc)}"
            ) from exc
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise IndexLayerError(f"index file {path} does not use the inner-product metric")
        _native_ids(index, str(path))  # refuse unusable layouts with the file's name in the message
        meta = _read_sidecar(
            _sidecar_path(path), dim=int(index.d), ntotal=int(index.ntotal), file_bytes=path.stat().st_size
        )
        factory = meta.get("factory")
        obj = cls(index, factory=factory if isinstance(factory, str) else "", use_gpu=use_gpu)
        params = meta.get("search_params")
        if isinstance(params, str) and params:
            try:
                obj._apply_search_params(params.strip(), try_first=False)
            except IndexLayerError as exc:
                logger.warning("search params %r from %s not applied: %s", params, _sidecar_path(path), exc)
        return obj

    # ------------------------------------------------------------------ properties

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
        return self._want_gpu and not self._gpu_refused

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
        return 0 if self.is_trained else self._min_training_vectors()

    def train(self, vectors: np.ndarray) -> None:
        """Train IVF/PQ parts on `vectors` (N, D) float32; a no-op when the index is already trained.

        Raises:
            IndexLayerError: bad vectors, fewer than the index needs, or faiss failing to train.
        """
        x = self._as_vectors(vectors, "training vectors")
        if self.is_trained:
            logger.debug("%r is already trained; train() ignored", self.factory)
            return
        self._check_enough_to_train(len(x), "train()")
        self._train(x)
        self._changed()

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add `vectors` (N, D) float32 under `ids` (N,) int64; an untrained index first trains on them.

        Raises:
            IndexLayerError: wrong shape or dimension, NaN/inf, negative or duplicate ids, ids already present, or
                too few vectors to train an untrained index (the message says how many are needed).
        """
        x = self._as_vectors(vectors, "vectors")
        new_ids = _as_ids(ids)
        if len(new_ids) != len(x):
            raise IndexLayerError(f"got {len(new_ids)} ids for {len(x)} vectors")
        if len(x) == 0:
            return
        if new_ids.min() < 0:
            raise IndexLayerError("ids must be >= 0 (faiss uses -1 for 'no result')")
        unique, counts = np.unique(new_ids, return_counts=True)
        if (counts > 1).any():
            raise IndexLayerError(f"duplicate ids in one add: {_preview(unique[counts > 1])}")
        present = self._contains(unique)
        if present.any():
            raise IndexLayerError(
                f"ids already in the index: {_preview(unique[present])} (remove them first to replace their vectors)"
            )
        if not self.is_trained:
            self._check_enough_to_train(len(x), "the first add()")
            logger.info("training %r on the %d vectors of the first add", self.factory, len(x))
            self._train(x)
        try:
            self._index.add_with_ids(x, new_ids)
        except RuntimeError as exc:
            self._changed()
            raise IndexLayerError(f"faiss could not add to {self.factory!r}: {_faiss_reason(exc)}") from exc
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
        targets = np.unique(_as_ids(ids))
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
                raise IndexLayerError(f"faiss could not remove from {self.factory!r}: {_faiss_reason(exc)}") from exc
            logger.debug(
                "%r has no remove_ids (%s); rebuilding without %d vectors",
                self.factory,
                _faiss_reason(exc),
                len(targets),
            )
            removed = self._rebuild_without(targets)
        self._changed(removed=targets)
        if removed != len(targets):  # would mean faiss and our id bookkeeping disagree
            logger.warning("asked %r to remove %d ids, it removed %d", self.factory, len(targets), removed)
        return removed

    def set_search_params(self, params: str) -> None:
        """Apply a faiss ParameterSpace string (e.g. "nprobe=16", "efSearch=64") and keep it for save/load.

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
                space: Any = faiss.ParameterSpace()  # stub wrongly types the string argument as int
                # faiss applies the items left to right and stops at a bad one: try them on an empty index of the
                # same type first, so a refused string leaves this index as it was.
                if try_first and self.factory:
                    space.set_index_parameters(_wrapped(faiss.index_factory(self.dim, self.factory, _IP)), params)
                space.set_index_parameters(self._index, params)
            except RuntimeError as exc:
                raise IndexLayerError(
                    f"cannot apply search params {params!r} to {self.factory!r}: {_faiss_reason(exc)}"
                ) from exc
            if self._gpu_index is not None and not self._apply_gpu_params(self._gpu_index, params):
                self._gpu_index = None  # re-cloned from the CPU master (which has the params) on the next search
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
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise IndexLayerError(f"k must be an integer >= 1, got {k!r}")
        k = int(k)
        q = self._as_vectors(queries, "queries", allow_1d=True)
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        ids = np.full((len(q), k), -1, dtype=np.int64)
        n = self.ntotal
        if n == 0 or len(q) == 0:
            return scores, ids
        k_eff = min(k, n)  # asking faiss for more than ntotal only allocates bigger heaps of padding
        index = self._index_for_search(k_eff)
        try:
            found_scores, found_ids = index.search(q, k_eff)
        except RuntimeError as exc:
            raise IndexLayerError(f"faiss search failed on {self.factory!r}: {_faiss_reason(exc)}") from exc
        ids[:, :k_eff] = found_ids
        scores[:, :k_eff] = np.where(found_ids < 0, -np.inf, found_scores)
        return scores, ids

    def ids(self) -> np.ndarray:
        """Every id in the index, (ntotal,) int64, in faiss's storage order (insertion order unless IVF)."""
        if not self._native_ids:
            return faiss.vector_to_array(self._index.id_map).astype(np.int64, copy=False)
        ivf: Any = faiss.extract_index_ivf(self._index)
        invlists = ivf.invlists
        parts = []
        for list_no in range(ivf.nlist):
            size = invlists.list_size(list_no)
            if size:
                ptr = invlists.get_ids(list_no)
                parts.append(faiss.rev_swig_ptr(ptr, size).astype(np.int64))  # copy before release
                invlists.release_ids(list_no, ptr)
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors of `ids` (N,) as (N, D) float32: exact for Flat/HNSWFlat/IVF-Flat, decoded for PQ/SQ.

        IVF indexes get a faiss direct map (id -> list entry hash table) on first use; it is kept and saved.

        Raises:
            IndexLayerError: an id not in the index, or an index type that cannot reconstruct.
        """
        wanted = _as_ids(ids)
        if len(wanted) == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        known = self._contains(wanted)
        if not known.all():
            raise IndexLayerError(f"ids not in the index: {_preview(np.unique(wanted[~known]))}")
        try:
            if self._native_ids:
                ivf: Any = faiss.extract_index_ivf(self._index)
                if ivf.direct_map.type == _DIRECT_MAP.NoMap:
                    ivf.set_direct_map_type(_DIRECT_MAP.Hashtable)  # Hashtable, unlike Array, allows remove_ids
                out = self._index.reconstruct_batch(wanted)
            else:
                out = faiss.downcast_index(self._index.index).reconstruct_batch(self._positions(wanted))
        except RuntimeError as exc:
            raise IndexLayerError(f"{self.factory!r} cannot reconstruct vectors: {_faiss_reason(exc)}") from exc
        return np.ascontiguousarray(out, dtype=np.float32).reshape(len(wanted), self.dim)

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index (always the CPU master) to `path` and its JSON sidecar to `<path>.json`, crash-safely.

        Each file goes to a temporary file in the same folder, is fsynced and renamed over the target; the sidecar
        comes second and records the index file's size, so a crash in between leaves the new index beside the
        previous sidecar, which `load` recognises as stale.

        Raises:
            IndexLayerError: the folder does not exist or a write fails.
        """
        path = Path(path)
        if not path.parent.is_dir():
            raise IndexLayerError(f"cannot save index to {path}: folder {path.parent} does not exist")
        meta = {
            "format": SIDECAR_FORMAT,
            "factory": self.factory,
            "dim": self.dim,
            "ntotal": self.ntotal,
            "metric": METRIC,
            "search_params": self._search_params,
            "faiss_version": faiss.__version__,
        }
        try:
            _atomic_write(path, lambda tmp: faiss.write_index(self._index, tmp))
            text = json.dumps({**meta, "file_bytes": path.stat().st_size}, indent=2) + "\n"
            _atomic_write(_sidecar_path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        except (OSError, RuntimeError) as exc:
            raise IndexLayerError(f"cannot save index to {path}: {_faiss_reason(exc)}") from exc

    # ------------------------------------------------------------------ internals

    def _as_vectors(self, data: Any, name: str, *, allow_1d: bool = False) -> np.ndarray:
        """Validate and convert to C-contiguous (N, D) float32; faiss would misread anything else."""
        arr = np.asarray(data)
        if arr.ndim == 1 and allow_1d:
            arr = arr.reshape(1, -1)
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise IndexLayerError(f"{name} must have shape (N, {self.dim}), got {arr.shape}")
        if arr.dtype.kind not in "fiu":
            raise IndexLayerError(f"{name} must be real numbers, got dtype {arr.dtype}")
        x = np.ascontiguousarray(arr, dtype=np.float32)
        finite = np.isfinite(x).all(axis=1)
        if not finite.all():
            raise IndexLayerError(f"{name} contain NaN or inf (first at row {int(np.flatnonzero(~finite)[0])})")
        return x

    def _contains(self, ids: np.ndarray) -> np.ndarray:
        """Boolean mask: which of `ids` are in the index (binary search in a cached sorted id array)."""
        if self._sorted_ids is None:
            self._sorted_ids = np.sort(self.ids())
        known = self._sorted_ids
        if len(known) == 0:
            return np.zeros(len(ids), dtype=bool)
        pos = np.minimum(np.searchsorted(known, ids), len(known) - 1)
        return known[pos] == ids

    def _positions(self, ids: np.ndarray) -> np.ndarray:
        """Storage positions (inside the IDMap wrapper) of ids known to be present."""
        id_map = faiss.vector_to_array(self._index.id_map)
        order = np.argsort(id_map, kind="stable")
        return order[np.searchsorted(id_map[order], ids)]

    def _changed(self, *, added: np.ndarray | None = None, removed: np.ndarray | None = None) -> None:
        """Keep the sorted-id cache in step and drop the stale GPU copy after any change of the master."""
        self._gpu_index = None
        if self._sorted_ids is None:
            return
        if added is not None:  # `added` is sorted and disjoint from the cache (checked in add)
            self._sorted_ids = np.insert(self._sorted_ids, np.searchsorted(self._sorted_ids, added), added)
        elif removed is not None:
            self._sorted_ids = self._sorted_ids[~np.isin(self._sorted_ids, removed)]
        else:
            self._sorted_ids = None

    def _min_training_vectors(self) -> int:
        """faiss's hard floor for training: nlist points for IVF k-means, 2**nbits per PQ sub-quantizer."""
        need = 1
        for node in _walk(self._index):
            if isinstance(node, faiss.IndexIVF):
                need = max(need, int(node.nlist))
            pq = getattr(node, "pq", None)
            if pq is not None and hasattr(pq, "ksub"):
                need = max(need, int(pq.ksub))
        return need

    def _check_enough_to_train(self, n: int, where: str) -> None:
        need = self._min_training_vectors()
        if n < need:
            raise IndexLayerError(
                f"index {self.factory!r} is untrained and needs at least {need} vectors to train; {where} has {n} "
                f"(add at least {need} at once, or call train() with enough vectors first)"
            )

    def _train(self, x: np.ndarray) -> None:
        try:
            self._index.train(x)
        except RuntimeError as exc:
            raise IndexLayerError(f"faiss could not train {self.factory!r}: {_faiss_reason(exc)}") from exc

    def _rebuild_without(self, targets: np.ndarray) -> int:
        """Remove by rebuilding: reconstruct all vectors, reset (trained parts survive reset), re-add the kept."""
        n = self.ntotal
        id_map = faiss.vector_to_array(self._index.id_map).astype(np.int64, copy=False)
        try:
            vectors = faiss.downcast_index(self._index.index).reconstruct_n(0, n)
        except RuntimeError as exc:
            raise IndexLayerError(
                f"cannot remove from {self.factory!r}: faiss can neither remove from nor reconstruct this index "
                f"type ({_faiss_reason(exc)})"
            ) from exc
        keep = ~np.isin(id_map, targets)
        self._index.reset()
        self._index.add_with_ids(np.ascontiguousarray(vectors[keep]), np.ascontiguousarray(id_map[keep]))
        return int(n - keep.sum())

    def _index_for_search(self, k: int) -> faiss.Index:
        """The GPU copy when wanted and possible (made lazily), else the CPU master."""
        if not self.on_gpu or k > GPU_MAX_K:
            return self._index
        if self._gpu_index is None:
            try:
                self._gpu_index = self._clone_to_gpu()
            except (RuntimeError, AttributeError) as exc:
                logger.warning(
                    "could not put %r on the GPU, searching on the CPU: %s", self.factory, _faiss_reason(exc)
                )
                self._gpu_refused = True
                return self._index
        return self._gpu_index

    def _clone_to_gpu(self) -> faiss.Index:
        if gpu_count() > 1:
            gpu_index = faiss.index_cpu_to_all_gpus(self._index)  # replicas; faiss keeps their resources alive
        else:
            if self._gpu_res is None:
                self._gpu_res = faiss.StandardGpuResources()
            gpu_index = faiss.index_cpu_to_gpu(self._gpu_res, 0, self._index)
        if self._search_params:
            self._apply_gpu_params(gpu_index, self._search_params)
        logger.debug("cloned %r (%d vectors) to the GPU", self.factory, self.ntotal)
        return gpu_index

    def _apply_gpu_params(self, gpu_index: faiss.Index, params: str) -> bool:
        space_cls = getattr(faiss, "GpuParameterSpace", faiss.ParameterSpace)
        try:
            space: Any = space_cls()
            space.set_index_parameters(gpu_index, params)
        except RuntimeError as exc:
            logger.debug("search params %r not applied to the GPU copy: %s", params, _faiss_reason(exc))
            return False
        return True


# ---------------------------------------------------------------------- helpers


def _faiss_reason(exc: BaseException) -> str:
    """faiss's message on one line, without its 'Error in <C++ signature> at <file>:<line>:' prefix."""
    text = _FAISS_LOCATION.sub("", str(exc).strip(), count=1)
    text = text.removeprefix("Error: ")
    return " ".join(text.split()) or type(exc).__name__


def apply_build_settings(index: faiss.Index) -> None:
    """Build settings that factory strings cannot express, for a fresh index and every index inside it."""
    for node in _walk(index):
        if isinstance(node, faiss.IndexHNSW):
            node.hnsw.efConstruction = HNSW_EF_CONSTRUCTION  # see factory.py
        if isinstance(node, faiss.IndexIVFPQ):
            # faiss turns on polysemous training for 8-bit PQ: 80 s on 8.7k x 1280 here, for a code reordering that
            # only its Hamming pre-filter uses, and that filter is off (polysemous_ht = 0).
            cast(Any, node).do_polysemous_training = False
        if isinstance(node, faiss.IndexPreTransform):
            for transform in _transforms(node):
                if isinstance(transform, faiss.OPQMatrix):
                    transform.niter = OPQ_ITERATIONS  # see factory.py; the tuner measured the index trained so


def _walk(index: faiss.Index) -> Iterator[faiss.Index]:
    """The index and every sub-index (wrapped index, HNSW storage, IVF quantizer, refine parts), downcast."""
    stack = [faiss.downcast_index(index)]
    while stack:
        node = stack.pop()
        yield node
        for attr in _CHILD_ATTRS:
            child = getattr(node, attr, None)
            if isinstance(child, faiss.Index):
                stack.append(faiss.downcast_index(child))


def _ivf_below_transforms(index: faiss.Index) -> faiss.IndexIVF | None:
    """The IVF index reached through IndexPreTransform wrappers only, if any: such an index maps ids itself."""
    node = faiss.downcast_index(index)
    while isinstance(node, faiss.IndexPreTransform):
        node = faiss.downcast_index(node.index)
    return node if isinstance(node, faiss.IndexIVF) else None


def _native_ids(index: faiss.Index, origin: str) -> bool:
    """True when the IVF keeps the ids, False for an IDMap wrapper; anything else cannot be used."""
    if isinstance(index, faiss.IndexIDMap):
        if _ivf_below_transforms(index.index) is not None:
            # IndexIDMap::remove_ids assumes the wrapped index compacts its positions; an IVF does not, so ids and
            # vectors would silently come apart after the first removal (observed with faiss 1.15.1).
            raise IndexLayerError(
                f"{origin!r}: an IDMap around an IVF index cannot remove vectors correctly; "
                "IVF indexes keep ids themselves, drop the IDMap"
            )
        return False
    if _ivf_below_transforms(index) is not None:
        return True
    raise IndexLayerError(f"{origin!r} is not an id-mapped faiss index (expected IDMap/IDMap2 or IVF)")


def _gpu_capable(index: faiss.Index) -> bool:
    """Whether faiss's GPU cloner has a GPU version of the core index (through IDMap/PreTransform wrappers)."""
    node = faiss.downcast_index(index)
    while isinstance(node, (faiss.IndexIDMap, faiss.IndexPreTransform)):
        node = faiss.downcast_index(node.index)
    return isinstance(node, (faiss.IndexFlat, faiss.IndexIVFFlat, faiss.IndexIVFPQ, faiss.IndexIVFScalarQuantizer))


def _resolve_use_gpu(use_gpu: bool | None) -> bool:
    if use_gpu is None:
        return gpu_count() > 0
    if use_gpu and gpu_count() == 0:
        raise IndexLayerError("use_gpu=True but faiss sees no GPU (faiss-cpu build, or no CUDA device)")
    return bool(use_gpu)


def _as_ids(data: Any) -> np.ndarray:
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


def _preview(ids: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(str(int(i)) for i in ids[:limit])
    return shown if len(ids) <= limit else f"{shown} (+{len(ids) - limit} more)"


def _wrapped(index: Any) -> Any:
    """`index` in an IndexIDMap2 unless it maps ids itself (an IDMap, or an IVF under transforms only)."""
    if isinstance(index, faiss.IndexIDMap) or _ivf_below_transforms(index) is not None:
        return index
    return faiss.IndexIDMap2(index)  # the wrapper keeps a Python reference to the inner index


def _transform_problem(index: Any) -> str | None:
    """Why a pre-transform of `index` (wrapped in IDMap or not) would make scores other than cosines, or None.

    faiss's PCA and ITQ subtract the data mean, which changes every inner product (a vector no longer scores 1
    against itself); a transform to fewer dimensions drops part of every vector. OPQ and RR at full dimension only
    rotate, which keeps inner products.
    """
    while isinstance(index, faiss.IndexIDMap):
        index = faiss.downcast_index(index.index)
    if not isinstance(index, faiss.IndexPreTransform):
        return None
    for transform in _transforms(index):
        if isinstance(transform, faiss.PCAMatrix | faiss.ITQTransform | faiss.ITQMatrix):
            kind = "PCA" if isinstance(transform, faiss.PCAMatrix) else "ITQ"
            return f"a {kind} stage centres the vectors, which breaks cosine scores"
        if transform.d_out < transform.d_in:
            return f"a stage maps {transform.d_in} to {transform.d_out} dimensions, which breaks cosine scores"
    return None


def _transforms(index: faiss.IndexPreTransform) -> list[Any]:
    """The vector transforms of a pre-transform chain, downcast."""
    chain: Any = index.chain  # a SWIG vector; faiss's stubs call it a list
    return [faiss.downcast_VectorTransform(chain.at(i)) for i in range(chain.size())]


def _sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _read_sidecar(path: Path, *, dim: int, ntotal: int, file_bytes: int) -> dict[str, Any]:
    """The sidecar's fields, or {} when it is missing, unreadable or describes another index or another state of this
    one (warned)."""
    if not path.is_file():
        logger.warning("no sidecar %s: factory string and search params unknown", path)
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        logger.warning("unreadable sidecar %s ignored: %s", path, exc)
        return {}
    if not isinstance(meta, dict):
        logger.warning("sidecar %s ignored: not a JSON object", path)
        return {}
    fmt = meta.get("format")
    if isinstance(fmt, int) and fmt > SIDECAR_FORMAT:
        raise IndexLayerError(
            f"{path} has sidecar format {fmt}, newer than this code reads ({SIDECAR_FORMAT}); upgrade simsearch"
        )
    if meta.get("dim") != dim or meta.get("metric") != METRIC:
        logger.warning(
            "sidecar %s ignored: it describes another index (dim %s, metric %s)",
            path,
            meta.get("dim"),
            meta.get("metric"),
        )
        return {}
    # Sidecars written before `file_bytes` was kept are checked by their vector count alone.
    if meta.get("ntotal") != ntotal or meta.get("file_bytes", file_bytes) != file_bytes:
        logger.warning(
            "sidecar %s ignored: it describes an earlier save of the index (%s vectors, %s bytes; the file has %d, "
            "%d): factory string and search params unknown",
            path,
            meta.get("ntotal"),
            meta.get("file_bytes", "?"),
            ntotal,
            file_bytes,
        )
        return {}
    return meta


def _atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """Write via `write(tmp_name)` to a temp file beside `path`, fsync it, rename it over `path`, fsync the folder."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(str(tmp))
        fd = os.open(tmp, os.O_RDWR)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if os.name == "posix":  # make the rename itself durable; directories cannot be opened on Windows
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
