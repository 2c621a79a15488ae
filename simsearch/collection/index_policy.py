"""The index policy: the only place that chooses, tunes, checks and rebuilds a collection's FAISS index.

The store is the truth and the index is derived from it. `save` is the one entry point that brings the index in line
with the manifest's settings (pinned type, or the engine's choice by size, then by measurement, within the memory
budget) and writes it; `configure` changes those settings after checking them, without writing anything. The
measured choice and its check at full size live in `index_tuning`.

Every change of the in-memory index holds `guard` for writing, and searches hold it for reading (see `live`).
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from indexes import IndexLayerError, VectorIndex, choose_factory, default_search_params, estimate_memory
from indexes.ondisk import on_disk_factory, should_go_on_disk, trained_from_file
from simsearch.collection.index_file import save_index
from simsearch.collection.index_tuning import (
    CALIBRATION_FALLBACKS,
    CALIBRATION_QUERIES,
    RETUNE_GROWTH,
    TUNE_QUERIES,
    TUNE_SAMPLE,
    build_and_check,
    check_on_disk,
    tune,
)
from simsearch.collection.live import ReadWriteLock
from simsearch.collection.manifest import IndexInfo, now_iso
from simsearch.collection.store import Store
from simsearch.errors import CollectionError

__all__ = [
    "BUDGET_FLOOR_VECTORS",
    "CALIBRATION_FALLBACKS",
    "CALIBRATION_QUERIES",
    "KEEP",
    "RETUNE_GROWTH",
    "TUNE_QUERIES",
    "TUNE_SAMPLE",
    "IndexPolicy",
    "IndexSettings",
    "Keep",
]

log = logging.getLogger(__name__)

#: A memory budget must hold an exact index of this many vectors: below about this size (the tuner's smallest sample
#: plus its queries) nothing smaller than exact search can be measured, so a smaller budget fits no index at all.
BUDGET_FLOOR_VECTORS = 1_200


class Keep(enum.Enum):
    """`configure`'s default: leave this setting as it is (None has a meaning of its own)."""

    KEEP = "keep"


KEEP = Keep.KEEP


@dataclasses.dataclass(frozen=True)
class IndexSettings:
    """A change of index settings. factory: a FAISS factory string to pin (kept verbatim), None to let the engine
    choose (by size, then by measurement). search_params: applied to the resulting index. max_memory: the budget in
    bytes that the engine's choices respect, None for none. KEEP leaves a setting as it is."""

    factory: str | None | Literal[Keep.KEEP] = KEEP
    search_params: str | None = None
    max_memory: int | None | Literal[Keep.KEEP] = KEEP


class IndexPolicy:
    """Owns the collection's `VectorIndex` and the index settings of its manifest (`IndexInfo`)."""

    def __init__(self, path: Path, store: Store, info: IndexInfo, dim: int, index: VectorIndex) -> None:
        self.path = path
        self.store = store
        self.info = info
        self.dim = dim
        self.index = index
        #: Searches read the index under it, every change takes it alone (reentrant for the changing thread).
        self.guard = ReadWriteLock()
        #: The parallel map of the engine of the ingest run in progress (see `ingest.Engine`); None: this process.
        self.map_unordered: Callable[..., Iterator[Any]] | None = None
        self._on_disk_stale = False  # the store changed since the on-disk index was built

    @property
    def on_disk(self) -> bool:
        """The index is searched memory-mapped from disk (indexes.ondisk): the store's changes wait for the save
        that rebuilds it; it is never changed in place, since other processes may be searching the same file."""
        return self.index.on_disk

    # -- opening ----------------------------------------------------------------------------------------------------

    @staticmethod
    def initial_info(dim: int) -> IndexInfo:
        """The index settings of a new, empty collection: the engine chooses."""
        factory = choose_factory(0, dim)
        return IndexInfo(factory=factory, search_params=default_search_params(factory))

    @classmethod
    def load(cls, path: Path, store: Store, info: IndexInfo, dim: int) -> IndexPolicy:
        """The saved index, or one rebuilt from the store as the manifest says when the file is missing or unusable.

        An index whose sidecar is missing or stale (a crash between the two writes of a save) is of unknown type
        (""): it may be one the manifest does not name (the crash came mid-way through a change of type). A reader
        searches it as it is; the next save, by a writer or by the repair at open, rebuilds it as the manifest says.
        """
        if path.exists():
            try:
                index = VectorIndex.load(path)
                if index.dim == dim:
                    if not index.factory:
                        log.warning("index file %s has no valid sidecar: it will be rebuilt from the store", path)
                        info.generation = -1  # the repair at open rebuilds it when it can take the lock
                    return cls(path, store, info, dim, index)
                log.warning("index file %s has dimension %d, expected %d: rebuilding it", path, index.dim, dim)
            except IndexLayerError as exc:
                log.warning("index file %s is unreadable (%s): rebuilding it from the store", path, exc)
        policy = cls(path, store, info, dim, _create(dim, info.factory))
        policy._fill()
        policy._become(info.factory, info.search_params)
        info.generation = -1  # the repaired index is saved by the next writer
        return policy

    def is_current(self) -> bool:
        """The saved index agrees with the store."""
        return self.info.generation == self.store.generation and self.path.exists()

    # -- following the store ----------------------------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if self.on_disk:
            self._on_disk_stale = self._on_disk_stale or len(ids) > 0
            return
        if not self.index.is_trained:
            return  # an IVF/PQ index trains once on enough vectors; until then the store keeps them (see save)
        try:
            with self.guard.writing():
                self.index.add(ids, vectors)
        except IndexLayerError as exc:
            raise CollectionError(f"cannot add to the index: {exc}") from exc

    def remove(self, ids: np.ndarray) -> None:
        if self.on_disk:
            self._on_disk_stale = self._on_disk_stale or len(ids) > 0
            return
        try:
            with self.guard.writing():
                self.index.remove(ids)
        except IndexLayerError as exc:
            raise CollectionError(f"cannot remove from the index: {exc}") from exc

    def add_from_store(self, ids: np.ndarray, chunk: int = 8192) -> None:
        if self.on_disk:
            self.add(ids, np.empty((0, self.dim), dtype=np.float32))  # nothing to read: the rebuild reads the store
            return
        for start in range(0, len(ids), chunk):
            part = ids[start : start + chunk]
            self.add(part, self.store.vectors(part.tolist(), self.dim))

    def sync_with_store(self) -> None:
        """Make the in-memory index hold exactly the store's ids (the store is the truth), training it first when it
        waited for enough vectors and the store now has them. Changes nothing on disk."""
        with self.guard.writing():
            if not self.index.is_trained:
                self._train_when_possible()
            store_ids, index_ids = self.store.ids(), self.index.ids()
            extra = np.setdiff1d(index_ids, store_ids)
            missing = np.setdiff1d(store_ids, index_ids) if self.index.is_trained else store_ids[:0]
            if len(extra) or len(missing):
                log.info("reconciling the index with the store: %d to drop, %d to add", len(extra), len(missing))
            if len(extra):
                self.remove(extra)
            for start in range(0, len(missing), 8192):  # an id removed since the listing is skipped: it is gone
                self.add(*self.store.vectors_present(missing[start : start + 8192].tolist(), self.dim))

    # -- settings ---------------------------------------------------------------------------------------------------

    def validate(self, settings: IndexSettings) -> None:
        """Refuse settings that no index could follow, before anything is changed or saved."""
        factory, search_params, max_memory = settings.factory, settings.search_params, settings.max_memory
        if isinstance(factory, str):
            params = search_params if search_params is not None else default_search_params(factory)
            try:
                VectorIndex.create(self.dim, factory).set_search_params(params)
            except IndexLayerError as exc:
                raise CollectionError(f"bad index factory {factory!r} (search params {params!r}): {exc}") from exc
        if max_memory is KEEP or max_memory is None:
            return
        if isinstance(max_memory, bool) or not isinstance(max_memory, int) or max_memory < 1:
            raise CollectionError(f"the memory budget must be a positive number of bytes, got {max_memory!r}")

    def configure(self, settings: IndexSettings) -> None:
        """Change the index settings and bring the index in line with them in memory; nothing is written (the next
        `save` writes both). Refused settings leave settings and index as they were."""
        self.validate(settings)
        with self.guard.writing():
            self._configure(settings)

    def _configure(self, settings: IndexSettings) -> None:
        factory, search_params, max_memory = settings.factory, settings.search_params, settings.max_memory
        info = self.info
        before, index = copy.deepcopy(info), self.index
        if factory is not KEEP:
            info.auto, info.tuning = factory is None, None
            if factory is not None:
                info.factory = factory
                info.search_params = search_params if search_params is not None else default_search_params(factory)
        elif search_params is not None and not info.auto:
            info.search_params = search_params
        if max_memory is not KEEP and max_memory != info.max_memory:
            info.max_memory, info.tuning = max_memory, None  # a measurement under another budget no longer holds
        try:
            self._settle()
            if search_params is not None and info.auto:
                self._become(self.index.factory, search_params)
            if isinstance(max_memory, int):  # a budget kept from before was checked when it was set
                self._check_budget_floor(max_memory)
        except (CollectionError, IndexLayerError):
            for f in dataclasses.fields(info):
                setattr(info, f.name, getattr(before, f.name))
            self.index = index
            raise

    def _check_budget_floor(self, budget: int) -> None:
        floor = estimate_memory("Flat", BUDGET_FLOOR_VECTORS, self.dim)
        if budget < floor:
            raise CollectionError(
                f"a memory budget of {budget} bytes is too small: the index must hold at least an exact index of "
                f"{BUDGET_FLOOR_VECTORS} vectors of this model ({floor / 2**20:.1f} MiB), the fewest from which "
                "a smaller index can be measured"
            )

    # -- the entry point --------------------------------------------------------------------------------------------

    def save(self) -> None:
        """Bring the index in line with the settings and the store's size (rebuilt, chosen, tuned and checked as
        needed), write it, and record in `info` what was written and which store generation it agrees with."""
        with self.guard.writing():
            self._settle()
        with self.guard.reading():  # searches go on while the file is written
            save_index(self.index, self.path)
        self.info.generation = self.store.generation
        self.info.factory = self.index.factory
        self.info.search_params = self.index.search_params

    # -- internals --------------------------------------------------------------------------------------------------

    def _settle(self) -> None:
        info = self.info
        if self._wants_on_disk():
            self._settle_on_disk()
            return
        if not self.index.factory:  # loaded without a valid sidecar: of unknown type, so rebuilt as the manifest says
            log.info("rebuilding the index as %s from the store", info.factory)
            self._become(info.factory, info.search_params)
        if info.auto:
            self._choose()
        else:
            self._become(info.factory, info.search_params)
        self._train_when_possible()

    def _choose(self) -> None:
        """When the engine picks the factory: exact "Flat" while the size rule says so and it fits the budget;
        beyond, the index measured fastest at recall@10 >= 0.95 on a sample of the stored vectors
        (indexes.choose_index), then built and checked at full size (`index_tuning`), measured again once the
        size has changed RETUNE_GROWTH-fold. Rebuilds from the store when the choice changes."""
        info = self.info
        n = len(self.store)
        flat_fits = info.max_memory is None or estimate_memory("Flat", n, self.dim) <= info.max_memory
        if choose_factory(n, self.dim) == "Flat" and flat_fits:
            info.tuning = None
            self._become("Flat", default_search_params("Flat"))
            return
        tuning = info.tuning or {}
        tuned_n = int(tuning.get("n") or 0)
        fresh = tuned_n and tuned_n / RETUNE_GROWTH < n < tuned_n * RETUNE_GROWTH
        if fresh and tuning.get("factory") == self.index.factory:
            return
        choice = tune(self.store, self.dim, n, info.max_memory)
        info.tuning = {
            **choice.as_dict(),
            "chosen_on_sample": {"factory": choice.factory, "search_params": choice.search_params},
            "tuned_at": now_iso(),
            **build_and_check(choice, self.store, self.dim, self._become),
        }

    def _become(self, factory: str, params: str) -> VectorIndex:
        """Make the index `factory` (rebuilt from the store when it is another one, trained when it can be), apply
        `params` and return it. Every rebuild of the index happens here."""
        if factory != self.index.factory:
            log.info("collection size %d: rebuilding the index as %s", len(self.store), factory)
            self.index = _create(self.dim, factory)
            self._fill()
        if params != self.index.search_params:
            try:
                self.index.set_search_params(params)
            except IndexLayerError as exc:
                raise CollectionError(f"cannot apply the chosen search params: {exc}") from exc
        return self.index

    def _wants_on_disk(self) -> bool:
        """The engine chooses, within no budget, and the stored vectors would take too much of the memory available
        (measured now, see indexes.ondisk.should_go_on_disk). An index on disk stays there: the memory available
        changes from minute to minute, and a collection does not move in and out of memory with it."""
        info = self.info
        if not info.auto or info.max_memory is not None:
            return False
        return self.on_disk or should_go_on_disk(len(self.store), self.dim)

    def _settle_on_disk(self) -> None:
        """Build the on-disk IVF from the store (the engine's map fills its shards) when there is none, it is stale
        or the size calls for more lists, then raise nprobe until the full-size check reaches the recall goal (0.95)."""
        n = len(self.store)
        factory = on_disk_factory(n)
        if self.on_disk and not self._on_disk_stale and self.index.factory == factory:
            return
        from simsearch.scale.ondisk import build_on_disk, serial_map

        same = self.on_disk and self.index.factory == factory and self.path.exists()
        log.info("collection size %d: building the index %s on disk", n, factory)
        self.index, built = build_on_disk(
            self.store,
            self.dim,
            self.path,
            factory,
            map_unordered=self.map_unordered or serial_map,
            trained=trained_from_file(self.path) if same else None,
        )
        self._on_disk_stale = False
        built.update(check_on_disk(self.index, factory, self.store, self.dim))
        self.info.tuning = {"factory": factory, **built, "tuned_at": now_iso()}

    def _fill(self) -> None:
        """Fill a new index with every stored vector (training it first when it needs training and can be); a
        collection too large for memory gets its on-disk index instead."""
        if self._wants_on_disk():
            self._settle_on_disk()
            return
        self.add_from_store(self.store.ids())
        self._train_when_possible()

    def _train_when_possible(self, max_training: int = 100_000) -> None:
        """Train an untrained index on a sample of the stored vectors once there are enough, then fill it."""
        need = self.index.min_training_vectors
        if not need:
            return
        ids = self.store.ids()
        if len(ids) < need:
            if len(ids):
                log.warning(
                    "index %s needs %d images to train; the collection has %d: searches wait until then",
                    self.index.factory,
                    need,
                    len(ids),
                )
            return
        rng = np.random.default_rng(0)
        sample = np.sort(rng.choice(ids, size=min(len(ids), max(need, max_training)), replace=False))
        try:
            self.index.train(self.store.vectors(sample.tolist(), self.dim))
        except IndexLayerError as exc:
            raise CollectionError(f"cannot train the index: {exc}") from exc
        self.add_from_store(ids)


def _create(dim: int, factory: str) -> VectorIndex:
    try:
        return VectorIndex.create(dim, factory)
    except IndexLayerError as exc:
        raise CollectionError(f"cannot build the chosen index {factory!r}: {exc}") from exc
