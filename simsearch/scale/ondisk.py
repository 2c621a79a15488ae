"""Building a collection's on-disk IVF index from its store, the way autofaiss and FAISS's on-disk demo do: train the
coarse quantizer and codec once on a seeded sample, fill shards (copies of the trained index) in parallel through
the engine's map (Ray tasks with `RayEngine`, this process otherwise), merge their lists into one file on disk, and
hand back the index mapped read-only. Only the driver reads the store and writes files: workers get vectors and give
back serialised shards, so a cluster needs no shared file system for this.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from indexes import VectorIndex, ondisk
from simsearch.scale.stages import build_shard

if TYPE_CHECKING:
    from simsearch.collection.store import Store

log = logging.getLogger(__name__)

MapUnordered = Callable[[Callable[..., Any], tuple[Any, ...], Iterable[tuple[Any, ...]]], Iterator[Any]]


def serial_map(fn: Callable[..., Any], shared: tuple[Any, ...], jobs: Iterable[tuple[Any, ...]]) -> Iterator[Any]:
    """The map of a build without an engine: one job after the other in this process (faiss threads each add)."""
    return (fn(*shared, *job) for job in jobs)


def build_on_disk(
    store: Store,
    dim: int,
    index_path: Path,
    factory: str,
    *,
    map_unordered: MapUnordered | None = None,
    trained: np.ndarray | None = None,
) -> tuple[VectorIndex, dict[str, Any]]:
    """An on-disk IVF `factory` over every vector in `store`, its lists in a new file beside `index_path` (the
    index file itself is written by the caller's save). `trained`: a trained empty index of the same factory to
    reuse. Returns the index and what the build took (for the manifest's record)."""
    started = time.perf_counter()
    ids = store.ids()
    if trained is None:
        rng = np.random.default_rng(0)
        size = ondisk.training_size(factory, len(ids), dim)
        sample = np.sort(rng.choice(ids, size=size, replace=False))
        log.info("training %s on %d of %d stored vectors", factory, len(sample), len(ids))
        trained = ondisk.train(dim, factory, store.vectors(sample.tolist(), dim))
    trained_s = time.perf_counter() - started
    per_shard = max(1, ondisk.SHARD_BYTES // (dim * 4))
    jobs = (
        (part, store.vectors(part.tolist(), dim))
        for part in (ids[i : i + per_shard] for i in range(0, len(ids), per_shard))
    )
    work = index_path.with_name(f".{index_path.name}.build-{uuid.uuid4().hex[:8]}")
    work.mkdir()
    lists = ondisk.new_lists_path(index_path)
    try:
        shard_files = []
        for number, shard in enumerate((map_unordered or serial_map)(build_shard, (trained,), jobs)):
            shard_files.append(work / f"shard-{number:05d}.faiss")
            np.asarray(shard, dtype=np.uint8).tofile(shard_files[-1])
        filled_s = time.perf_counter() - started - trained_s
        index = VectorIndex.on_disk_from(ondisk.merge_shards(trained, shard_files, lists), factory)
    except BaseException:
        lists.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    merged_s = time.perf_counter() - started - trained_s - filled_s
    log.info("built %s on disk: %d vectors in %d shards (%.1f s)", factory, len(ids), len(shard_files), merged_s)
    return index, {
        "on_disk": True,
        "n": len(ids),
        "shards": len(shard_files),
        "train_s": round(trained_s, 3),
        "fill_s": round(filled_s, 3),
        "merge_s": round(merged_s, 3),
        "lists_bytes": lists.stat().st_size,
    }
