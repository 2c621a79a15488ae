"""The ``Collection`` facade: one folder holding a manifest, an LMDB image store and a FAISS index that agree.

Writes go to the store first (one LMDB transaction per batch); the FAISS index is derived from the store and is
reconciled with it whenever they disagree, so a crash at any point leaves a collection that opens and is consistent.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

import numpy as np
import PIL.Image

from indexes import (
    Calibration,
    IndexLayerError,
    VectorIndex,
    calibrate,
    choose_factory,
    choose_index,
    default_search_params,
    estimate_memory,
    exact_neighbors_chunked,
    exact_scorer,
)
from simsearch.errors import CollectionError, ImageError, ModelMismatchError
from simsearch.images import DEFAULT_MAX_PIXELS, file_sha256, probe_image, scan_folder
from simsearch.manifest import IndexInfo, Manifest, ModelInfo, now_iso
from simsearch.store import ImageRecord, Store

if TYPE_CHECKING:  # torch loads only when a model is needed: `info`, `remove` and vector search stay fast
    from simsearch.models import Embedder

log = logging.getLogger(__name__)

COLLECTION_ENV = "SIMSEARCH_COLLECTION"
MANIFEST = "manifest.json"
STORE = "store.lmdb"
VECTORS = "vectors.faiss"
_SAVE_EVERY_S = 60.0  # a long run saves the index now and then, so a crash costs at most a minute of index work
#: Beyond exact search the index is chosen by measurement (indexes.choose_index) on this many stored vectors, of
#: which TUNE_QUERIES are held out as queries: ~10-30 s at 1280 dims on 2 cores, once per RETUNE_GROWTH-fold change.
TUNE_SAMPLE = 20_000
TUNE_QUERIES = 200
RETUNE_GROWTH = 4.0
#: The chosen index is checked once built over the whole collection, on this many stored vectors as queries...
CALIBRATION_QUERIES = 200
#: ...and when it misses the target there, at most this many other candidates are built and checked.
CALIBRATION_FALLBACKS = 2

ImageInput = str | os.PathLike[str] | bytes | PIL.Image.Image


def default_collection_path() -> Path:
    """``$SIMSEARCH_COLLECTION``, else ``$XDG_DATA_HOME/simsearch/default`` (``~/.local/share/simsearch/default``)."""
    env = os.environ.get(COLLECTION_ENV)
    if env:
        return Path(env).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "simsearch" / "default"


@dataclass(frozen=True)
class SearchResult:
    """One neighbour of a query; ``score`` is the cosine similarity (1.0 for the same image)."""

    rank: int
    id: int
    score: float
    path: str
    width: int
    height: int


@dataclass
class IndexReport:
    """What an indexing run did. ``embedded`` counts forward passes; ``reused`` vectors copied from equal content."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    moved: int = 0
    removed: int = 0
    skipped: int = 0
    embedded: int = 0
    reused: int = 0
    seconds: float = 0.0
    skipped_files: list[tuple[str, str]] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "moved": self.moved,
            "removed": self.removed,
            "skipped": self.skipped,
            "embedded": self.embedded,
            "reused": self.reused,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 2),
            "skipped_files": [{"path": p, "reason": r} for p, r in self.skipped_files],
        }


class Progress(Protocol):
    """Hooks an indexing run calls; the CLI draws a progress bar with them, the library stays silent."""

    def stage(self, name: str, total: int) -> None: ...
    def advance(self, count: int) -> None: ...
    def skip(self, path: str, reason: str) -> None: ...


class _Silent:
    def stage(self, name: str, total: int) -> None:
        pass

    def advance(self, count: int) -> None:
        pass

    def skip(self, path: str, reason: str) -> None:
        log.warning("skipped %s: %s", path, reason)


@dataclass
class _Candidate:
    """A file to look at: new, or changed since the store saw it."""

    path: str
    size: int
    mtime_ns: int
    sha256: str = ""
    format: str = ""
    width: int = 0
    height: int = 0
    kind: str = "added"  # or "updated": which counter to take back if decoding fails later


def load_embedder(*args: Any, **kwargs: Any) -> Embedder:
    from simsearch.models import load_embedder as load

    return load(*args, **kwargs)


def _model_info(embedder: Embedder) -> ModelInfo:
    return ModelInfo(
        id=embedder.model_id,
        weights_sha256=embedder.weights_sha256,
        spec=dict(embedder.spec),
        data_config=dict(embedder.data_config),
        dim=int(embedder.embed_dim),
    )


class Collection:
    """A searchable image collection on disk. Open one with :func:`open_collection`."""

    def __init__(
        self,
        path: Path,
        manifest: Manifest,
        store: Store,
        index: VectorIndex,
        embedder: Embedder | None,
        device: str | None,
    ) -> None:
        self.path = path
        self.manifest = manifest
        self.store = store
        self.index = index
        self._embedder = embedder
        self._device = device
        self._lock: IO[bytes] | None = None

    # -- opening ----------------------------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        model: str | None = None,
        weights: str | os.PathLike[str] | None = None,
        device: str | None = None,
        create: bool = False,
        tta: str | None = None,
    ) -> Collection:
        """Open the collection at ``path`` (default: :func:`default_collection_path`).

        With ``model``, the collection must have been built with that model (else ModelMismatchError); without it,
        the model recorded in the manifest is used, loaded on the first query that needs it. ``create`` makes a new
        collection when none is there. ``tta`` ("hflip") embeds with test-time augmentation; it is part of the
        model, so an existing collection must have been built with the same.
        """
        folder = Path(path).expanduser() if path is not None else default_collection_path()
        manifest_path = folder / MANIFEST
        embedder = None
        if tta is not None:
            from simsearch.models import check_tta

            check_tta(tta)
        if manifest_path.exists():
            manifest = Manifest.load(manifest_path)
            built_tta = manifest.model.spec.get("tta")
            if tta is not None and tta != built_tta:
                raise ModelMismatchError(
                    f"collection {folder} was built with model {manifest.model.id}, not with test-time augmentation "
                    f"{tta!r}: vectors of two models never mix; use another collection (-c)"
                )
            if model is not None or weights is not None:
                # The collection keeps its test-time augmentation: naming its model again need not repeat it.
                embedder = load_embedder(model, weights=weights, device=device, tta=built_tta)
                _check_same_model(folder, manifest.model, embedder)
        elif create:
            if folder.exists() and not folder.is_dir():
                raise CollectionError(f"{folder} exists and is not a folder")
            # Hidden leftovers (a lock file, a temporary manifest) are what a crash during creation leaves behind.
            if folder.exists() and any(not f.name.startswith(".") for f in folder.iterdir()):
                raise CollectionError(f"{folder} is not empty and holds no simsearch collection (no {MANIFEST})")
            embedder = load_embedder(model, weights=weights, device=device, tta=tta)
            folder.mkdir(parents=True, exist_ok=True)
            info = _model_info(embedder)
            factory = choose_factory(0, info.dim)
            from simsearch import __version__

            manifest = Manifest(
                model=info,
                index=IndexInfo(factory=factory, search_params=default_search_params(factory)),
                simsearch_version=__version__,
            )
            manifest.save(manifest_path)
        else:
            why = "" if folder.exists() else " (no such folder)"
            raise CollectionError(f"no simsearch collection at {folder}{why}: build one with `simsearch index DIR`")

        store = Store(folder / STORE)
        index = _load_index(folder / VECTORS, manifest)
        col = cls(folder, manifest, store, index, embedder, device)
        col._reconcile()
        return col

    # -- the model --------------------------------------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        """The collection's model, loaded on first use so that opening for search_vectors or info stays cheap."""
        if self._embedder is None:
            from simsearch.models import load_embedder_from_spec

            embedder = load_embedder_from_spec(self.manifest.model.spec, device=self._device)
            _check_same_model(self.path, self.manifest.model, embedder)
            self._embedder = embedder
        return self._embedder

    @property
    def dim(self) -> int:
        return self.manifest.model.dim

    def __len__(self) -> int:
        return len(self.store)

    # -- searching --------------------------------------------------------------------------------------------------

    def embed(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Embed query images (paths, bytes or PIL images) with the collection's model: ``(N, D) float32``."""
        from simsearch.embedding import embed_images

        return embed_images(self.embedder, images)

    def search(self, image: ImageInput, k: int = 10) -> list[SearchResult]:
        """The ``k`` images most similar to ``image`` (a path, encoded bytes or a PIL image), best first."""
        try:
            vector = self.embed([image])[0]
        except ImageError as exc:
            label = "the query image" if isinstance(image, (bytes, PIL.Image.Image)) else str(image)
            raise ImageError(f"cannot search with {label}: {exc}") from exc
        return self.search_vectors(vector, k)

    def search_vectors(self, vectors: np.ndarray, k: int = 10) -> Any:
        """Search with vectors already embedded by this collection's model.

        Args:
            vectors: ``(D,)`` for one query, or ``(Q, D)`` for several; L2-normalised float32.
            k: results per query.

        Returns:
            ``list[SearchResult]`` for a ``(D,)`` query, ``list[list[SearchResult]]`` for ``(Q, D)``.
        """
        queries = np.asarray(vectors, dtype=np.float32)
        single = queries.ndim == 1
        queries = queries.reshape(1, -1) if single else queries
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise CollectionError(
                f"query vectors must have shape (Q, {self.dim}) for this collection's model, "
                f"got {tuple(np.shape(vectors))}"
            )
        if k < 1:
            raise CollectionError(f"k must be at least 1, got {k}")
        if not self.index.is_trained:
            raise CollectionError(
                f"the {self.index.factory} index trains once the collection holds "
                f"{self.index.min_training_vectors} images; it holds {len(self.store)}"
            )
        try:
            scores, ids = self.index.search(queries, k)
        except IndexLayerError as exc:
            raise CollectionError(str(exc)) from exc
        found = ids[ids >= 0]
        records = dict(zip(found.tolist(), self.store.get_many(found.tolist()), strict=True))
        results = []
        for row_scores, row_ids in zip(scores, ids, strict=True):
            row: list[SearchResult] = []
            for score, image_id in zip(row_scores.tolist(), row_ids.tolist(), strict=True):
                record = records.get(image_id)
                if image_id < 0 or record is None:
                    continue
                row.append(
                    SearchResult(
                        rank=len(row) + 1,
                        id=image_id,
                        score=float(score),
                        path=record.path,
                        width=record.width,
                        height=record.height,
                    )
                )
            results.append(row)
        return results[0] if single else results

    def thumbnail(self, image_id: int) -> bytes | None:
        """The JPEG preview (longest side <= 256 px) kept in the store."""
        return self.store.thumbnail(image_id)

    def get(self, image_id: int) -> ImageRecord | None:
        return self.store.get(image_id)

    # -- writing ----------------------------------------------------------------------------------------------------

    def index_folder(
        self,
        folder: str | os.PathLike[str],
        *,
        batch_size: int = 32,
        workers: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        progress: Progress | None = None,
    ) -> IndexReport:
        """Bring the collection in line with ``folder``: embed new and changed images, follow moved ones, drop
        entries of files that are gone from it. Entries outside ``folder`` are left alone."""
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise CollectionError(f"not a folder: {root}")
        root = root.resolve()
        unreadable: list[Path] = []
        return self._ingest(
            scan_folder(root, unreadable=unreadable),
            root=str(root),
            unreadable=unreadable,
            batch_size=batch_size,
            workers=workers,
            max_pixels=max_pixels,
            progress=progress or _Silent(),
        )

    def add(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        batch_size: int = 32,
        workers: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        progress: Progress | None = None,
    ) -> IndexReport:
        """Add (or refresh) image files; a folder among ``paths`` adds what it holds. Removes nothing."""
        files: list[Path] = []
        for p in paths:
            path = Path(p).expanduser()
            if path.is_dir():
                files.extend(scan_folder(path))
            elif path.exists():
                files.append(path.resolve())
            else:
                raise CollectionError(f"no such file: {path}")
        return self._ingest(
            files,
            root=None,
            batch_size=batch_size,
            workers=workers,
            max_pixels=max_pixels,
            progress=progress or _Silent(),
        )

    def remove(self, items: Iterable[int | str | os.PathLike[str]]) -> list[ImageRecord]:
        """Remove images by id, by path, or every image under a folder path. Returns what was removed."""
        self._acquire_lock()
        doomed: dict[int, ImageRecord] = {}
        for item in items:
            if isinstance(item, (int, np.integer)):
                record = self.store.get(int(item))
                if record is not None:
                    doomed[record.id] = record
                continue
            path = Path(item).expanduser().absolute()
            candidates = [str(path), str(path.resolve())]
            found = False
            for p in candidates:
                image_id = self.store.id_for_path(p)
                if image_id is not None:
                    record = self.store.get(image_id)
                    if record is not None:
                        doomed[image_id] = record
                        found = True
                for record in self.store.records_under(p).values():
                    doomed[record.id] = record
                    found = True
            if not found:
                log.info("not in the collection: %s", path)
        if doomed:
            with self.store.write() as batch:
                for image_id in doomed:
                    batch.delete(image_id)
            self._index_remove(np.fromiter(doomed, dtype=np.int64))
            self._save()
        return list(doomed.values())

    def set_index_factory(self, factory: str | None, search_params: str | None = None) -> None:
        """Pin the FAISS index type (a factory string kept verbatim), or ``None`` to let the engine choose again (by
        size, then by measurement). A change rebuilds the index from the stored vectors: nothing is embedded again."""
        self._acquire_lock()
        self.manifest.index.auto = factory is None
        self.manifest.index.tuning = None
        if factory is None:
            self._save()  # chooses, and rebuilds when the choice differs from the current index
            if search_params is not None:
                self.index.set_search_params(search_params)
                self._save()
            return
        wanted = factory or choose_factory(len(self.store), self.dim)
        if wanted != self.index.factory:
            try:
                fresh = VectorIndex.create(self.dim, wanted)
            except IndexLayerError as exc:
                raise CollectionError(f"bad index factory {wanted!r}: {exc}") from exc
            self.index = fresh
            self._index_add_from_store(self.store.ids())
        self.index.set_search_params(search_params if search_params is not None else default_search_params(wanted))
        self._save()

    def set_max_memory(self, budget: int | None) -> None:
        """Set (or clear, with ``None``) the index's memory budget in bytes; it is kept in the manifest, and the
        engine's next choice of index (now, when the factory is not pinned) respects it."""
        if budget is not None and budget < 1:
            raise CollectionError(f"the memory budget must be a positive number of bytes, got {budget}")
        if budget == self.manifest.index.max_memory:
            return
        self._acquire_lock()
        self.manifest.index.max_memory = budget
        self.manifest.index.tuning = None  # measured under another budget
        self._save()

    def close(self) -> None:
        self._release_lock()
        self.store.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- information ------------------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        files = [self.path / MANIFEST, self.path / VECTORS]
        disk = sum(f.stat().st_size for f in files if f.exists()) + self.store.disk_bytes()
        return {
            "path": str(self.path),
            "model": self.manifest.model.id,
            "weights_sha256": self.manifest.model.weights_sha256,
            "dim": self.dim,
            "metric": self.manifest.metric,
            "images": len(self.store),
            "index_factory": self.manifest.index.factory,
            "index_auto": self.manifest.index.auto,
            "search_params": self.manifest.index.search_params,
            "index_max_memory": self.manifest.index.max_memory,
            "index_recall_at_10": (self.manifest.index.tuning or {}).get("recall_at_10"),
            "index_on_gpu": self.index.on_gpu,
            "disk_bytes": disk,
            "created": self.manifest.created,
            "updated": self.manifest.updated,
        }

    # -- internals --------------------------------------------------------------------------------------------------

    def _acquire_lock(self) -> None:
        """One writer per collection: LMDB would serialise transactions, but the index file would be overwritten.

        A writer keeps the lock until it closes. On taking it, the in-memory index is brought in line with the store,
        since another process may have written since this one opened the collection.
        """
        if self._lock is not None:
            return
        handle = open(self.path / ".lock", "wb")  # noqa: SIM115 - held until close() or _release_lock()
        try:
            # A POSIX record lock belongs to this process alone: forked decode workers do not inherit it, so workers
            # orphaned by a killed `index` cannot keep the collection locked (an flock would be shared with them).
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError) as exc:
            handle.close()
            raise CollectionError(
                f"another simsearch process is writing to {self.path}; try again when it ends"
            ) from exc
        self._lock = handle
        self._sync_index()

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the lock
            self._lock = None

    def _try_lock(self) -> bool:
        try:
            self._acquire_lock()
            return True
        except (CollectionError, OSError):
            return False

    def _sync_index(self) -> None:
        """Make the in-memory index hold exactly the store's ids (the store is the truth)."""
        store_ids, index_ids = self.store.ids(), self.index.ids()
        extra = np.setdiff1d(index_ids, store_ids)
        missing = np.setdiff1d(store_ids, index_ids)
        if len(extra) or len(missing):
            log.info("reconciling the index with the store: %d to drop, %d to add", len(extra), len(missing))
        if len(extra):
            self._index_remove(extra)
        self._index_add_from_store(missing)

    def _reconcile(self) -> None:
        """At open: repair an index that disagrees with the store, and persist the repair when no writer is busy.

        A reader that only took the lock to save the repair gives it back at once, so that a long-lived searcher
        never keeps `simsearch index` out.
        """
        if self.manifest.index.generation == self.store.generation and (self.path / VECTORS).exists():
            return
        if self._try_lock():  # taking the lock syncs the index
            self._save()
            self._release_lock()
        else:
            self._sync_index()  # another process is writing: repair in memory only

    def _index_add_from_store(self, ids: np.ndarray, chunk: int = 8192) -> None:
        for start in range(0, len(ids), chunk):
            part = ids[start : start + chunk]
            self._index_add(part, self.store.vectors(part.tolist(), self.dim))

    def _index_add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if not self.index.is_trained:
            return  # an IVF/PQ index trains once on enough vectors; until then the store keeps them (see _save)
        try:
            self.index.add(ids, vectors)
        except IndexLayerError as exc:
            raise CollectionError(f"cannot add to the index: {exc}") from exc

    def _index_remove(self, ids: np.ndarray) -> None:
        try:
            self.index.remove(ids)
        except IndexLayerError as exc:
            raise CollectionError(f"cannot remove from the index: {exc}") from exc

    def _save(self) -> None:
        """Write the index file, then the manifest that says which store generation it agrees with."""
        if not self.index.factory:  # loaded without a valid sidecar: of unknown type, so rebuilt as the manifest says
            factory, params = _buildable(self.manifest, self.dim)
            log.info("rebuilding the index as %s from the store", factory)
            self._use_index(factory, params)
        self._maybe_change_factory()
        self._train_when_possible()
        self.index.save(self.path / VECTORS)
        self.manifest.index.generation = self.store.generation
        self.manifest.index.factory = self.index.factory
        self.manifest.index.search_params = self.index.search_params
        self.manifest.count = len(self.store)
        self.manifest.updated = now_iso()
        self.manifest.save(self.path / MANIFEST)

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
        self._index_add_from_store(ids)

    def _maybe_change_factory(self) -> None:
        """When the engine picks the factory: exact "Flat" while the size rule says so and it fits the budget;
        beyond, the index measured fastest at recall@10 >= 0.95 on a sample of the stored vectors
        (indexes.choose_index), then built and checked at full size (`_build_and_check`), measured again once the
        size has changed RETUNE_GROWTH-fold. Rebuilds from the store when the choice changes."""
        info = self.manifest.index
        if not info.auto:
            return
        n = len(self.store)
        flat_fits = info.max_memory is None or estimate_memory("Flat", n, self.dim) <= info.max_memory
        if choose_factory(n, self.dim) == "Flat" and flat_fits:
            info.tuning = None
            self._use_index("Flat", default_search_params("Flat"))
            return
        tuning = info.tuning or {}
        tuned_n = int(tuning.get("n") or 0)
        if (
            tuned_n
            and tuned_n / RETUNE_GROWTH < n < tuned_n * RETUNE_GROWTH
            and tuning.get("factory") == self.index.factory
        ):
            return
        choice = self._tune(n, info.max_memory)
        info.tuning = {
            **choice.as_dict(),
            "chosen_on_sample": {"factory": choice.factory, "search_params": choice.search_params},
            "tuned_at": now_iso(),
            **self._build_and_check(choice),
        }

    def _use_index(self, factory: str, params: str) -> None:
        """Make the index `factory` (rebuilt from the store when it is another one, trained when it can be) and
        apply `params`."""
        if factory != self.index.factory:
            log.info("collection size %d: rebuilding the index as %s", len(self.store), factory)
            try:
                self.index = VectorIndex.create(self.dim, factory)
            except IndexLayerError as exc:
                raise CollectionError(f"cannot build the chosen index {factory!r}: {exc}") from exc
            self._index_add_from_store(self.store.ids())
            self._train_when_possible()
        if params != self.index.search_params:
            try:
                self.index.set_search_params(params)
            except IndexLayerError as exc:
                raise CollectionError(f"cannot apply the chosen search params: {exc}") from exc

    def _build_and_check(self, choice: Any) -> dict[str, Any]:
        """Build the tuner's choice over the whole collection and measure its recall@10 there, on CALIBRATION_QUERIES
        stored vectors left out of their own results, raising nprobe/efSearch until it reaches the target; when it
        cannot, try the next candidates that reached the target on the sample (at most CALIBRATION_FALLBACKS), and
        keep the best. Returns what goes into the manifest's tuning record: the final factory and params, and
        every check."""
        options = [(choice.factory, choice.search_params)]
        options += [(a["factory"], a["search_params"]) for a in choice.alternatives[:CALIBRATION_FALLBACKS]]
        if not choice.measured:
            self._use_index(choice.factory, choice.search_params)
            return {}
        queries, own, truth = self._calibration_queries()
        scores = (
            None if queries is None else exact_scorer(queries, lambda ids: self.store.vectors(ids.tolist(), self.dim))
        )
        checks: list[Calibration] = []
        for factory, params in options:
            self._use_index(factory, params)
            if not self.index.is_trained or queries is None:
                return {}  # nothing to measure yet (an IVF waiting for training vectors)
            check = calibrate(self.index, factory, params, queries, truth, own=own, exact_scores=scores)
            log.info("full-size check of %s: %s gives recall@10 %.3f", factory, check.search_params, check.recall_at_10)
            checks.append(check)
            if check.reached:
                break
        best = next((c for c in checks if c.reached), None) or max(checks, key=lambda c: c.recall_at_10)
        if not best.reached:
            log.warning(
                "no candidate index reached recall@10 %.2f on the whole collection; keeping %s %s at %.3f",
                choice.target_recall,
                best.factory,
                best.search_params,
                best.recall_at_10,
            )
        self._use_index(best.factory, best.search_params)
        return {
            "factory": best.factory,
            "search_params": best.search_params,
            "full_size_recall_at_10": best.recall_at_10,
            "full_size_checks": [c.as_dict() for c in checks],
        }

    def _calibration_queries(self) -> tuple[Any, Any, Any]:
        """(queries, their ids, leave-one-out exact top-10 ids) for CALIBRATION_QUERIES seeded stored vectors; the
        ground truth streams the store in chunks, so the collection is never held twice in memory."""
        ids = self.store.ids()
        if len(ids) <= 11:
            return None, None, None
        rng = np.random.default_rng(1)
        own = np.sort(rng.choice(ids, size=min(len(ids) // 2, CALIBRATION_QUERIES), replace=False))
        queries = self.store.vectors(own.tolist(), self.dim)
        chunks = (
            (part, self.store.vectors(part.tolist(), self.dim))
            for part in (ids[i : i + 50_000] for i in range(0, len(ids), 50_000))
        )
        return queries, own, exact_neighbors_chunked(queries, chunks, 10, exclude=own)

    def _tune(self, n: int, budget: int | None) -> Any:
        """Measure the candidate indexes on up to TUNE_SAMPLE stored vectors (a seeded sample)."""
        ids = self.store.ids()
        rng = np.random.default_rng(0)
        sample = np.sort(rng.choice(ids, size=min(len(ids), TUNE_SAMPLE), replace=False))
        log.info("choosing the index for %d vectors by measurement on %d of them", n, len(sample))
        try:
            choice = choose_index(
                self.store.vectors(sample.tolist(), self.dim), n, max_memory=budget, n_queries=TUNE_QUERIES
            )
        except IndexLayerError as exc:
            raise CollectionError(f"cannot choose an index: {exc}") from exc
        log.info(
            "index chosen: %s %s (recall@10 %s, %s queries/s, %d bytes)",
            choice.factory,
            choice.search_params,
            choice.recall_at_10,
            choice.qps,
            choice.memory_bytes,
        )
        return choice

    def _ingest(
        self,
        files: Iterable[Path],
        *,
        root: str | None,
        batch_size: int,
        workers: int | None,
        max_pixels: int,
        progress: Progress,
        unreadable: list[Path] | None = None,
    ) -> IndexReport:
        self._acquire_lock()
        started = time.perf_counter()
        report = IndexReport()
        known = self.store.records_under(root) if root is not None else {}
        known_skips = self.store.skipped_under(root) if root is not None else {}
        seen: set[str] = set()
        candidates: list[_Candidate] = []
        self._new_skips: list[tuple[_Candidate, str]] = []
        for path in files:
            p = str(path)
            seen.add(p)
            try:
                st = os.stat(p)
            except OSError as exc:
                self._skip(report, progress, p, f"cannot stat: {exc.strerror or exc}")
                continue
            old = known.get(p) if root is not None else self._record_for_path(p)
            if old is not None and old.size == st.st_size and old.mtime_ns == st.st_mtime_ns:
                report.unchanged += 1
                continue
            bad = known_skips.get(p) if root is not None else self.store.skipped(p)
            # Remembered only while the file and the pixel limit it was refused under stay the same.
            if bad is not None and (bad.size, bad.mtime_ns, bad.max_pixels) == (st.st_size, st.st_mtime_ns, max_pixels):
                self._skip(report, progress, p, bad.reason)  # unchanged since a run found it unreadable
                continue
            candidates.append(_Candidate(p, st.st_size, st.st_mtime_ns))

        self._probe_and_hash(candidates, report, progress, max_pixels)
        # Files under a folder that could not be listed this time are not gone: only unseen.
        hidden = tuple(str(f).rstrip(os.sep) + os.sep for f in unreadable or ())
        gone = {p: r for p, r in known.items() if p not in seen and not p.startswith(hidden)}
        to_embed = self._plan(candidates, gone, report)
        self._embed_and_store(to_embed, report, progress, batch_size, workers, max_pixels)
        with self.store.write() as batch:
            for c, reason in self._new_skips:
                batch.skip(c.path, c.size, c.mtime_ns, reason, max_pixels=max_pixels)
            for p in known_skips.keys() - seen:
                batch.forget_skip(p)  # the bad file is gone
        self._save()
        report.seconds = time.perf_counter() - started
        return report

    def _record_for_path(self, path: str) -> ImageRecord | None:
        image_id = self.store.id_for_path(path)
        return None if image_id is None else self.store.get(image_id)

    def _skip(
        self, report: IndexReport, progress: Progress, path: str, reason: str, candidate: _Candidate | None = None
    ) -> None:
        """Count and report a skipped file; with its `candidate`, also remember it so the next run need not read it."""
        if candidate is not None:
            self._new_skips.append((candidate, reason))
        report.skipped += 1
        report.skipped_files.append((path, reason))
        progress.skip(path, reason)

    def _probe_and_hash(
        self, candidates: list[_Candidate], report: IndexReport, progress: Progress, max_pixels: int
    ) -> None:
        """Read headers and content hashes of new or changed files (threads: hashing releases the GIL)."""

        def look(c: _Candidate) -> tuple[str, bool] | None:
            """None, or why the file is skipped and whether the cause is I/O (an errno), worth another try."""
            try:
                c.format, c.width, c.height = probe_image(c.path, max_pixels=max_pixels)
                c.sha256 = file_sha256(c.path)
                return None
            except ImageError as exc:
                cause = exc.__cause__
                return str(exc), isinstance(cause, OSError) and cause.errno is not None
            except OSError as exc:
                return f"unreadable: {exc.strerror or exc}", True

        progress.stage("hashing", len(candidates))
        with ThreadPoolExecutor(max_workers=4) as pool:
            for c, error in zip(candidates, pool.map(look, candidates), strict=True):
                progress.advance(1)
                if error is not None:
                    c.sha256 = ""  # unusable even if the hash was read
                    reason, io_error = error
                    # An I/O failure (permissions, a flaky mount) says nothing of the file: not remembered, retried.
                    self._skip(report, progress, c.path, reason, None if io_error else c)
        unreadable = [c.path for c in candidates if not c.sha256]
        candidates[:] = [c for c in candidates if c.sha256]
        # A file that was an image and no longer reads as one loses its entry: its old vector describes nothing.
        stale = [r for r in (self._record_for_path(p) for p in unreadable) if r is not None]
        if stale:
            with self.store.write() as batch:
                for record in stale:
                    batch.delete(record.id)
            self._index_remove(np.asarray([r.id for r in stale], dtype=np.int64))
            report.removed += len(stale)

    def _plan(
        self, candidates: list[_Candidate], gone: dict[str, ImageRecord], report: IndexReport
    ) -> dict[str, list[_Candidate]]:
        """Settle what needs no forward pass (touched, moved, known content) in one transaction; return the rest
        grouped by content hash, so equal files are embedded once.

        The batch's writes land only at commit, so every read here sees the store as it was before the run: a file
        may take its vector from an entry that this same batch deletes (swapped or renamed-over files).
        """
        gone_by_sha: dict[str, list[ImageRecord]] = {}
        for record in gone.values():
            gone_by_sha.setdefault(record.sha256, []).append(record)
        to_embed: dict[str, list[_Candidate]] = {}
        removed_ids: list[int] = []
        reuse: list[tuple[_Candidate, np.ndarray, bytes | None]] = []  # (new file, copied vector, thumbnail)
        with self.store.write() as batch:
            for c in candidates:
                old = self._record_for_path(c.path)
                if old is not None and old.sha256 == c.sha256:
                    batch.update(_record(old.id, c))  # touched, not changed
                    report.unchanged += 1
                    continue
                if old is not None:
                    batch.delete(old.id)  # content changed: its old entry goes
                    removed_ids.append(old.id)
                if gone_by_sha.get(c.sha256):  # a file that left its path arrived here: it keeps id and vector
                    moved = gone_by_sha[c.sha256].pop()
                    del gone[moved.path]
                    batch.update(_record(moved.id, c))
                    report.moved += 1
                    if old is not None:
                        report.removed += 1  # what this path held before is gone
                    continue
                if old is not None:
                    report.updated += 1
                    c.kind = "updated"
                else:
                    report.added += 1
                same = self.store.ids_for_sha256(c.sha256)
                if same:
                    vector = self.store.vectors(same[:1], self.dim)[0]
                    reuse.append((c, vector, self.store.thumbnail(same[0])))
                else:
                    to_embed.setdefault(c.sha256, []).append(c)
            for record in gone.values():
                batch.delete(record.id)
                removed_ids.append(record.id)
                report.removed += 1
            new_ids = batch.new_ids(len(reuse)) if reuse else []
            for (c, vector, thumb), new_id in zip(reuse, new_ids, strict=True):
                batch.add(_record(new_id, c), vector, thumb)
        if removed_ids:
            self._index_remove(np.asarray(removed_ids, dtype=np.int64))
        if reuse:
            self._index_add(np.asarray(new_ids, dtype=np.int64), np.stack([v for _, v, _ in reuse]))
            report.reused += len(reuse)
        return to_embed

    def _embed_and_store(
        self,
        groups: dict[str, list[_Candidate]],
        report: IndexReport,
        progress: Progress,
        batch_size: int,
        workers: int | None,
        max_pixels: int,
    ) -> None:
        if not groups:
            return
        from simsearch.embedding import embed_files

        firsts = [files[0] for files in groups.values()]
        progress.stage("embedding", len(firsts))
        last_save = time.monotonic()
        for out in embed_files(
            self.embedder, [c.path for c in firsts], batch_size=batch_size, workers=workers, max_pixels=max_pixels
        ):
            for position, reason in out.failures:
                for c in groups[firsts[position].sha256]:
                    self._skip(report, progress, c.path, reason, c)
                    setattr(report, c.kind, getattr(report, c.kind) - 1)  # the plan counted it; it did not happen
                    if c.kind == "updated":
                        report.removed += 1  # the plan deleted its old entry, and nothing replaced it
            rows: list[tuple[_Candidate, np.ndarray, bytes | None]] = []
            for position, vector, thumb in zip(out.positions, out.vectors, out.thumbnails, strict=True):
                rows.extend((c, vector, thumb) for c in groups[firsts[position].sha256])
            if rows:
                with self.store.write() as batch:
                    ids = batch.new_ids(len(rows))
                    for (c, vector, thumb), new_id in zip(rows, ids, strict=True):
                        batch.add(_record(new_id, c), vector, thumb)
                self._index_add(np.asarray(ids, dtype=np.int64), np.stack([v for _, v, _ in rows]))
            report.embedded += len(out.positions)
            report.reused += len(rows) - len(out.positions)
            progress.advance(len(out.positions) + len(out.failures))
            if time.monotonic() - last_save > _SAVE_EVERY_S:
                self._save()
                last_save = time.monotonic()


def _record(image_id: int, c: _Candidate) -> ImageRecord:
    return ImageRecord(
        id=image_id,
        path=c.path,
        size=c.size,
        mtime_ns=c.mtime_ns,
        sha256=c.sha256,
        width=c.width,
        height=c.height,
        format=c.format,
    )


def _check_same_model(folder: Path, built: ModelInfo, embedder: Embedder) -> None:
    """Refuse a model whose vectors would not mix with the collection's.

    A model is its id and weights, and also its preprocessing and output size: a timm tag or a checkpoint's
    config.json sets the data config without changing either. A checkpoint is its weights, architecture and config,
    not the name of its folder: a moved or renamed copy is accepted, and its new place replaces the old one in
    `built` (so in the manifest from the collection's next write), as a weights file's new place does.
    """
    from simsearch.models.embedder import data_config_differences

    built_tta = built.spec.get("tta")
    # An id is partly a folder name, so the test-time augmentation is compared on its own too.
    tta = "" if built_tta == embedder.tta else f", test-time augmentation {built_tta} not {embedder.tta}"
    same_id = (
        built.id == embedder.model_id
        or _same_checkpoint_arch(built.spec, embedder.spec)
        or _hub_name_of(built.spec, embedder.spec)
    )
    if tta or not same_id or built.weights_sha256 != embedder.weights_sha256:
        raise ModelMismatchError(
            f"collection {folder} was built with model {built.id} (weights {built.weights_sha256[:12]}), not "
            f"{embedder.model_id} (weights {embedder.weights_sha256[:12]}){tta}: vectors of two models never mix; "
            "use another collection (-c) or the model it was built with"
        )
    differences = [] if built.dim == embedder.embed_dim else [f"dim {built.dim} not {embedder.embed_dim}"]
    differences += data_config_differences(built.data_config, embedder.data_config)
    if differences:
        raise ModelMismatchError(
            f"collection {folder} was built with model {built.id} (weights {built.weights_sha256[:12]}), whose "
            f"preprocessing or size differs now: {', '.join(differences)}: vectors of two models never mix; "
            "use another collection (-c) or the model it was built with"
        )
    if built.id != embedder.model_id or built.spec.get("path") != embedder.spec.get("path"):
        # A moved checkpoint, or a hub model under its repo name: the manifest keeps what the model is called now.
        built.id = embedder.model_id
        built.spec = {**built.spec, **{k: embedder.spec[k] for k in ("name", "path") if k in embedder.spec}}


def _hub_name_of(built: dict[str, Any], spec: dict[str, Any]) -> bool:
    """Both specs are timm models and one names a Hugging Face hub repo: earlier versions recorded a hub model under
    the architecture and tag of its config, so with the same weights the two names are one model."""
    names = (str(built.get("name", "")), str(spec.get("name", "")))
    return built.get("kind") == spec.get("kind") == "timm" and any(n.startswith("hf-hub:") for n in names)


def _same_checkpoint_arch(built: dict[str, Any], spec: dict[str, Any]) -> bool:
    """Both specs are simsearch checkpoints of one architecture (their ids differ by folder name only)."""
    return built.get("kind") == spec.get("kind") == "checkpoint" and built.get("name") == spec.get("name")


def _load_index(path: Path, manifest: Manifest) -> VectorIndex:
    """The saved index, or a new empty one of the manifest's type that the next reconcile fills from the store.

    An index whose sidecar is missing or stale (a crash between the two writes of a save) is of unknown type (""): it
    may be one the manifest does not name (the crash came mid-way through a change of type). A reader searches it as
    it is; the next save, by a writer or by the repair at open, rebuilds it as the manifest says (`_save`).
    """
    if path.exists():
        try:
            index = VectorIndex.load(path)
            if index.dim == manifest.model.dim:
                if not index.factory:
                    log.warning("index file %s has no valid sidecar: it will be rebuilt from the store", path)
                    manifest.index.generation = -1  # the repair at open rebuilds it when it can take the lock
                return index
            log.warning(
                "index file %s has dimension %d, expected %d: rebuilding it", path, index.dim, manifest.model.dim
            )
        except IndexLayerError as exc:
            log.warning("index file %s is unreadable (%s): rebuilding it from the store", path, exc)
    factory, params = _buildable(manifest, manifest.model.dim)
    index = VectorIndex.create(manifest.model.dim, factory)
    if params:
        index.set_search_params(params)
    manifest.index.generation = -1  # force a reconcile: the store is the truth
    return index


def _buildable(manifest: Manifest, dim: int) -> tuple[str, str]:
    """The manifest's index factory and search params, or exact search chosen by the engine when this version no
    longer builds that factory (e.g. a PCA stage, refused since): a collection must still open."""
    factory, params = manifest.index.factory, manifest.index.search_params
    try:
        VectorIndex.create(dim, factory).set_search_params(params)
    except IndexLayerError as exc:
        log.warning(
            "the collection's index type %r cannot be built (%s): using exact search, chosen by size", factory, exc
        )
        manifest.index.auto, manifest.index.tuning = True, None
        return "Flat", default_search_params("Flat")
    return factory, params


def open_collection(path: str | os.PathLike[str] | None = None, **kwargs: Any) -> Collection:
    """Open an existing collection (see :meth:`Collection.open` for the keyword arguments)."""
    return Collection.open(path, **kwargs)
