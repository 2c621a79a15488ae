"""The `Collection` facade: open, search, add, remove, configure and describe a collection, delegating each concern
to the module that owns it (see the package docstring).

An open collection is live: it sees what other processes commit (see `live`), and many threads may search it at once
while one of them writes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np
import PIL.Image

from indexes import VectorIndex
from simsearch.collection import identity
from simsearch.collection.index_policy import KEEP, IndexPolicy, IndexSettings, Keep
from simsearch.collection.ingest import Engine, IngestRun, Progress, folder_files, listed_files
from simsearch.collection.layout import MANIFEST, STORE, VECTORS, remove_new_collection, resolve_folder
from simsearch.collection.opening import Opening, read_or_make
from simsearch.collection.results import CollectionInfo, IndexReport, SearchResult
from simsearch.collection.searching import Searcher, warmup
from simsearch.collection.store import ImageRecord, Store
from simsearch.collection.writing import WriteAccess
from simsearch.errors import ImageError
from simsearch.images import DEFAULT_MAX_PIXELS
from simsearch.scanning import ScanScope, ScanTally

if TYPE_CHECKING:  # torch loads only when a model is needed: `info`, `remove` and vector search stay fast
    from simsearch.models import Embedder


ImageInput = str | os.PathLike[str] | bytes | PIL.Image.Image
#: One query vector (D,) and a batch of them (Q, D); `search_vectors` answers a list, or a list of lists.
QueryVector = np.ndarray[tuple[int], np.dtype[Any]]
QueryMatrix = np.ndarray[tuple[int, int], np.dtype[Any]]
#: Ids to leave out of results, and a dict that a search adds its stage timings to (seconds by stage).
Ids = Iterable[int] | None
Timings = dict[str, float] | None


class Collection:
    """A searchable image collection on disk. Open one with :func:`open_collection`.

    Kept open, it follows the commits of other processes: images they add become searchable and images they remove
    disappear from the next search on (the store's generation is checked before each search). Searching from many
    threads at once is safe (they share the index under a readers-writer lock); a write of this process holds the
    searches off only while it changes the index in memory.
    """

    def __init__(self, path: Path, opening: Opening, store: Store, policy: IndexPolicy, device: str | None) -> None:
        self.path = path
        self.manifest = opening.manifest
        self.store = store
        self._policy = policy
        self._embedder = opening.embedder
        self._device = device
        self._made_folder = opening.made_folder
        self._writing = WriteAccess(path, self.manifest, store, policy, opening.on_disk_version)
        self._follower = self._writing.follower
        self._searcher = Searcher(self._follower)

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
        readonly: bool = False,
    ) -> Collection:
        """Open the collection at ``path`` (default: :func:`default_collection_path`).

        With ``model``, the collection must have been built with that model (else ModelMismatchError); without it,
        the model recorded in the manifest is used, loaded on the first query that needs it. ``create`` makes a new
        collection when none is there. ``tta`` ("hflip") embeds with test-time augmentation; it is part of the
        model, so an existing collection must have been built with the same. A collection of an older format is
        read through its upgrade, and upgraded on disk by its first write.

        ``readonly`` opens it for searching only, and nothing is written, ever: the store is opened read-only (LMDB
        touches at most its own lock file, and not even that on a read-only file system), an index that disagrees
        with the store is repaired in memory only (the next writer saves the repair), no format upgrade and no
        clean-up of temporary files happen, and writes raise ReadOnlyCollectionError. It works on a read-only
        mount. Without it, an index repaired at open is saved when no other process is writing.
        """
        folder = resolve_folder(path)
        opening = read_or_make(folder, model, weights, device, tta, create=create, readonly=readonly)
        manifest, made = opening.manifest, opening.made_folder
        store: Store | None = None
        try:
            if made is not None:
                manifest.save(folder / MANIFEST)
            store = Store(folder / STORE, readonly=readonly)
            policy = IndexPolicy.load(folder / VECTORS, store, manifest.index, manifest.model.dim)
            col = cls(folder, opening, store, policy, device)
            col._writing.reconcile()
        except BaseException:
            if store is not None:
                store.close()
            if made is not None:
                remove_new_collection(folder, made)
            raise
        return col

    # -- the model --------------------------------------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        """The collection's model, loaded on first use so that opening for search_vectors or info stays cheap."""
        if self._embedder is None:
            self._embedder = identity.recorded_model(self.path, self.manifest.model, self._device)
        return self._embedder

    @property
    def dim(self) -> int:
        return self.manifest.model.dim

    @property
    def index(self) -> VectorIndex:
        """The FAISS index as it is in memory (owned by the index policy)."""
        return self._policy.index

    def __len__(self) -> int:
        return len(self.store)

    # -- searching --------------------------------------------------------------------------------------------------

    def embed(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Embed query images (paths, bytes or PIL images) with the collection's model: ``(N, D) float32``."""
        from simsearch.embedding import embed_images

        for image in images:
            if isinstance(image, (int, np.integer)):  # never read as a file descriptor
                raise ImageError(f"not a file path: the int {image} (search from a stored image by id with search_id)")
        return embed_images(self.embedder, images)

    def search(self, image: ImageInput, k: int = 10, *, exclude_ids: Ids = None) -> list[SearchResult]:
        """The ``k`` images most similar to ``image`` (a path, encoded bytes or a PIL image), best first, leaving
        ``exclude_ids`` out. An int is no image: search from a stored image by its id with `search_id`."""
        try:
            vector = self.embed([image])[0]
        except ImageError as exc:
            label = "the query image" if isinstance(image, (bytes, PIL.Image.Image)) else str(image)
            raise ImageError(f"cannot search with {label}: {exc}") from exc
        return self.search_vectors(vector, k, exclude_ids=exclude_ids)

    @overload
    def search_vectors(
        self, vectors: QueryVector, k: int = 10, *, exclude_ids: Ids = None, timings: Timings = None
    ) -> list[SearchResult]: ...
    @overload
    def search_vectors(
        self, vectors: QueryMatrix, k: int = 10, *, exclude_ids: Ids = None, timings: Timings = None
    ) -> list[list[SearchResult]]: ...
    @overload
    def search_vectors(
        self, vectors: np.ndarray | Sequence[Any], k: int = 10, *, exclude_ids: Ids = None, timings: Timings = None
    ) -> list[SearchResult] | list[list[SearchResult]]: ...

    def search_vectors(
        self, vectors: np.ndarray | Sequence[Any], k: int = 10, *, exclude_ids: Ids = None, timings: Timings = None
    ) -> list[SearchResult] | list[list[SearchResult]]:
        """Search with vectors already embedded by this collection's model.

        Args:
            vectors: ``(D,)`` for one query, or ``(Q, D)`` for several; L2-normalised float32.
            k: results per query; a list is ``k`` long whenever the collection holds ``k`` images besides the
                excluded ones.
            exclude_ids: ids left out of every list (ranks count after them).
            timings: when given, the seconds spent in the index ("search") and in the store ("store") are added.

        Returns:
            ``list[SearchResult]`` for a ``(D,)`` query, ``list[list[SearchResult]]`` for ``(Q, D)``.
        """
        return self._searcher.search_vectors(vectors, k, exclude_ids, timings)  # type: ignore[no-any-return]

    def search_id(
        self, image_id: int, k: int = 10, *, exclude_self: bool = True, exclude_ids: Ids = None, timings: Timings = None
    ) -> list[SearchResult]:
        """The ``k`` images most similar to the stored image ``image_id`` (itself left out with ``exclude_self``).
        No model is needed: the query is the vector stored for it. UnknownImageError for an id it does not hold."""
        return self._searcher.search_id(image_id, k, exclude_self, exclude_ids, timings)

    def vector(self, image_id: int) -> np.ndarray:
        """The vector stored for ``image_id``: ``(D,) float32``, L2-normalised (UnknownImageError if none)."""
        return self._searcher.vector(image_id)

    def warmup(self, batch_sizes: Iterable[int] = (1,)) -> dict[str, float]:
        """Load the model and run one forward pass per batch size, then one search, so that the first real query
        pays for neither; returns the seconds of each step."""
        return warmup(self, batch_sizes)

    def duplicates_of(self, image: ImageInput, **options: Any) -> list[Any]:
        """Stored exact copies and near duplicates of ``image`` (`simsearch.dedup.duplicates_of`: threshold,
        precision)."""
        from simsearch.dedup import duplicates_of

        return duplicates_of(self, image, **options)

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
        scope: ScanScope | None = None,
        engine: Engine | None = None,
    ) -> IndexReport:
        """Bring the collection in line with ``folder``: embed new and changed images, follow moved ones, drop
        entries of files that are gone from it. Entries outside ``folder`` are left alone.

        ``scope`` says what the scan leaves out (default: hidden entries, junk folders, `.simsearchignore`
        patterns); the collection's own folder is never scanned. Files left out are not gone: their entries stay.
        ``engine`` runs the embedding elsewhere (`simsearch.scale.RayEngine`); the default embeds in this process."""
        root, files, tally = folder_files(folder, (scope or ScanScope()).never_entering(self.path))
        run = self._ingest_run(batch_size, workers, max_pixels, progress, engine)
        report = run.run(files, root=root, unreadable=tally.unreadable_folders)
        report.add_scan(tally.excluded, tally.skipped_folders, tally.special)
        return report

    def add(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        batch_size: int = 32,
        workers: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        progress: Progress | None = None,
        scope: ScanScope | None = None,
        engine: Engine | None = None,
    ) -> IndexReport:
        """Add (or refresh) image files; a folder among ``paths`` adds what ``scope`` lets in of it (as in
        `index_folder`). Removes nothing."""
        tally = ScanTally()
        files = listed_files(paths, (scope or ScanScope()).never_entering(self.path), tally)
        report = self._ingest_run(batch_size, workers, max_pixels, progress, engine).run(files, root=None)
        report.add_scan(tally.excluded, tally.skipped_folders, tally.special)
        return report

    def _ingest_run(
        self,
        batch_size: int,
        workers: int | None,
        max_pixels: int,
        progress: Progress | None,
        engine: Engine | None = None,
    ) -> IngestRun:
        self._writing.begin()
        return IngestRun(
            self.store,
            self._policy,
            lambda: self.embedder,
            self._writing.save,
            batch_size=batch_size,
            workers=workers,
            max_pixels=max_pixels,
            progress=progress,
            engine=engine,
        )

    def remove(self, items: Iterable[int | str | os.PathLike[str]]) -> list[ImageRecord]:
        """Remove images by id, by path, or every image under a folder path. Returns what was removed."""
        self._writing.begin()
        doomed = self.store.records_for(items)
        if doomed:
            with self.store.write() as batch:
                for image_id in doomed:
                    batch.delete(image_id)
            self._policy.remove(np.fromiter(doomed, dtype=np.int64))
            self._writing.save()
        return list(doomed.values())

    def configure_index(
        self,
        *,
        factory: str | None | Literal[Keep.KEEP] = KEEP,
        search_params: str | None = None,
        max_memory: int | None | Literal[Keep.KEEP] = KEEP,
    ) -> None:
        """Set the index settings that the next save follows: ``factory`` a FAISS factory string to pin (kept
        verbatim) or None to let the engine choose (by size, then by measurement); ``max_memory`` the index's budget
        in bytes, kept for later runs, or None for none; KEEP leaves a setting as it is.

        The settings are checked first (a factory that builds, a budget that can hold an index), then the index is
        brought in line with them in memory, rebuilt from the stored vectors when its type changes (nothing is
        embedded again). Nothing is written until the next write (`index_folder`, `add`, `remove`) or `save`.
        """
        settings = IndexSettings(factory, search_params, max_memory)
        self._policy.validate(settings)
        self._writing.begin()
        self._policy.configure(settings)

    def set_index_factory(self, factory: str | None, search_params: str | None = None) -> None:
        """Pin the FAISS index type, or ``None`` to let the engine choose again, and save (see `configure_index`)."""
        self.configure_index(factory=factory, search_params=search_params)
        self._writing.save()

    def set_max_memory(self, budget: int | None) -> None:
        """Set (or clear, with ``None``) the index's memory budget in bytes and save (see `configure_index`)."""
        self._policy.validate(IndexSettings(max_memory=budget))
        if budget == self.manifest.index.max_memory:
            return
        self.configure_index(max_memory=budget)
        self._writing.save()

    def save(self) -> None:
        """Write the index and the manifest now (writes save by themselves; this is for `configure_index` alone)."""
        self._writing.begin()
        self._writing.save()

    def release_writer(self) -> None:
        """Give back the writer lock that this collection's first write took (it is kept until `close` otherwise),
        so that other processes (`simsearch index`) can write while this one stays open; its next write takes it
        again. A long-lived process that writes now and then (a server) calls it after each write."""
        self._writing.release()

    @property
    def readonly(self) -> bool:
        """Opened for searching only: nothing is ever written."""
        return self.store.readonly

    def close(self) -> None:
        self.release_writer()
        self.store.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        made = self._made_folder
        discard = exc_type is not None and made is not None and len(self.store) == 0
        self.close()
        if discard and made is not None:
            remove_new_collection(self.path, made)  # a failed first run leaves no empty collection behind

    # -- information ------------------------------------------------------------------------------------------------

    def info(self) -> CollectionInfo:
        files = [self.path / MANIFEST, self.path / VECTORS]
        disk = sum(f.stat().st_size for f in files if f.exists()) + self.store.disk_bytes()
        return CollectionInfo.of(self.path, self.manifest, len(self.store), self.index.on_gpu, disk)


def open_collection(path: str | os.PathLike[str] | None = None, **kwargs: Any) -> Collection:
    """Open an existing collection (see :meth:`Collection.open` for the keyword arguments)."""
    return Collection.open(path, **kwargs)
