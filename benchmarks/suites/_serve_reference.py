"""The serve suite's in-process references, measured in the benchmark process while no server runs: the
`Collection.search` loop, and the forward rate of each engine a server can run (torch, and ONNX Runtime on the
collection's export) on ready batches, whole and split over the cores as the server runs them. Also the copy of
the collection with its model exported into it (`simsearch index --onnx`), which the server loads ONNX Runtime for.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.suites._serve_load import in_threads
from simsearch.cpus import usable_cores

logger = logging.getLogger(__name__)

#: Batch sizes of one pass on all the cores' threads, and of one pass per core on one thread each (small passes too:
#: they are what concurrent requests give each core, and on a CPU they can be the fastest per image).
WHOLE_SIZES = (1, 8, 16, 32)
SPLIT_SIZES = (1, 2, 4, 8, 16)


def exported_copy(col_path: Path) -> Path | None:
    """A copy of the collection beside it with its model exported into it, made once (None without the `onnx`
    extra). The copy keeps the same photos, vectors and ids: only the model that embeds queries differs."""
    if any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxruntime")):
        logger.warning("serve: no ONNX export (pip install simsearch[onnx]): the server runs torch only")
        return None
    import simsearch
    from simsearch.collection.query_model import export_query_model, exported_model

    copy = col_path.with_name(f"{col_path.name}-onnx")
    source_vectors = (col_path / "vectors.faiss").stat().st_mtime
    if copy.exists() and (copy / "vectors.faiss").stat().st_mtime < source_vectors:
        shutil.rmtree(copy)
    if not copy.exists():
        shutil.copytree(col_path, copy, ignore=shutil.ignore_patterns(".lock", "uploads", "model.onnx*"))
    with simsearch.open_collection(copy, device="cpu") as col:
        if exported_model(col, "cpu") is None:
            logger.info("serve: exporting the model into %s (once)", copy)
            export_query_model(col)
    return copy


def in_process(col_path: Path, exported: Path | None, queries: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    """`Collection.search` on the query photos one after another, and each engine's forward rates on ready
    batches of the query photos; `batched_forward_images_per_s` is each engine's best rate at a batch above 1."""
    import torch

    import simsearch
    from simsearch.embedding import decode_min_side, forward, transform_for
    from simsearch.images import load_image

    with simsearch.open_collection(col_path, device=args.device) as col:
        col.search(queries[0], k=args.k)  # loads and warms the model
        times = []
        for q in queries:
            started = time.perf_counter()
            col.search(q, k=args.k)
            times.append(time.perf_counter() - started)
        embedder = col.embedder
        transform = transform_for(embedder)
        side = decode_min_side(embedder.data_config)
        batch = torch.stack([transform(load_image(q, min_side=side)) for q in (queries * 32)[:32]])
        rates = {"torch": torch_rates(lambda b: forward(embedder, b), batch)}
    if exported is not None:
        rates["onnxruntime"] = onnx_rates(exported, queries)
    ms = np.asarray(times) * 1000
    return {
        "collection_search": {
            "queries": len(times),
            "qps": len(times) / float(np.sum(times)),
            "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95)),
        },
        "forward_images_per_s": rates,
        "batched_forward_images_per_s": {
            engine: max(rate for size, rate in found.items() if size != "1") for engine, found in rates.items()
        },
    }


def torch_rates(run: Callable[[Any], Any], batch: Any) -> dict[str, float]:
    """Images per second of the torch forward `run` on the first 1..32 images of `batch`: one pass at a time on
    torch's threads, then one pass per core at once on one thread each (as the server runs them on a CPU)."""
    import torch

    rates = {str(size): forward_rate(run, batch[:size], 1) for size in WHOLE_SIZES}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rates.update(split_rates(run, batch))
    finally:
        torch.set_num_threads(threads)
    return rates


def split_rates(run: Callable[[Any], Any], batch: Any) -> dict[str, float]:
    cores = usable_cores()
    return {f"{size} x{cores} threads": forward_rate(run, batch[:size], cores) for size in SPLIT_SIZES}


def onnx_rates(exported: Path, queries: list[Path]) -> dict[str, float]:
    """The rates of `torch_rates` for the collection's export in ONNX Runtime: loaded with a thread per core for whole
    passes, and loaded with one thread a run, shared by the threads, for the split ones (as the server loads it)."""
    import simsearch
    from simsearch.collection.query_model import recorded_identity
    from simsearch.images import load_image
    from simsearch.models.exported import load_exported

    with simsearch.open_collection(exported, device="cpu") as col:
        identity = recorded_identity(col.manifest.model)
    whole, single = (load_exported(exported, identity, threads=t) for t in (usable_cores(), 1))
    if whole is None or single is None:
        raise RuntimeError(f"the export in {exported} did not load")
    batch = np.stack([whole.transform(load_image(q, min_side=whole.min_side)) for q in (queries * 32)[:32]])
    rates = {str(size): forward_rate(whole.forward, batch[:size], 1) for size in WHOLE_SIZES}
    rates.update(split_rates(single.forward, batch))
    return rates


def forward_rate(run: Callable[[Any], Any], batch: Any, threads: int, seconds: float = 3.0) -> float:
    """Images per second of `run(batch)` called back to back from `threads` threads (after a first call, which
    sets up kernels for the batch size)."""
    done = [0]
    lock = threading.Lock()
    run(batch)
    until = time.perf_counter() + seconds

    def work() -> None:
        while time.perf_counter() < until:
            run(batch)
            with lock:
                done[0] += len(batch)

    if threads == 1:  # on this thread: a pass from another one runs slower (see simsearch.allocator)
        started = time.perf_counter()
        work()
        return done[0] / (time.perf_counter() - started)
    wall = in_threads(work, threads)
    return done[0] / wall
