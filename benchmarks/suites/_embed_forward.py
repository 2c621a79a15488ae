"""The embed suite's bare forwards: the model on photos decoded beforehand, in torch (one pass on this thread with all
of torch's threads, and one lane per core) and in ONNX Runtime; the rates a pipeline is held to."""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.suites import autocast, synchronize
from simsearch.cpus import usable_cores


def decoded_photos(embedder: Any, photos: Sequence[Path]) -> tuple[Any, float]:
    """`(N, C, H, W)` float32 tensors exactly as the pipeline's workers make them, and the seconds that took here."""
    import torch

    from simsearch.embedding import decode_min_side, transform_for
    from simsearch.images import DEFAULT_MAX_PIXELS, load_image

    transform = transform_for(embedder)
    min_side = decode_min_side(embedder.data_config)
    started = time.perf_counter()
    tensors = [transform(load_image(p, max_pixels=DEFAULT_MAX_PIXELS, min_side=min_side)) for p in photos]
    seconds = time.perf_counter() - started
    return torch.stack(tensors), seconds


def decode_cost(embedder: Any, photos: Sequence[Path]) -> float:
    """Milliseconds of one thread a photo costs the pipeline before the model: decode, thumbnail and transform, as
    the pipeline's own workers run them (files read from the page cache)."""
    from simsearch.embedding import decode_files, decode_min_side, transform_for
    from simsearch.images import DEFAULT_MAX_PIXELS

    transform, min_side = transform_for(embedder), decode_min_side(embedder.data_config)
    decode_files(photos[:1], transform, min_side, DEFAULT_MAX_PIXELS)  # first-call set-up (imports, tables)
    started = time.thread_time()
    for start in range(0, len(photos), 32):  # a batch at a time, as a worker holds them
        decode_files(photos[start : start + 32], transform, min_side, DEFAULT_MAX_PIXELS)
    return (time.thread_time() - started) * 1000 / len(photos)


def bare_forward(
    embedder: Any, tensors: Any, batch_size: int, args: argparse.Namespace, lanes: int = 1
) -> dict[str, float]:
    """Images/s of `simsearch.embedding.forward` (the function the pipeline calls) on ready batches, with the
    pipeline's allocator settings (`freed_memory_kept`): the model at its own speed. One lane runs on this thread,
    with all of torch's threads (a pass from another thread measured up to 1.5x slower: see `simsearch.allocator`);
    `lanes` > 1 runs that many threads at once, each on its own batches with its share of torch's threads (no layer
    waits for another thread's share of it)."""
    import torch

    from simsearch.allocator import freed_memory_kept
    from simsearch.embedding import forward

    batches = [tensors[start : start + batch_size] for start in range(0, len(tensors), batch_size)]
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // lanes))
    try:
        with autocast(args.device, args.amp), freed_memory_kept(), ThreadPoolExecutor(lanes) as pool:

            def run(batch: Any) -> None:
                with autocast(args.device, args.amp):  # a per-thread setting
                    forward(embedder, batch)

            def run_all(some: list[Any]) -> None:
                if lanes == 1:
                    for batch in some:
                        run(batch)
                else:
                    list(pool.map(run, some))

            run_all(batches[:lanes])  # warm-up: first-call allocations and kernel selection, per lane
            synchronize(args.device)
            started = time.perf_counter()
            run_all(batches)
            synchronize(args.device)
            seconds = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)
    return {"forward_images_per_s": len(tensors) / seconds, "forward_seconds": seconds}


def best_forward(embedder: Any, tensors: Any, batch_size: int, args: argparse.Namespace) -> dict[str, Any]:
    """The bare forward in each thread layout the pipeline can use (one pass on all torch threads; one lane per
    core), and the faster of the two: the rate a pipeline is held to."""
    runs = {"one_pass": bare_forward(embedder, tensors, batch_size, args)}
    count = usable_cores() if args.device == "cpu" else 1
    if count > 1:
        runs["lanes"] = bare_forward(embedder, tensors, batch_size, args, count)
    best = max(runs.values(), key=lambda run: run["forward_images_per_s"])
    return {
        **best,
        "forward_lanes": count,
        **{f"forward_images_per_s_{name}": run["forward_images_per_s"] for name, run in runs.items()},
    }


def onnx_forward(
    embedder: Any, tensors: Any, photos: Sequence[Path], batch_size: int, args: argparse.Namespace
) -> dict[str, Any] | None:
    """The same bare forward in ONNX Runtime (the model as `simsearch index --onnx` exports it, checked on a few of
    the photos), in both thread layouts; None without the `onnx` extra or off the CPU."""
    import importlib.util

    from simsearch.models.exported import EXPORT_FILE, export_onnx

    if args.device != "cpu" or any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxruntime")):
        return None
    import onnxruntime

    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp:
        check = export_onnx(embedder, tmp, list(photos[:8]))
        model = (Path(tmp) / EXPORT_FILE).read_bytes()
    arrays = tensors.numpy()
    batches = [arrays[start : start + batch_size] for start in range(0, len(arrays), batch_size)]
    rates = {}
    for name, count in (("one_pass", 1), ("lanes", usable_cores())):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = max(1, args.threads // count)
        options.inter_op_num_threads = 1
        sessions = [
            onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"]) for _ in range(count)
        ]
        feed = sessions[0].get_inputs()[0].name

        def run(i: int, sessions: list[Any] = sessions, count: int = count, feed: str = feed) -> None:
            sessions[i % count].run(None, {feed: batches[i]})

        with ThreadPoolExecutor(count) as pool:
            list(pool.map(run, range(min(count, len(batches)))))  # warm-up, per session
            started = time.perf_counter()
            list(pool.map(run, range(len(batches))))
            rates[f"forward_images_per_s_{name}"] = len(arrays) / (time.perf_counter() - started)
    return {
        "onnxruntime": onnxruntime.__version__,
        "export_min_cosine": check.min_cosine,
        "forward_images_per_s": max(rates.values()),
        **rates,
    }
