"""What the routes call: one open collection, its model behind a dynamic batcher, and the checks an image from the
network must pass before it is decoded. HTTP-agnostic apart from `ApiError` for what only a request can get wrong."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from server.errors import ApiError
from server.settings import Settings
from server.timing import StageTimer
from simsearch import Collection, ImageRecord, SearchResult, open_collection
from simsearch.errors import ImageError, UnknownImageError
from simsearch.fsio import atomic_write_bytes
from simsearch.images import probe_image

log = logging.getLogger(__name__)

#: What the server decodes: the common photo formats. Pillow opens more (EPS hands the file to Ghostscript, others
#: are rarely exercised parsers), none of which a photo search needs to accept from the network.
FORMATS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}


@dataclass(frozen=True)
class AddOutcome:
    record: ImageRecord
    created: bool


class SearchService:
    """The collection and model of one server. `open` at start-up, `load` (slow) in the background, `close` at exit.

    The collection is live (it follows `simsearch index` and `simsearch remove` run beside the server) and safe to
    search from many request threads at once; the server's own adds and deletes run one at a time. Without an admin
    token the server takes no writes, and opens the collection read-only: it then writes nothing at all, and serves
    from a read-only folder.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.col: Collection | None = None
        self.batcher: Any = None
        self.ready = threading.Event()
        self.load_error: str | None = None
        self.device = "not loaded"
        #: What runs the model: "onnxruntime" (the collection's export) or "torch"; "not loaded" until ready.
        self.engine = "not loaded"
        self._transform: Any = None
        self._min_side = 0
        self._writer = threading.Lock()
        self._threads = threading.local()
        self.upload_dir: Path | None = None
        self.on_batch: Any = None

    # -- life cycle -------------------------------------------------------------------------------------------------

    def open(self) -> None:
        """Open the collection (no model yet: searches by id and by vector work from here on)."""
        readonly = self.settings.admin_token is None
        self.col = open_collection(self.settings.collection, device=self.settings.device, readonly=readonly)
        self.upload_dir = Path(self.settings.upload_dir or self.col.path / "uploads")

    def load(self) -> None:
        """Load the model (its ONNX export where the collection has one, see `server.engine`), warm it at the batch
        sizes it will run, start the batcher; then the server is ready."""
        from server.batching import ForwardBatcher
        from server.engine import load_engine, warm

        col = self.collection
        try:
            started = time.perf_counter()
            engine = load_engine(col, self.settings.device, self.settings.forward_workers)
            self.device, self.engine = engine.device, engine.name
            warm(engine, col, {min(s, self.settings.max_batch) for s in self.settings.warm_batch_sizes})
            self._transform, self._min_side = engine.transform, engine.min_side
            self.batcher = ForwardBatcher(
                engine.forward,
                max_batch=self.settings.max_batch,
                max_wait_s=self.settings.batch_wait_ms / 1000,
                workers=engine.workers,
                on_batch=self.on_batch,
                then=self._search_pass,
            )
            self.batcher.start()
            took = time.perf_counter() - started
            log.info("model %s ready on %s (%s) in %.1f s", col.manifest.model.id, self.device, self.engine, took)
            self.ready.set()
        except Exception as exc:  # noqa: BLE001 - the server stays up to say why it is not ready
            log.exception("the model could not be loaded")
            self.load_error = f"the model could not be loaded: {exc}"

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.stop()
        if self.col is not None:
            self.col.close()

    @property
    def collection(self) -> Collection:
        if self.col is None:
            raise ApiError(503, "the collection is not open yet")
        return self.col

    def _model_ready(self) -> None:
        if not self.ready.is_set():
            raise ApiError(503, self.load_error or "the model is still loading: try again in a moment")

    # -- searching --------------------------------------------------------------------------------------------------

    def search_images(
        self, images: Sequence[bytes], k: int, exclude_ids: Sequence[int], timer: StageTimer
    ) -> list[list[SearchResult]]:
        """Search with encoded images (uploads): decode and transform here; forward and search in a shared pass."""
        self._model_ready()
        with self.batcher.announce(len(images)):
            tensors = [self._prepare(data, timer) for data in images]
            futures = self.batcher.submit(tensors, (k, tuple(exclude_ids)))
        embedded = [f.result() for f in futures]
        timer.add("queue", max(e.queue_s for e in embedded))
        timer.add("forward", max(e.forward_s for e in embedded))
        for stage in ("search", "store"):
            timer.add(stage, max(e.found[1].get(stage, 0.0) for e in embedded))
        return [e.found[0] for e in embedded]

    def _search_pass(self, vectors: np.ndarray, queries: list[tuple[int, tuple[int, ...]]]) -> list[Any]:
        """The searches of one forward pass, in its worker: one index search per distinct (k, exclusions). A flat
        search of many queries reads the stored vectors once: on 10k vectors and 2 cores one query alone took ~4 ms,
        16 together ~0.6 ms each. Each image gets (its results, its search's seconds by stage), or its search's error.
        """
        groups: dict[tuple[int, tuple[int, ...]], list[int]] = {}
        for position, query in enumerate(queries):
            groups.setdefault(query, []).append(position)
        found: list[Any] = [None] * len(queries)
        for (k, exclude_ids), positions in groups.items():
            timer = StageTimer()
            rows: list[Any]
            try:
                rows = self._search(vectors[positions], k, exclude_ids, timer)
            except Exception as exc:  # noqa: BLE001 - it fails the requests of this search only
                rows = [exc] * len(positions)
            for position, row in zip(positions, rows, strict=True):
                found[position] = row if isinstance(row, Exception) else (row, timer.seconds)
        return found

    def search_ids(
        self, ids: Sequence[int], k: int, exclude_self: bool, exclude_ids: Sequence[int], timer: StageTimer
    ) -> list[list[SearchResult]]:
        col = self.collection
        self._one_search_thread()
        rows = []
        for image_id in ids:
            timings: dict[str, float] = {}
            rows.append(col.search_id(image_id, k, exclude_self=exclude_self, exclude_ids=exclude_ids, timings=timings))
            timer.merge(timings)
        return rows

    def search_vectors(
        self, vectors: list[list[float]], k: int, exclude_ids: Sequence[int], timer: StageTimer
    ) -> list[list[SearchResult]]:
        col = self.collection
        if any(len(v) != col.dim for v in vectors):
            widths = _widths(vectors)
            raise ApiError(422, f"each vector must have {col.dim} numbers (this collection's model), not {widths}")
        queries = np.asarray(vectors, dtype=np.float32)
        if not np.isfinite(queries).all():
            raise ApiError(422, "vectors must hold finite numbers")
        return self._search(queries, k, exclude_ids, timer)

    def _search(
        self, vectors: np.ndarray, k: int, exclude_ids: Sequence[int], timer: StageTimer
    ) -> list[list[SearchResult]]:
        timings: dict[str, float] = {}
        self._one_search_thread()
        rows = self.collection.search_vectors(vectors, k, exclude_ids=exclude_ids, timings=timings)
        timer.merge(timings)
        return rows  # type: ignore[return-value]

    def _one_search_thread(self) -> None:
        """FAISS searches of this request thread use one OpenMP thread (set once per thread: the setting is per
        thread). Requests already run in parallel, one per worker thread; a team of OpenMP threads per search on top
        only adds start-up and contention: on 2 cores a 10k-vector search took 2.7 ms on two threads, 1.6 ms on one.
        """
        if not getattr(self._threads, "single", False):
            import faiss

            faiss.omp_set_num_threads(1)
            self._threads.single = True

    def _prepare(self, data: bytes, timer: StageTimer) -> Any:
        from simsearch.images import load_image

        with timer.stage("decode"):
            self.check_image(data)
            image = load_image(data, max_pixels=self.settings.max_pixels, min_side=self._min_side)
        with timer.stage("transform"):
            return self._transform(image)

    def check_image(self, data: bytes) -> tuple[str, int, int]:
        """The header of an uploaded image, refused (ImageError or 415) before any pixel is decoded."""
        if not data:
            raise ImageError("empty file")
        fmt, width, height = probe_image(data, max_pixels=self.settings.max_pixels)
        if fmt not in FORMATS:
            raise ApiError(415, f"{fmt} images are not accepted here: send JPEG, PNG, WebP, GIF, BMP or TIFF")
        return fmt, width, height

    # -- reading ----------------------------------------------------------------------------------------------------

    def record(self, image_id: int) -> ImageRecord:
        record = self.collection.get(image_id)
        if record is None:
            raise UnknownImageError(f"no image with id {image_id} in the collection")
        return record

    def thumbnail(self, image_id: int) -> bytes:
        data = self.collection.thumbnail(image_id)
        if data is None:
            self.record(image_id)  # 404 for an unknown id
            raise ApiError(404, f"image {image_id} has no stored preview")
        return data

    def vector(self, image_id: int) -> np.ndarray:
        return self.collection.vector(image_id)

    # -- writing ----------------------------------------------------------------------------------------------------

    def add_upload(self, data: bytes, timer: StageTimer) -> AddOutcome:
        """Keep the upload under the upload folder, named by its content (the collection indexes files, and a result's
        path must stay valid), then add it. The same bytes uploaded twice are one file and one image."""
        with timer.stage("decode"):
            fmt, _, _ = self.check_image(data)
        assert self.upload_dir is not None
        path = self.upload_dir.resolve() / f"{hashlib.sha256(data).hexdigest()}.{FORMATS[fmt]}"
        fresh = not path.exists()
        if fresh:
            with timer.stage("store"):
                self.upload_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(path, data)
        try:
            return self._add(path, timer)
        except Exception:
            if fresh:  # an upload the collection refused (a damaged image past its header) is not kept
                path.unlink(missing_ok=True)
            raise

    def add_path(self, given: str, timer: StageTimer) -> AddOutcome:
        """Add a file the server can read, only under --allow-root (after resolving links and `..`)."""
        if self.settings.allow_root is None:
            raise ApiError(403, "adding by path is off: start the server with --allow-root DIR to allow it")
        root = Path(self.settings.allow_root).resolve()
        if "\x00" in given:
            raise ApiError(422, "a path cannot hold a NUL byte")
        candidate = (root / Path(given).expanduser()).resolve()
        if not candidate.is_relative_to(root):
            raise ApiError(403, "that path is outside the folder this server may read")
        if not candidate.is_file():
            raise ApiError(404, "no such file under the allowed folder")
        return self._add(candidate, timer)

    def _add(self, path: Path, timer: StageTimer) -> AddOutcome:
        col = self.collection
        with self._writing():
            before = col.store.id_for_path(str(path))
            with timer.stage("forward"):
                report = col.add([path], workers=0, max_pixels=self.settings.max_pixels)
            image_id = col.store.id_for_path(str(path))
        if report.skipped_files or image_id is None:
            reason = report.skipped_files[0][1] if report.skipped_files else "not added"
            raise ImageError(reason)
        return AddOutcome(self.record(image_id), created=before != image_id)

    def remove(self, image_id: int) -> ImageRecord:
        col = self.collection
        record = self.record(image_id)
        with self._writing():
            removed = col.remove([image_id])
        if not removed:
            raise UnknownImageError(f"no image with id {image_id} in the collection")
        self._forget_upload(record)
        return record

    def _forget_upload(self, record: ImageRecord) -> None:
        """An upload's file goes with its image (the folder holds the server's copies, nothing of the user's)."""
        path = Path(record.path)
        if self.upload_dir is not None and path.parent == self.upload_dir.resolve():
            path.unlink(missing_ok=True)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """One write at a time, and the collection's writer lock given back at once, so that `simsearch index` can
        run beside a long-lived server (searches go on meanwhile: the collection guards its own index)."""
        with self._writer:
            try:
                yield
            finally:
                self.collection.release_writer()


def _widths(vectors: list[list[float]]) -> str:
    widths = sorted({len(v) for v in vectors})
    return ", ".join(map(str, widths[:3])) + (" ..." if len(widths) > 3 else "")
