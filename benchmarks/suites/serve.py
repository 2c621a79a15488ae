"""Serve suite: `simsearch serve` under load over loopback. Queries per second and p50/p95/p99 latency at several
concurrencies, for search by uploaded photo and by stored id, beside the in-process `Collection.search` loop and the
batched forward rate measured in the same run; time from start to ready; the server's memory.

The collection (default 10,000 Caltech-101 photos: every object photo, then mirror images of the first ones to make
up the count) is built once into a cache folder outside the repository and reused by later runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.suites import BenchmarkError, caltech_photo_names
from benchmarks.suites._serve_load import (
    Request,
    batch_counts,
    cpu_seconds,
    in_threads,
    load_run,
    memory_mib,
    multipart,
    start_server,
)

logger = logging.getLogger(__name__)

HELP = "HTTP service: QPS and p50/p95/p99 at concurrency 1/4/16 for upload and id search vs in-process rates"
CALTECH_OBJECT_PHOTOS = 8677


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", help="'default', a timm name or a checkpoint folder")
    parser.add_argument("--gallery", type=int, default=10_000, help="images in the collection")
    parser.add_argument("--cache", type=Path, help="where the collection is built once [default: <cache>/bench-serve]")
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated client concurrencies")
    parser.add_argument("--upload-requests", type=int, default=240, help="upload searches per concurrency")
    parser.add_argument("--id-requests", type=int, default=2000, help="id searches per concurrency")
    parser.add_argument("--max-seconds", type=float, default=180.0, help="time cap of one load run")
    parser.add_argument("--queries", type=int, default=64, help="distinct query photos (from the collection)")
    parser.add_argument("-k", type=int, default=10, help="results per query")
    parser.add_argument("--max-batch", type=int, default=32, help="the server's --max-batch")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0, help="the server's --batch-wait-ms")
    parser.add_argument(
        "--forward-workers",
        default="auto,1",
        help="the server's --forward-workers, comma-separated: the first is measured fully, the others on uploads "
        "('auto': the server's default)",
    )


# ------------------------------------------------------------------------------------------------ the collection


def gallery_files(n: int, data: Path, cache: Path) -> list[Path]:
    """`n` photos: Caltech-101 object photos, then mirror images of the first ones (written once under `cache`)."""
    from PIL import Image, ImageOps

    originals = caltech_photo_names(min(n, CALTECH_OBJECT_PHOTOS), data)
    mirrors = []
    for photo in originals[: max(0, n - len(originals))]:
        mirror = cache / "mirrored" / photo.parent.name / f"{photo.stem}_mirror.jpg"
        if not mirror.exists():
            mirror.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(photo) as im:
                ImageOps.mirror(im.convert("RGB")).save(mirror, quality=92)
        mirrors.append(mirror)
    return [*originals, *mirrors]


def build_collection(files: list[Path], cache: Path, args: argparse.Namespace) -> Path:
    """The collection of `files` under `cache`, built (or completed) once; a later run finds it ready."""
    import simsearch

    path = cache / f"collection-{len(files)}"
    started = time.perf_counter()
    with simsearch.Collection.open(path, create=True, model=args.model, device=args.device) as col:
        if len(col) != len(files):
            logger.info("serve: building a %d-image collection in %s (once)", len(files), path)
            report = col.add(files)
            if len(col) != len(files):
                raise BenchmarkError(f"the collection holds {len(col)} of {len(files)} photos: {report.as_dict()}")
            logger.info("serve: built in %.0f s", time.perf_counter() - started)
    return path


# ------------------------------------------------------------------------------------------ in-process references


def in_process(col_path: Path, queries: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    """`Collection.search` on the query photos one after another, and the forward rate on ready batches."""
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
        tensors = [transform(load_image(q, min_side=side)) for q in (queries * 32)[:32]]
        rates = {}
        for size in (1, 8, 16, 32):
            rates[str(size)] = forward_rate(lambda b: forward(embedder, b), torch.stack(tensors[:size]), 1)
        # as the server runs them on a CPU: one pass per core at once, each on one torch thread; small passes too,
        # since they are what concurrent requests give each core, and on a CPU they can be the fastest per image
        cores, threads = _cores(), torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for size in (1, 2, 4, 8, 16):
                batch = torch.stack(tensors[:size])
                rates[f"{size} x{cores} threads"] = forward_rate(lambda b: forward(embedder, b), batch, cores)
        finally:
            torch.set_num_threads(threads)
    ms = np.asarray(times) * 1000
    return {
        "collection_search": {
            "queries": len(times),
            "qps": len(times) / float(np.sum(times)),
            "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95)),
        },
        "forward_images_per_s": rates,
        # the best rate of the model on ready tensors, whatever the batch size and split over cores
        "batched_forward_images_per_s": max(rate for size, rate in rates.items() if size != "1"),
    }


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

    wall = in_threads(work, threads)
    return done[0] / wall


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# --------------------------------------------------------------------------------------------------------- run


def run(args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    from simsearch.data import default_cache_dir

    # other work on the machine takes cores from the server and the reference alike, but not evenly: say how busy it
    # was before this run added its own load
    load_before = [round(x, 2) for x in os.getloadavg()]
    if args.tiny:
        args.gallery, args.queries, args.upload_requests, args.id_requests = 64, 8, 16, 40
        args.concurrency = "1,4"
    levels = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    if args.gallery < 2 or not levels or min(levels) < 1 or args.queries < 1:
        raise BenchmarkError("--gallery must be at least 2, concurrencies and --queries at least 1")
    cache = Path(args.cache or default_cache_dir() / "bench-serve").expanduser()
    files = gallery_files(args.gallery, args.data, cache)
    col_path = build_collection(files, cache, args)
    stride = max(1, len(files) // args.queries)
    queries = files[::stride][: args.queries]

    import simsearch

    with simsearch.open_collection(col_path) as col:
        query_ids = [col.store.id_for_path(str(q.resolve())) for q in queries]
        if any(i is None for i in query_ids):
            raise BenchmarkError("a query photo is not in the collection")
        expected = {i: [r.id for r in col.search_id(i, args.k)] for i in query_ids}
        index = {"factory": col.index.factory, "images": len(col)}

    logger.info("serve: in-process references")
    reference = in_process(col_path, queries, args)
    uploads = [multipart(q.read_bytes()) for q in queries]

    def make_upload(i: int) -> Request:
        body, content_type = uploads[i % len(uploads)]
        return "POST", f"/search?k={args.k}", body, {"Content-Type": content_type}

    def check_upload(i: int, payload: dict[str, Any]) -> bool:
        hits = payload["results"]
        return len(hits) == args.k and hits[0]["id"] == query_ids[i % len(queries)] and hits[0]["score"] > 0.999

    def make_id(i: int) -> Request:
        return "GET", f"/images/{query_ids[i % len(query_ids)]}/similar?k={args.k}", None, {}

    def check_id(i: int, payload: dict[str, Any]) -> bool:
        return [h["id"] for h in payload["results"]] == expected[query_ids[i % len(query_ids)]]

    modes = [("upload", make_upload, check_upload, args.upload_requests), ("id", make_id, check_id, args.id_requests)]
    runs: list[dict[str, Any]] = []
    servers: dict[str, Any] = {}
    for position, workers in enumerate(str(args.forward_workers).split(",")):
        # the first server setting is measured fully; others (for comparison) with uploads only
        found, servers[workers] = serve_runs(col_path, workers, modes if position == 0 else modes[:1], levels, args)
        runs += found
    start_times = next(iter(servers.values()))["start"]
    memory_end = next(iter(servers.values()))["memory"]["at_end"]

    forward_rate = reference["batched_forward_images_per_s"]
    top = max(levels)
    first = runs[0]["forward_workers"]
    upload_top = next(
        r for r in runs if r["mode"] == "upload" and r["concurrency"] == top and r["forward_workers"] == first
    )
    id_top = [r for r in runs if r["mode"] == "id"]
    goals = {
        f"upload_qps_at_{top}_over_batched_forward": upload_top["qps"] / forward_rate,
        "upload_goal_0.8_met": upload_top["qps"] / forward_rate >= 0.8,
        "upload_server_cpu_ms_at_top": upload_top["server_cpu_ms_per_request"],
        # every core busy with forward passes: what an image costs in CPU time at the best rate
        "forward_cpu_ms_per_image": _cores() * 1000 / forward_rate,
        "id_p50_ms_at_1": next(r["p50_ms"] for r in id_top if r["concurrency"] == min(levels)),
        "id_goal_p50_under_5ms_met": next(r["p50_ms"] for r in id_top if r["concurrency"] == min(levels)) < 5.0,
        "server_errors": sum(r["server_errors"] for r in runs),
        "wrong_answers": sum(r["wrong_answers"] for r in runs),
    }
    record = {
        "collection": {**index, "source": "Caltech-101 object photos, then mirror images of the first ones"},
        "protocol": (
            "one `simsearch serve` process on a loopback port; clients are threads of the benchmark process on the "
            "same machine, one keep-alive connection each; query photos are in the collection, so an upload search "
            "must find itself first (score > 0.999) and an id search must return what the library returns "
            "in-process; each load run is preceded by a warm-up run; in-process references run in the benchmark "
            "process while the server is idle"
        ),
        "k": args.k,
        "load_average_before": load_before,
        "server": {"max_batch": args.max_batch, "batch_wait_ms": args.batch_wait_ms},
        "servers": servers,
        "in_process": reference,
        "runs": runs,
        "goals": goals,
    }
    table = _table(runs, reference, start_times, memory_end, goals)
    table.append({"measure": "machine load average before the run (1, 5, 15 min)", "note": str(load_before)})
    return {"record": record, "figures": [], "table": table}


def serve_runs(
    col_path: Path, workers: str, modes: list[tuple[str, Any, Any, int]], levels: list[int], args: argparse.Namespace
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Start a server with `--forward-workers workers` ("auto": its default), run each mode at each concurrency
    (after a warm-up run), stop it; returns the runs and the server's start times and memory."""
    proc, port, start_times = start_server(col_path, args, workers)
    runs: list[dict[str, Any]] = []
    try:
        memory_ready = memory_mib(proc.pid)
        for mode, make, check, count in modes:
            load_run(port, make, check, min(count, 4 * max(levels)), max(levels), args.max_seconds)  # warm-up
            for level in levels:
                logger.info("serve: %s search, concurrency %d, forward workers %s", mode, level, workers)
                before, cpu_before = batch_counts(port), cpu_seconds(proc.pid)
                result = load_run(port, make, check, count, level, args.max_seconds)
                after = batch_counts(port)
                result["server_cpu_ms_per_request"] = (cpu_seconds(proc.pid) - cpu_before) * 1000 / result["requests"]
                passes = after[1] - before[1]
                result["mean_forward_batch"] = (after[0] - before[0]) / passes if passes else None
                runs.append({"mode": mode, "forward_workers": workers, **result})
        memory_end = memory_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return runs, {"start": start_times, "memory": {"after_ready": memory_ready, "at_end": memory_end}}


def _table(
    runs: list[dict[str, Any]],
    reference: dict[str, Any],
    start: dict[str, float],
    memory: dict[str, float],
    goals: dict[str, Any],
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {
            "measure": f"{r['mode']} search, concurrency {r['concurrency']}"
            + ("" if r["forward_workers"] == "auto" else f", {r['forward_workers']} forward worker(s)"),
            "QPS": r["qps"],
            "p50 ms": r["p50_ms"],
            "p95 ms": r["p95_ms"],
            "p99 ms": r["p99_ms"],
            "note": f"{r['requests']} requests, mean batch {r['mean_forward_batch'] or 0:.1f}, "
            f"server CPU {r['server_cpu_ms_per_request']:.1f} ms a request, "
            f"{r['server_errors']} 5xx, {r['wrong_answers']} wrong",
        }
        for r in runs
    ]
    search = reference["collection_search"]
    rows.append(
        {
            "measure": "in-process Collection.search loop",
            "QPS": search["qps"],
            "p50 ms": search["p50_ms"],
            "p95 ms": search["p95_ms"],
        }
    )
    for size, rate in reference["forward_images_per_s"].items():
        rows.append({"measure": f"in-process forward, batch {size}", "QPS": rate, "note": "images per second"})
    ratio = next(v for k, v in goals.items() if k.endswith("_over_batched_forward"))
    rows.append({"measure": "upload QPS at the top concurrency / best batched forward rate", "note": f"{ratio:.2f}"})
    rows.append(
        {
            "measure": "CPU time: an upload search at the top concurrency (server) / an image at the best forward rate",
            "note": f"{goals['upload_server_cpu_ms_at_top']:.1f} ms / {goals['forward_cpu_ms_per_image']:.1f} ms",
        }
    )
    rows.append({"measure": "start to live", "note": f"{start['live_s']:.1f} s"})
    rows.append({"measure": "start to ready (model loaded and warm)", "note": f"{start['ready_s']:.1f} s"})
    rows.append({"measure": "server peak resident memory", "note": f"{memory['peak_rss_mib']:.0f} MiB"})
    return rows
