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
import resource
import time
from pathlib import Path
from typing import Any

from benchmarks.suites import BenchmarkError, caltech_photo_names
from benchmarks.suites._serve_load import (
    Request,
    batch_counts,
    cpu_seconds,
    load_run,
    memory_mib,
    multipart,
    start_server,
    thread_cpu_seconds,
)
from benchmarks.suites._serve_reference import exported_copy, in_process
from simsearch.cpus import usable_cores

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
        "--engines",
        default="onnxruntime,torch",
        help="what runs the server's model, comma-separated: 'onnxruntime' serves a copy of the collection with its "
        "model exported into it (`index --onnx`), 'torch' the collection as built; the first is measured fully",
    )
    parser.add_argument(
        "--forward-workers",
        default="auto,1",
        help="the server's --forward-workers, comma-separated, for the first engine (the others run the first "
        "value); the first server is measured fully, the others on uploads ('auto': the server's default)",
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


# --------------------------------------------------------------------------------------------------------- run


def run(args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    from simsearch.allocator import freed_memory_kept, one_arena
    from simsearch.data import default_cache_dir

    # The in-process forwards run as the server runs them: threads on the main heap (for the rest of this process:
    # glibc keeps that limit), freed memory kept while they run.
    one_arena()
    # other work on the machine takes cores from the server and the reference alike, but not evenly: say how busy it
    # was before this run added its own load
    load_before = [round(x, 2) for x in os.getloadavg()]
    if args.tiny:
        args.gallery, args.queries, args.upload_requests, args.id_requests = 64, 8, 16, 40
        args.concurrency = "1,4"
    levels = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    engines = [e.strip() for e in str(args.engines).split(",") if e.strip()]
    if args.gallery < 2 or not levels or min(levels) < 1 or args.queries < 1:
        raise BenchmarkError("--gallery must be at least 2, concurrencies and --queries at least 1")
    if not engines or set(engines) - {"onnxruntime", "torch"}:
        raise BenchmarkError("--engines takes onnxruntime and torch")
    cache = Path(args.cache or default_cache_dir() / "bench-serve").expanduser()
    files = gallery_files(args.gallery, args.data, cache)
    col_path = build_collection(files, cache, args)
    exported = exported_copy(col_path) if "onnxruntime" in engines and not args.device.startswith("cuda") else None
    if exported is None:
        engines = [e for e in engines if e != "onnxruntime"] or ["torch"]
    stride = max(1, len(files) // args.queries)
    queries = files[::stride][: args.queries]

    import simsearch

    with simsearch.open_collection(col_path) as col:
        found_ids = [col.store.id_for_path(str(q.resolve())) for q in queries]
        query_ids = [i for i in found_ids if i is not None]
        if len(query_ids) != len(queries):
            raise BenchmarkError("a query photo is not in the collection")
        expected = {i: [r.id for r in col.search_id(i, args.k)] for i in query_ids}
        index = {"factory": col.index.factory, "images": len(col)}

    logger.info("serve: in-process references")
    with freed_memory_kept():
        reference = in_process(col_path, exported, queries, args)
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
    # the first engine with each worker setting, then the other engines with the first setting; the first server
    # is measured fully, the others (for comparison) with uploads only
    workers = str(args.forward_workers).split(",")
    configs = [(engines[0], w) for w in workers] + [(e, workers[0]) for e in engines[1:]]
    folders = {"torch": col_path, "onnxruntime": exported or col_path}
    runs: list[dict[str, Any]] = []
    servers: list[dict[str, Any]] = []
    for position, (engine, count) in enumerate(configs):
        found, server = serve_runs(folders[engine], count, modes if position == 0 else modes[:1], levels, args)
        if server["engine"] != engine:
            raise BenchmarkError(f"the server on {folders[engine]} runs {server['engine']}, not {engine}")
        runs += found
        servers.append(server)

    top = max(levels)
    ratios = []
    for server in servers:
        upload_top = next(
            r
            for r in runs
            if r["mode"] == "upload"
            and r["concurrency"] == top
            and (r["engine"], r["forward_workers"]) == (server["engine"], server["forward_workers"])
        )
        rate = reference["batched_forward_images_per_s"][server["engine"]]
        ratios.append(
            {
                "engine": server["engine"],
                "forward_workers": server["forward_workers"],
                "upload_qps": upload_top["qps"],
                "batched_forward_images_per_s": rate,
                "ratio": upload_top["qps"] / rate,
                "server_cpu_ms_per_upload": upload_top["server_cpu_ms_per_request"],
                # every core busy with forward passes: what an image costs in CPU time at the best rate
                "forward_cpu_ms_per_image": usable_cores() * 1000 / rate,
            }
        )
    id_runs = [r for r in runs if r["mode"] == "id"]
    id_p50 = next(r["p50_ms"] for r in id_runs if r["concurrency"] == min(levels))
    goals = {
        "engine": ratios[0]["engine"],
        f"upload_qps_at_{top}_over_batched_forward": ratios[0]["ratio"],
        "upload_goal_0.8_met": ratios[0]["ratio"] >= 0.8,
        "upload_server_cpu_ms_at_top": ratios[0]["server_cpu_ms_per_upload"],
        "forward_cpu_ms_per_image": ratios[0]["forward_cpu_ms_per_image"],
        "id_p50_ms_at_1": id_p50,
        "id_goal_p50_under_5ms_met": id_p50 < 5.0,
        "server_errors": sum(r["server_errors"] for r in runs),
        "wrong_answers": sum(r["wrong_answers"] for r in runs),
    }
    record = {
        "collection": {**index, "source": "Caltech-101 object photos, then mirror images of the first ones"},
        "protocol": (
            "one `simsearch serve` process at a time on a loopback port; clients are threads of the benchmark process "
            "on the same machine, one keep-alive connection each (their CPU time is recorded too); the server's CPU "
            "time is split by thread from /proc: its event loop, its forward workers (model and index search), the "
            "rest (request threads decoding uploads; the model's thread pool where a pass runs on several); query "
            "photos are in the collection, so an upload search must find itself first (score > 0.999) and an id search"
            " must return what the library returns in-process; each load run is preceded by a warm-up run; the "
            "onnxruntime server serves a copy of the collection with its model exported into it, the torch server the "
            "collection itself; in-process references run in the benchmark process while no server runs; each server's"
            " upload rate is compared with the best batched forward rate of the engine it runs"
        ),
        "k": args.k,
        "load_average_before": load_before,
        "versions": _engine_versions(),
        "server": {"max_batch": args.max_batch, "batch_wait_ms": args.batch_wait_ms},
        "servers": servers,
        "in_process": reference,
        "runs": runs,
        "upload_over_forward": ratios,
        "goals": goals,
    }
    table = _table(runs, reference, servers, ratios)
    table.append({"measure": "machine load average before the run (1, 5, 15 min)", "note": str(load_before)})
    return {"record": record, "figures": [], "table": table}


def serve_runs(
    col_path: Path, workers: str, modes: list[tuple[str, Any, Any, int]], levels: list[int], args: argparse.Namespace
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Start a server with `--forward-workers workers` ("auto": its default), run each mode at each concurrency
    (after a warm-up run), stop it; returns the runs and the server's engine, start times and memory."""
    proc, port, start_times = start_server(col_path, args, workers)
    runs: list[dict[str, Any]] = []
    try:
        engine = server_info(port)["engine"]
        memory_ready = memory_mib(proc.pid)
        for mode, make, check, count in modes:
            load_run(port, make, check, min(count, 4 * max(levels)), max(levels), args.max_seconds)  # warm-up
            for level in levels:
                logger.info("serve: %s search, concurrency %d, %s, forward workers %s", mode, level, engine, workers)
                before, cpu_before, client_before = batch_counts(port), cpu_seconds(proc.pid), _own_cpu()
                threads_before = thread_cpu_seconds(proc.pid)
                result = load_run(port, make, check, count, level, args.max_seconds)
                after = batch_counts(port)
                result["server_cpu_ms_per_request"] = (cpu_seconds(proc.pid) - cpu_before) * 1000 / result["requests"]
                result["server_cpu_ms_per_request_by_thread"] = {
                    group: (seconds - threads_before[group]) * 1000 / result["requests"]
                    for group, seconds in thread_cpu_seconds(proc.pid).items()
                }
                result["client_cpu_ms_per_request"] = (_own_cpu() - client_before) * 1000 / result["requests"]
                passes = after[1] - before[1]
                result["mean_forward_batch"] = (after[0] - before[0]) / passes if passes else None
                runs.append({"mode": mode, "engine": engine, "forward_workers": workers, **result})
        memory_end = memory_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    server = {
        "engine": engine,
        "forward_workers": workers,
        "start": start_times,
        "memory": {"after_ready": memory_ready, "at_end": memory_end},
    }
    return runs, server


def server_info(port: int) -> dict[str, Any]:
    import http.client
    import json

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/info")
    info: dict[str, Any] = json.loads(conn.getresponse().read())
    conn.close()
    return info


def _own_cpu() -> float:
    """CPU seconds of this process so far (the load's client threads, while a load run is all that runs here)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _engine_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for name in ("torch", "onnxruntime", "faiss-cpu", "fastapi", "uvicorn", "pillow"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def _by_thread(run: dict[str, Any]) -> str:
    split = run["server_cpu_ms_per_request_by_thread"]
    return (
        f"event loop {split['event_loop']:.1f}, other threads {split['other_threads']:.1f}, "
        f"forward workers {split['forward_workers']:.1f}"
    )


def _table(
    runs: list[dict[str, Any]],
    reference: dict[str, Any],
    servers: list[dict[str, Any]],
    ratios: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {
            "measure": f"{r['mode']} search, concurrency {r['concurrency']}, {r['engine']}"
            + ("" if r["forward_workers"] == "auto" else f", {r['forward_workers']} forward worker(s)"),
            "QPS": r["qps"],
            "p50 ms": r["p50_ms"],
            "p95 ms": r["p95_ms"],
            "p99 ms": r["p99_ms"],
            "note": f"{r['requests']} requests, mean batch {r['mean_forward_batch'] or 0:.1f}, "
            f"CPU a request: server {r['server_cpu_ms_per_request']:.1f} ms ({_by_thread(r)}), "
            f"client {r['client_cpu_ms_per_request']:.1f} ms; {r['server_errors']} 5xx, {r['wrong_answers']} wrong",
        }
        for r in runs
    ]
    search = reference["collection_search"]
    rows.append(
        {
            "measure": "in-process Collection.search loop (torch)",
            "QPS": search["qps"],
            "p50 ms": search["p50_ms"],
            "p95 ms": search["p95_ms"],
        }
    )
    for engine, rates in reference["forward_images_per_s"].items():
        for size, rate in rates.items():
            rows.append(
                {"measure": f"in-process forward, {engine}, batch {size}", "QPS": rate, "note": "images per second"}
            )
    for r in ratios:
        workers = "" if r["forward_workers"] == "auto" else f", {r['forward_workers']} forward worker(s)"
        rows.append(
            {
                "measure": f"{r['engine']}{workers}: upload QPS at the top concurrency / best batched forward rate",
                "note": f"{r['ratio']:.2f} ({r['upload_qps']:.1f} / {r['batched_forward_images_per_s']:.1f})",
            }
        )
        rows.append(
            {
                "measure": f"{r['engine']}{workers}: CPU time, an upload search at the top concurrency (server) / an "
                "image at the best forward rate",
                "note": f"{r['server_cpu_ms_per_upload']:.1f} ms / {r['forward_cpu_ms_per_image']:.1f} ms",
            }
        )
    for server in servers:
        if server["forward_workers"] != servers[0]["forward_workers"] and server["engine"] == servers[0]["engine"]:
            continue
        start, memory = server["start"], server["memory"]["at_end"]
        rows.append({"measure": f"{server['engine']}: start to live", "note": f"{start['live_s']:.1f} s"})
        rows.append(
            {
                "measure": f"{server['engine']}: start to ready (model loaded and warm)",
                "note": f"{start['ready_s']:.1f} s",
            }
        )
        rows.append(
            {"measure": f"{server['engine']}: server peak resident memory", "note": f"{memory['peak_rss_mib']:.0f} MiB"}
        )
    return rows
