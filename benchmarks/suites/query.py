"""Query suite: warm latency of `open_collection(...).search(path)` on a collection of real Caltech-101 photos, split
by stage (decode, transform, forward, index search, store lookup) with p50/p95, beside the measured total; and the
cold `simsearch query` wall time (a fresh process, median of N) against `python -c "import torch"`: through the model
exported into the collection (ONNX Runtime, no torch import), through torch on a copy without the export, and the
cold `simsearch info`, all interleaved in one run.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.suites import (
    BenchmarkError,
    autocast,
    caltech_photo_names,
    copy_photos,
    percentiles_ms,
    prepare,
)

logger = logging.getLogger(__name__)

HELP = "warm search latency by stage (p50/p95) and cold `simsearch query` vs `import torch`"
STAGES = ("decode", "transform", "forward", "search", "store")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", help="'default', a timm name or a checkpoint folder")
    parser.add_argument("--gallery", type=int, default=1000, help="photos in the collection")
    parser.add_argument("--queries", type=int, default=20, help="query photos (not in the collection)")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the queries")
    parser.add_argument("-k", type=int, default=10, help="results per query")
    parser.add_argument("--cold-runs", type=int, default=5, help="fresh `simsearch query` processes (median)")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold command-line timing")
    parser.add_argument(
        "--no-export", action="store_true", help="do not export the model into the collection (cold: torch only)"
    )


def staged_search(col: Any, path: Path, k: int) -> tuple[dict[str, float], list[int]]:
    """One query through the same library functions `Collection.search` calls, timed stage by stage.

    Returns:
        seconds per stage, and the result ids (to check that the staged path finds what `search` finds).
    """
    import torch

    from simsearch.embedding import decode_min_side, forward, transform_for
    from simsearch.images import DEFAULT_MAX_PIXELS, load_image

    embedder = col.embedder
    transform = transform_for(embedder)
    min_side = decode_min_side(embedder.data_config)
    t0 = time.perf_counter()
    image = load_image(path, max_pixels=DEFAULT_MAX_PIXELS, min_side=min_side)
    t1 = time.perf_counter()
    batch = torch.stack([transform(image)])
    t2 = time.perf_counter()
    vectors = forward(embedder, batch)  # ends with .cpu(): a GPU forward is finished when it returns
    t3 = time.perf_counter()
    _, ids = col.index.search(vectors, k)
    t4 = time.perf_counter()
    found = ids[ids >= 0].tolist()
    records = col.store.get_many(found)
    t5 = time.perf_counter()
    stages = dict(zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True))
    return stages, [i for i, r in zip(found, records, strict=True) if r is not None]


def warm_latency(col: Any, queries: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    """Each query `repeats` times: the staged path, then `col.search` itself, back to back (same cache state)."""
    per_stage: dict[str, list[float]] = {s: [] for s in STAGES}
    totals: list[float] = []
    sums: list[float] = []
    mismatches = 0
    with autocast(args.device, args.amp):
        col.search(queries[0], k=args.k)  # loads the model, builds the transform, first-call allocations
        staged_search(col, queries[0], args.k)
        for _ in range(args.repeats):
            for q in queries:
                stages, staged_ids = staged_search(col, q, args.k)
                started = time.perf_counter()
                hits = col.search(q, k=args.k)
                totals.append(time.perf_counter() - started)
                for s in STAGES:
                    per_stage[s].append(stages[s])
                sums.append(sum(stages.values()))
                mismatches += [h.id for h in hits] != staged_ids
    total = percentiles_ms(totals)
    stage_sum = percentiles_ms(sums)
    ratios = np.asarray(sums) / np.asarray(totals)
    return {
        "queries": len(queries),
        "repeats": args.repeats,
        "k": args.k,
        "stages": {s: percentiles_ms(v) for s, v in per_stage.items()},
        "stage_sum": stage_sum,
        "total": total,
        "stage_sum_over_total_median": float(np.median(ratios)),
        "stage_sum_within_15pct_of_total": bool(abs(np.median(ratios) - 1) <= 0.15),
        "staged_results_differ_from_search": int(mismatches),
    }


def _simsearch_command() -> list[str]:
    """The installed `simsearch` console script beside this Python, else the same entry point through `-c`."""
    script = Path(sys.executable).parent / "simsearch"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-c", "import sys; from cli.main import main; sys.exit(main())"]


def _wall(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise BenchmarkError(f"`{' '.join(command[:3])} ...` failed with status {done.returncode}: {tail[0]}")
    return seconds


def cold_query(col_path: Path, torch_path: Path | None, query: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Median wall times of fresh processes, interleaved run by run so that they share the machine's load:
    `simsearch query` on the collection (through its export when it has one), `python -c "import torch"`,
    `simsearch query` on `torch_path` (a copy without the export, when given) and `simsearch info`."""
    env = dict(os.environ)
    threads = str(args.threads)
    env.update(OMP_NUM_THREADS=threads)  # the CLI has no threads option: match the warm runs' torch threads
    device = ["--device", "cuda" if args.device.startswith("cuda") else "cpu"]
    base = _simsearch_command()

    def query_on(path: Path) -> list[str]:
        return [*base, "query", str(query), "-c", str(path), "-k", str(args.k), *device]

    commands = {"simsearch_query": query_on(col_path), "import_torch": [sys.executable, "-c", "import torch"]}
    if torch_path is not None:
        commands["simsearch_query_torch"] = query_on(torch_path)
    commands["simsearch_info"] = [*base, "info", "-c", str(col_path)]
    seconds: dict[str, list[float]] = {name: [] for name in commands}
    load = [os.getloadavg()[0]]
    for _ in range(args.cold_runs):
        for name, command in commands.items():
            seconds[name].append(_wall(command, env))
        load.append(os.getloadavg()[0])
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    import_median = medians["import_torch"]
    return {
        "runs": args.cold_runs,
        "command": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(commands["simsearch_query"])),
        **{f"{name}_s": values for name, values in seconds.items()},
        **{f"{name}_s_median": value for name, value in medians.items()},
        "import_torch_s_median": import_median,
        "ratio_query_over_import_torch": medians["simsearch_query"] / import_median,
        "ratio_query_torch_over_import_torch": (
            medians["simsearch_query_torch"] / import_median if torch_path is not None else None
        ),
        "ratio_info_over_import_torch": medians["simsearch_info"] / import_median,
        "load_average_1min": {"min": min(load), "max": max(load), "samples": load},
    }


def export_model(col_path: Path, args: argparse.Namespace) -> dict[str, Any] | None:
    """Export the collection's model for torch-free queries (as `simsearch index --onnx` does); None when skipped or
    the `onnx` extra is missing."""
    import importlib.util

    if args.no_export or args.device.startswith("cuda"):
        return None
    missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        logger.warning("query: no export (%s not installed: pip install simsearch[onnx])", ", ".join(missing))
        return None
    import onnxruntime

    import simsearch
    from simsearch.collection.query_model import export_query_model

    with simsearch.open_collection(col_path, device=args.device) as col:
        started = time.perf_counter()
        check = export_query_model(col)
        seconds = time.perf_counter() - started
    return {
        "photos_checked": check.photos,
        "min_cosine": check.min_cosine,
        "seconds": seconds,
        "onnxruntime": onnxruntime.__version__,
    }


def run(args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """Build a temporary collection of `--gallery` photos, time warm searches by stage, then cold CLI queries."""
    import simsearch

    if args.tiny:
        args.gallery, args.queries, args.repeats = min(args.gallery, 8), min(args.queries, 2), 1
        args.cold_runs, args.k = min(args.cold_runs, 1), min(args.k, 5)
    if args.gallery < 1 or args.queries < 1 or args.repeats < 1 or args.cold_runs < 1:
        raise BenchmarkError("--gallery, --queries, --repeats and --cold-runs must be at least 1")
    photos = caltech_photo_names(args.gallery + args.queries, args.data)
    # The photos come class by class: every stride-th one is a query, so queries and gallery both span the classes.
    stride = len(photos) // args.queries
    queries = photos[stride - 1 :: stride][: args.queries]
    query_set = set(queries)
    gallery = [p for p in photos if p not in query_set][: args.gallery]

    with tempfile.TemporaryDirectory(prefix="bench-query-") as tmp:
        col_path = Path(tmp) / "col"
        copy_photos(gallery, Path(tmp) / "photos")
        logger.info("query: indexing %d photos", len(gallery))
        with simsearch.Collection.open(col_path, create=True, model=args.model, device=args.device) as col:
            report = col.index_folder(Path(tmp) / "photos")
        if report.added != len(gallery):
            raise BenchmarkError(f"the collection took {report.added} of {len(gallery)} photos")
        col = simsearch.open_collection(col_path, device=args.device)
        try:
            prepare(col.embedder, args.device)
            model = {"spec": args.model, "model_id": col.embedder.model_id, "embed_dim": int(col.embedder.embed_dim)}
            index = {"factory": col.index.factory, "vectors": len(col)}
            logger.info("query: warm latency, %d queries x %d", len(queries), args.repeats)
            warm = warm_latency(col, queries, args)
        finally:
            col.close()
        cold = None
        export = None
        if not args.no_cold:
            torch_path = None
            export = export_model(col_path, args)
            if export is not None:
                # The same collection without its export: the query loads torch and the model.
                torch_path = Path(tmp) / "col-torch"
                shutil.copytree(col_path, torch_path, ignore=shutil.ignore_patterns("model.onnx*"))
            logger.info("query: cold command line, %d runs", args.cold_runs)
            cold = cold_query(col_path, torch_path, queries[0], args)

    if not warm["stage_sum_within_15pct_of_total"]:
        logger.warning(
            "the stages add up to %.2f of the measured search time: something on the search path is not timed",
            warm["stage_sum_over_total_median"],
        )
    if warm["staged_results_differ_from_search"]:
        logger.warning("the staged path found other results than search() for some queries: the stages are not it")
    figure_path = out_dir / "query_latency.png"
    _plot(warm, cold, figure_path)
    record = {
        "model": model,
        "dataset": "Caltech-101 photos (101 object classes, BACKGROUND_Google dropped)",
        "collection": {"images": len(gallery), **index},
        "protocol": (
            "warm: one process, collection opened and model loaded, one warm-up query; then per query the staged "
            "path (simsearch.images.load_image with JPEG draft, the model's eval transform, "
            "simsearch.embedding.forward, VectorIndex.search, Store.get_many) and Collection.search back to back; "
            "cold: fresh processes, interleaved run by run, median: `simsearch query` on the collection with the model "
            "exported into it (ONNX Runtime, checked against torch on the collection's photos at export), `python -c "
            "'import torch'`, `simsearch query` on a copy without the export (torch and timm load), `simsearch info`; "
            "query photos are not in the collection"
        ),
        "amp": args.amp,
        "warm": warm,
        "export": export,
        "cold": cold,
    }
    return {"record": record, "figures": [figure_path], "table": _table(warm, cold)}


def _table(warm: dict[str, Any], cold: dict[str, Any] | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for s in STAGES:
        rows.append(
            {"measure": f"warm: {s}", "p50 ms": warm["stages"][s]["p50_ms"], "p95 ms": warm["stages"][s]["p95_ms"]}
        )
    rows.append(
        {"measure": "warm: sum of stages", "p50 ms": warm["stage_sum"]["p50_ms"], "p95 ms": warm["stage_sum"]["p95_ms"]}
    )
    rows.append(
        {
            "measure": "warm: Collection.search total",
            "p50 ms": warm["total"]["p50_ms"],
            "p95 ms": warm["total"]["p95_ms"],
            "note": f"sum/total {warm['stage_sum_over_total_median']:.2f}",
        }
    )
    if cold is not None:
        torch_ratio = cold["ratio_query_torch_over_import_torch"]
        load = cold["load_average_1min"]
        rows.append(
            {
                "measure": "cold: simsearch query" + (" (exported model)" if torch_ratio is not None else ""),
                "p50 ms": 1000 * cold["simsearch_query_s_median"],
                "note": f"{cold['ratio_query_over_import_torch']:.2f} x import torch",
            }
        )
        rows.append({"measure": "cold: python -c 'import torch'", "p50 ms": 1000 * cold["import_torch_s_median"]})
        if torch_ratio is not None:
            rows.append(
                {
                    "measure": "cold: simsearch query (torch, no export)",
                    "p50 ms": 1000 * cold["simsearch_query_torch_s_median"],
                    "note": f"{torch_ratio:.2f} x import torch",
                }
            )
        rows.append(
            {
                "measure": "cold: simsearch info",
                "p50 ms": 1000 * cold["simsearch_info_s_median"],
                "note": f"{cold['ratio_info_over_import_torch']:.2f} x import torch",
            }
        )
        rows.append(
            {
                "measure": "load average (1 min) during the cold runs",
                "note": f"{load['min']:.2f} to {load['max']:.2f} on {os.cpu_count()} cores",
            }
        )
    return rows


def _plot(warm: dict[str, Any], cold: dict[str, Any] | None, path: Path) -> None:
    from benchmarks.record import figure

    with figure(path, width=10.0, height=3.8, ncols=2) as (left, right):
        bottom = 0.0
        for s in STAGES:
            value = warm["stages"][s]["p50_ms"]
            left.bar(["stages (p50 each)"], [value], bottom=[bottom], label=s)
            bottom += value
        left.bar(["Collection.search (p50)"], [warm["total"]["p50_ms"]], color="0.4", label="measured total")
        left.set_ylim(0, 1.45 * max(bottom, warm["total"]["p50_ms"]))  # room for the legend above the bars
        left.set_ylabel("ms")
        left.set_title(f"warm query, {warm['queries']} queries x {warm['repeats']}")
        left.legend(fontsize=8, ncol=3, loc="upper center")
        if cold is not None:
            names = ["import torch", "query", "info"]
            values = [cold["import_torch_s_median"], cold["simsearch_query_s_median"], cold["simsearch_info_s_median"]]
            if cold["ratio_query_torch_over_import_torch"] is not None:
                names[1] = "query (export)"
                names.append("query (torch)")
                values.append(cold["simsearch_query_torch_s_median"])
            right.bar(names, values, color=["0.6", "tab:blue", "tab:green", "tab:orange"][: len(names)])
            right.set_ylabel("s (median)")
            right.set_title(f"cold process, {cold['runs']} runs: {cold['ratio_query_over_import_torch']:.2f}x")
        else:
            right.set_axis_off()
            right.text(0.5, 0.5, "cold timing skipped (--no-cold)", ha="center", va="center")
