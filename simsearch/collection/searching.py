"""Searching a collection: by vectors, from a stored image, leaving ids out, timed stage by stage, and a warm-up.

A search never returns a short list by accident: asked for k, it returns k whenever the collection holds k images
besides the left-out ones, also while other processes write to it. It first catches up with their commits (see
`live`); when the index still names images that the store no longer holds (removed by another process between the
catch-up and the lookup), it asks again for more.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from indexes import IndexLayerError
from simsearch.collection.results import SearchResult
from simsearch.errors import CollectionError, UnknownImageError

if TYPE_CHECKING:
    import PIL.Image

    from simsearch.collection.facade import Collection
    from simsearch.collection.live import StoreFollower

log = logging.getLogger(__name__)

#: A search whose index answer names images that the store lost meanwhile asks again, at most this many times.
RETRIES = 3


class Searcher:
    """The reading side of an open collection: the index under its guard, the store for records and vectors."""

    def __init__(self, follower: StoreFollower) -> None:
        self.follower = follower
        self.policy = follower.policy
        self.store = follower.policy.store
        self._gpu = threading.Lock()  # FAISS's GPU indexes take one search at a time

    def vector(self, image_id: int) -> np.ndarray:
        """The vector kept for ``image_id``: ``(D,) float32``, L2-normalised (exact, from the store)."""
        image_id = as_id(image_id)
        if self.store.get(image_id) is None:
            raise UnknownImageError(f"no image with id {image_id} in the collection")
        return self.store.vectors([image_id], self.policy.dim)[0]

    def search_vectors(
        self, vectors: Any, k: int, exclude_ids: Iterable[int] | None, timings: dict[str, float] | None
    ) -> Any:
        """``list[SearchResult]`` for a ``(D,)`` query, a list of them for ``(Q, D)``; ``exclude_ids`` are left out
        of every list (ranks count after them); with ``timings``, the seconds spent in the index ("search") and
        reading the store ("store") are added to it."""
        dim = self.policy.dim
        excluded = {as_id(i) for i in exclude_ids or ()}
        queries = np.asarray(vectors, dtype=np.float32)
        single = queries.ndim == 1
        queries = queries.reshape(1, -1) if single else queries
        if queries.ndim != 2 or queries.shape[1] != dim:
            raise CollectionError(
                f"query vectors must have shape (Q, {dim}) for this collection's model, got {tuple(np.shape(vectors))}"
            )
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise CollectionError(f"k must be an integer of at least 1, got {k!r}")
        k = int(k)
        slack = 0
        for _ in range(RETRIES + 1):
            self.follower.catch_up()
            rows, lost = self._search_once(queries, k + len(excluded) + slack, k, excluded, timings)
            if not lost:
                break
            log.debug("%d results were removed from the store during the search: asking again", lost)
            slack += lost
        return rows[0] if single else rows

    def search_id(
        self,
        image_id: int,
        k: int,
        exclude_self: bool,
        exclude_ids: Iterable[int] | None,
        timings: dict[str, float] | None,
    ) -> list[SearchResult]:
        """The ``k`` images most similar to the stored image ``image_id``; no model is needed (the query is its
        stored vector). Copies of it (other ids, same content) are still found, with score 1.0."""
        image_id = as_id(image_id)
        excluded = {as_id(i) for i in exclude_ids or ()}
        if exclude_self:
            excluded.add(image_id)
        return self.search_vectors(self.vector(image_id), k, excluded, timings)  # type: ignore[no-any-return]

    def _search_once(
        self, queries: np.ndarray, wanted: int, k: int, excluded: set[int], timings: dict[str, float] | None
    ) -> tuple[list[list[SearchResult]], int]:
        """One index search and one store lookup: the rows, and how many entries a short row lost to the store."""
        started = time.perf_counter()
        with self.policy.guard.reading():
            index = self.policy.index
            if not index.is_trained:
                raise CollectionError(
                    f"the {index.factory} index trains once the collection holds "
                    f"{index.min_training_vectors} images; it holds {len(self.store)}"
                )
            with self._gpu if index.on_gpu else contextlib.nullcontext():
                try:
                    scores, ids = index.search(queries, wanted)
                except IndexLayerError as exc:
                    raise CollectionError(str(exc)) from exc
        searched = time.perf_counter()
        found = [i for i in dict.fromkeys(ids[ids >= 0].tolist()) if i not in excluded]
        records = dict(zip(found, self.store.get_many(found), strict=True))
        rows: list[list[SearchResult]] = []
        missing = 0
        for row_scores, row_ids in zip(scores.tolist(), ids.tolist(), strict=True):
            row: list[SearchResult] = []
            lost = 0
            for score, image_id in zip(row_scores, row_ids, strict=True):
                if image_id < 0 or image_id in excluded:
                    continue
                record = records.get(image_id)
                if record is None:  # in the index, gone from the store: removed since the index caught up
                    lost += 1
                    continue
                row.append(SearchResult(len(row) + 1, image_id, float(score), record.path, record.width, record.height))
                if len(row) == k:
                    break
            if len(row) < k:
                missing = max(missing, lost)
            rows.append(row)
        if timings is not None:
            timings["search"] = timings.get("search", 0.0) + searched - started
            timings["store"] = timings.get("store", 0.0) + time.perf_counter() - searched
        return rows, missing


def warmup(col: Collection, batch_sizes: Iterable[int]) -> dict[str, float]:
    """Load the model and run a forward pass at each batch size, then one index search; returns seconds per step.

    A first forward at a new batch size sets up kernels (several times the steady cost on the CPU), so a server
    warms the sizes it will run. The image is synthetic (a gradient), never read from disk.
    """
    import torch

    from simsearch.embedding import forward, transform_for

    timings: dict[str, float] = {}
    started = time.perf_counter()
    embedder = col.embedder
    timings["load"] = time.perf_counter() - started
    side = max(64, int(embedder.data_config.get("input_size", (3, 224, 224))[-1]))
    tensor = transform_for(embedder)(warmup_image(side))
    vector = None
    for size in sorted({max(1, int(s)) for s in batch_sizes}):
        started = time.perf_counter()
        vector = forward(embedder, torch.stack([tensor] * size))[0]
        timings[f"forward_{size}"] = time.perf_counter() - started
    if vector is not None and len(col) and col.index.is_trained:
        started = time.perf_counter()
        col.search_vectors(vector, 1)
        timings["search"] = time.perf_counter() - started
    log.info("warm-up: %s", ", ".join(f"{name} {s * 1000:.0f} ms" for name, s in timings.items()))
    return timings


def warmup_image(side: int) -> PIL.Image.Image:
    """A synthetic RGB image (gradients) of `side` x `side` for warm-up passes: nothing is read from disk."""
    import PIL.Image

    ramp = np.linspace(0, 255, side, dtype=np.float32)
    pixels = np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (side, 1)), np.tile(ramp[:, None], (1, side))], -1)
    return PIL.Image.fromarray(pixels.astype(np.uint8), "RGB")


def as_id(value: Any) -> int:
    """An image id is an int (numpy ints too); a bool, a float or a string is a caller's mistake, refused."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise CollectionError(f"an image id is an integer, got {type(value).__name__}")
    return int(value)
