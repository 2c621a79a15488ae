"""Searches a long-lived searcher needs beyond ``Collection.search``: from a stored image, leaving ids out, and a
warm-up so that the first real query does not pay for lazy model loading and first-call kernel set-up.

They work through the collection's public reading API only (the stored vector of an id comes from the store, which
holds every image's exact vector), so they stay correct whatever the index type.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from indexes import IndexLayerError
from simsearch.errors import CollectionError

if TYPE_CHECKING:
    from simsearch.collection import Collection, SearchResult
    from simsearch.store import ImageRecord

log = logging.getLogger(__name__)


class UnknownImageError(CollectionError):
    """An image id that the collection does not hold (never held, or removed since)."""


def stored_vector(col: Collection, image_id: int) -> np.ndarray:
    """The vector the collection keeps for ``image_id``: ``(D,) float32``, L2-normalised."""
    image_id = _as_id(image_id)
    if col.get(image_id) is None:
        raise UnknownImageError(f"no image with id {image_id} in the collection")
    return col.store.vectors([image_id], col.dim)[0]


def search_vectors(
    col: Collection,
    vectors: np.ndarray,
    k: int = 10,
    exclude_ids: Iterable[int] | None = None,
    timings: dict[str, float] | None = None,
) -> Any:
    """``Collection.search_vectors``, leaving ``exclude_ids`` out of every result list, and timing its two stages.

    The index is asked for one more result per excluded id, so that a list stays ``k`` long whenever the collection
    holds ``k`` images besides the excluded ones; ranks are counted after the exclusion. With ``timings``, the
    seconds spent in the index ("search") and reading the store ("store") are added to it.

    Returns:
        ``list[SearchResult]`` for a ``(D,)`` query, ``list[list[SearchResult]]`` for ``(Q, D)``.
    """
    excluded = {_as_id(i) for i in exclude_ids or ()}
    queries = np.asarray(vectors, dtype=np.float32)
    single = queries.ndim == 1
    queries = queries.reshape(1, -1) if single else queries
    if queries.ndim != 2 or queries.shape[1] != col.dim:
        raise CollectionError(
            f"query vectors must have shape (Q, {col.dim}) for this collection's model, got {tuple(np.shape(vectors))}"
        )
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise CollectionError(f"k must be an integer of at least 1, got {k!r}")
    if not col.index.is_trained:
        raise CollectionError(
            f"the {col.index.factory} index trains once the collection holds "
            f"{col.index.min_training_vectors} images; it holds {len(col)}"
        )
    started = time.perf_counter()
    try:
        scores, ids = col.index.search(queries, int(k) + len(excluded))
    except IndexLayerError as exc:
        raise CollectionError(str(exc)) from exc
    searched = time.perf_counter()
    wanted = [i for i in dict.fromkeys(ids[ids >= 0].tolist()) if i not in excluded]
    records = dict(zip(wanted, col.store.get_many(wanted), strict=True))
    rows: list[list[SearchResult]] = []
    for row_scores, row_ids in zip(scores.tolist(), ids.tolist(), strict=True):
        row: list[SearchResult] = []
        for score, image_id in zip(row_scores, row_ids, strict=True):
            record = records.get(image_id)
            if record is None:  # padding (-1), an excluded id, or an entry the store no longer holds
                continue
            row.append(_result(len(row) + 1, image_id, score, record))
            if len(row) == k:
                break
        rows.append(row)
    if timings is not None:
        timings["search"] = timings.get("search", 0.0) + searched - started
        timings["store"] = timings.get("store", 0.0) + time.perf_counter() - searched
    return rows[0] if single else rows


def search_id(
    col: Collection,
    image_id: int,
    k: int = 10,
    *,
    exclude_self: bool = True,
    exclude_ids: Iterable[int] | None = None,
    timings: dict[str, float] | None = None,
) -> list[SearchResult]:
    """The ``k`` images most similar to the stored image ``image_id`` (itself left out with ``exclude_self``).

    No model is needed: the query is the vector stored for that image. Copies of the image (other ids with the
    same content) are still found, with score 1.0.
    """
    image_id = _as_id(image_id)
    excluded = {_as_id(i) for i in exclude_ids or ()}
    if exclude_self:
        excluded.add(image_id)
    return search_vectors(col, stored_vector(col, image_id), k, excluded, timings)  # type: ignore[no-any-return]


def warmup(col: Collection, batch_sizes: Iterable[int] = (1,)) -> dict[str, float]:
    """Load the model and run a forward pass at each batch size, then one index search; returns seconds per step.

    A first forward at a new batch size sets up kernels (several times the steady cost on the CPU), so a server
    warms the sizes it will run. The images are synthetic (a gradient), never read from disk.
    """
    import PIL.Image
    import torch

    from simsearch.embedding import forward, transform_for

    timings: dict[str, float] = {}
    started = time.perf_counter()
    embedder = col.embedder
    timings["load"] = time.perf_counter() - started
    side = max(64, int(embedder.data_config.get("input_size", (3, 224, 224))[-1]))
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    pixels = np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (side, 1)), np.tile(ramp[:, None], (1, side))], -1)
    image = PIL.Image.fromarray(pixels.astype(np.uint8), "RGB")
    tensor = transform_for(embedder)(image)
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


def _result(rank: int, image_id: int, score: float, record: ImageRecord) -> SearchResult:
    from simsearch.collection import SearchResult

    return SearchResult(
        rank=rank, id=image_id, score=float(score), path=record.path, width=record.width, height=record.height
    )


def _as_id(value: Any) -> int:
    """An image id is an int (numpy ints too); a bool, a float or a string is a caller's mistake, refused."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise CollectionError(f"an image id is an integer, got {type(value).__name__}")
    return int(value)
