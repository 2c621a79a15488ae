"""Reliability suite: what a hard-nosed tester does to the engine, as numbers that must all stay at zero.

1. Crash loop: `simsearch index` and `simsearch remove` on a copy of real photos (Caltech-101; the bundled samples
   with --tiny), killed with SIGKILL at random times; after each kill the collection must open with an index that
   agrees with its store; then a run to completion must hold every photo, each its own top hit at score 1.
2. Fuzz corpus: damaged files, odd image modes, odd names, special files, deep folders, made on the fly and indexed
   with `simsearch index` under a time limit: no hang, no crash, every good image in, every bad one counted; then
   special files and a bomb given to `simsearch query` must each be a one-line error.
3. Concurrency: threads search one open collection while a writer process adds and removes images: no exception,
   every list k long, no image returned once its removal was committed.

The record counts kills, files and searches, and lost images, crashes and hangs (all zero when all is well); any
failure is listed under "failures" with what was seen.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import REPO
from benchmarks.suites import BenchmarkError, caltech_photo_names, copy_photos
from benchmarks.suites._concurrent_search import concurrent_searches
from benchmarks.suites._fuzz_corpus import build_corpus, check_indexed
from benchmarks.suites._kill_loop import HANG_S, KillLoop, child_env, simsearch

logger = logging.getLogger(__name__)

HELP = "SIGKILL loop during index/remove, a fuzz corpus through index, searches beside a writer: nothing lost"
SAMPLES = REPO / "samples" / "caltech101"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kills", type=int, default=50, help="SIGKILLs of index and remove runs")
    parser.add_argument("--photos", type=int, default=150, help="Caltech-101 photos of the crash loop")
    parser.add_argument("--fuzz-files", type=int, default=1000, help="entries of the fuzz corpus")
    parser.add_argument("--searches", type=int, default=10_000, help="searches beside the writer")
    parser.add_argument("--search-threads", type=int, default=4, help="threads that search at once")
    parser.add_argument("--copies", type=int, default=30, help="photos the writer adds and removes in turn")
    parser.add_argument("--writer-rounds", type=int, default=50, help="rounds of the writer the searches last at least")
    parser.add_argument("-k", type=int, default=10, help="results per search")
    parser.add_argument("--parts", default="kills,fuzz,concurrency", help="comma-separated parts to run")
    parser.add_argument("--work", type=Path, help="working folder, kept afterwards [default: a temporary one]")


def _sizes(args: argparse.Namespace) -> dict[str, int]:
    if args.tiny:
        return {"kills": 3, "photos": 0, "fuzz_files": 120, "searches": 400, "copies": 6, "writer_rounds": 2}
    return {"kills": args.kills, "photos": args.photos, "fuzz_files": args.fuzz_files, "searches": args.searches,
            "copies": args.copies, "writer_rounds": args.writer_rounds}  # fmt: skip


def _photos(n: int, data: Path, dest: Path) -> list[Path]:
    """`n` Caltech-101 photos copied under `dest` (0: the bundled samples), in a folder of their own."""
    if n == 0:
        shutil.copytree(SAMPLES, dest)
    else:
        copy_photos(caltech_photo_names(n, data), dest)
    return sorted(p for p in dest.rglob("*") if p.is_file() and p.suffix.lower() == ".jpg")


def _fuzz(work: Path, photos: list[Path], n_files: int, seed: int, threads: int) -> dict[str, Any]:
    corpus = build_corpus(work / "fuzz", photos[:48], n_files, seed)
    col = work / "fuzz-collection"
    failures: list[str] = []
    runs: list[dict[str, Any]] = []
    for attempt in ("first", "again"):
        t0 = time.monotonic()
        try:
            done = subprocess.run(
                simsearch("index", corpus.root, "-c", col, "--workers", "0", "--json"),
                capture_output=True,
                env=child_env(threads),
                timeout=HANG_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {"files": corpus.total, "hangs": 1, "crashes": 0, "failures": [f"the {attempt} index run hung"]}
        stderr = done.stderr.decode(errors="replace")
        if done.returncode != 0 or "Traceback" in stderr:
            return {"files": corpus.total, "hangs": 0, "crashes": 1, "failures": [f"{attempt} run: {stderr[-400:]}"]}
        report = json.loads(done.stdout)
        runs.append({**report, "run": attempt, "wall_seconds": round(time.monotonic() - t0, 1)})
    from simsearch import open_collection

    with open_collection(col, readonly=True) as c:
        stored = {r.path for r in c.store.records()}
    checked = check_indexed(corpus, runs[0], stored)
    failures += checked.pop("failures")
    if runs[1]["added"] or runs[1]["updated"] or runs[1]["removed"]:
        failures.append(f"a second run over the same files changed the collection: {runs[1]['added']} added")
    queries = _odd_queries(corpus, col, threads)
    failures += [f"query {name}: {problem}" for name, problem in queries.items() if problem]
    return {
        "files": corpus.total,
        "categories": corpus.categories,
        **checked,
        "first_run_seconds": runs[0]["wall_seconds"],
        "second_run_seconds": runs[1]["wall_seconds"],
        "odd_queries": len(queries),
        "hangs": 0,
        "crashes": 0,
        "failures": failures,
    }


def _odd_queries(corpus: Any, col: Path, threads: int) -> dict[str, str]:
    """`simsearch query` given a named pipe, a link to /dev/zero, a dangling link and a bomb: each must end at once
    with an error line and no traceback. Returns what went wrong per query (empty strings when nothing did)."""
    special = [os.fsdecode(p) for p in corpus.entries["special"]]
    picks = {
        "named pipe": next(p for p in special if "fifo_" in p),
        "link to /dev/zero": next(p for p in special if "zero_" in p),
        "dangling link": next(p for p in special if "dangling_" in p),
        "decompression bomb": next(os.fsdecode(p) for p in corpus.entries["bad"] if b"bomb_" in p),
    }
    problems: dict[str, str] = {}
    for name, path in picks.items():
        try:
            done = subprocess.run(
                simsearch("query", path, "-c", col), capture_output=True, env=child_env(threads), timeout=300
            )
        except subprocess.TimeoutExpired:
            problems[name] = "hung"
            continue
        text = done.stderr.decode(errors="replace")
        lines = text.strip().splitlines()
        # Status 1 and one line from the library, or click's usage error (status 2) for a path that does not exist.
        ended = bool(lines) and lines[-1].startswith("Error") and "Traceback" not in text
        ok = ended and (done.returncode == 1 and len(lines) == 1 or done.returncode == 2)
        problems[name] = "" if ok else f"status {done.returncode}, stderr {lines[-3:]}"
    return problems


def run(args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    sizes = _sizes(args)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - {"kills", "fuzz", "concurrency"}
    if unknown:
        raise BenchmarkError(f"unknown --parts {', '.join(sorted(unknown))}: choose among kills, fuzz, concurrency")
    work = args.work or Path(tempfile.mkdtemp(prefix="simsearch-reliability-"))
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    record: dict[str, Any] = {"sizes": sizes}
    try:
        photos_dir = work / "photos"
        if photos_dir.exists():
            shutil.rmtree(photos_dir)
        photos = _photos(sizes["photos"], args.data, photos_dir)
        col = work / "collection"
        if "kills" in parts or "concurrency" in parts:
            shutil.rmtree(col, ignore_errors=True)
            kills = sizes["kills"] if "kills" in parts else 0
            logger.info("crash loop: %d kills on %d photos", kills, len(photos))
            loop = KillLoop(col, photos_dir, photos, kills, args.seed, args.threads, logs)
            record["crash_loop"] = loop.run()
        if "fuzz" in parts:
            logger.info("fuzz corpus: %d entries", sizes["fuzz_files"])
            record["fuzz"] = _fuzz(work, _photos(0, args.data, work / "fuzz-photos"), sizes["fuzz_files"],
                                   args.seed, args.threads)  # fmt: skip
        if "concurrency" in parts:
            copies = work / "copies"
            copies.mkdir(exist_ok=True)
            for i, photo in enumerate(photos[: sizes["copies"]]):
                shutil.copyfile(photo, copies / f"copy_{i:03d}.jpg")
            logger.info("concurrency: %d searches beside a writer", sizes["searches"])
            record["concurrency"] = concurrent_searches(
                col, sorted(copies.iterdir()), sizes["searches"], args.search_threads, args.k, args.seed, logs,
                args.threads, sizes["writer_rounds"],
            )  # fmt: skip
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return {"record": _summary(record), "figures": [], "table": _table(record)}


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    parts = [record[p] for p in ("crash_loop", "fuzz", "concurrency") if p in record]
    failures = [f for part in parts for f in part["failures"]]
    crashes = record.get("fuzz", {}).get("crashes", 0) + record.get("concurrency", {}).get("exceptions", 0)
    return {
        **record,
        "kills": record.get("crash_loop", {}).get("kills", 0),
        "fuzzed_files": record.get("fuzz", {}).get("files", 0),
        "searches": record.get("concurrency", {}).get("searches", 0),
        "lost_images": record.get("crash_loop", {}).get("lost_images", 0),
        "crashes": crashes,
        "hangs": sum(part.get("hangs", 0) for part in parts),
        "failures": failures,
        "passed": not failures,
    }


def _table(record: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    if "crash_loop" in record:
        r = record["crash_loop"]
        rows.append({"part": "SIGKILL during index/remove", "count": r["kills"], "unit": "kills",
                     "outcome": f"{r['indexed_at_the_end']}/{r['photos']} photos at the end, worst self-query "
                                f"{r['self_query_worst_top_score']}", "failures": len(r["failures"])})  # fmt: skip
    if "fuzz" in record:
        r = record["fuzz"]
        outcome = f"{r.get('good_indexed', 0)}/{r.get('good', 0)} good images in, {r.get('skipped', 0)} skipped, "
        outcome += f"{r.get('special_counted', 0)} special files counted"
        rows.append({"part": "fuzz corpus through index", "count": r["files"], "unit": "files", "outcome": outcome,
                     "failures": len(r["failures"])})  # fmt: skip
    if "concurrency" in record:
        r = record["concurrency"]
        outcome = f"{r['threads']} threads beside {r['writer_rounds']} writer rounds: {r['exceptions']} exceptions, "
        outcome += f"{r['short_lists']} short lists, {r['stale_results']} stale results"
        rows.append({"part": "searches beside a writer", "count": r["searches"], "unit": "searches",
                     "outcome": outcome, "failures": len(r["failures"])})  # fmt: skip
    return rows
