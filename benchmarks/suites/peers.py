"""Peers suite: simsearch side by side with the libraries a user would otherwise pick, each pair in one process on the
same data: training (simsearch's loop against pytorch-metric-learning: samples/s and Fashion-MNIST P@1), index choice
(the engine's tuner against autofaiss under the same memory budget: recall@10, single-query QPS, build time, memory)
and HNSW (the engine's faiss build against hnswlib at the same recall).

The peers are the `peers` extra (pip install -e '.[peers]'); a part whose peer is missing is skipped with a message.
Each part records its own command, date, seconds, versions, threads and load average, and `--parts` runs some of them:
the parts not run are carried over from the record already in the output folder (each with its own run's facts), so
one part can be re-measured without re-running the others. Ratios are only ever taken within one part.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import faiss

from benchmarks.record import environment, git_commit
from benchmarks.suites import BenchmarkError

logger = logging.getLogger(__name__)

HELP = "simsearch vs pytorch-metric-learning (training), autofaiss (index choice), hnswlib (HNSW), side by side"
PARTS = ("train", "index", "hnsw")
#: The Python package each part's peer comes from (import name, distribution name).
PEERS = {
    "train": ("pytorch_metric_learning", "pytorch-metric-learning"),
    "index": ("autofaiss", "autofaiss"),
    "hnsw": ("hnswlib", "hnswlib"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help="comma-separated parts to run; none: only rewrite the record from its parts [default: all]",
    )
    parser.add_argument("--sizes", default="100000", help="collection sizes of the index part (1000000: see HELP)")
    parser.add_argument("--hnsw-size", type=int, default=100_000, help="vectors of the HNSW part")
    parser.add_argument("--memory-budget", default="2G", help="the index budget both index choosers get")
    parser.add_argument("--queries", type=int, default=500, help="queries scored for recall@10")
    parser.add_argument("--single-queries", type=int, default=200, help="queries timed one at a time")
    parser.add_argument("--build-threads", type=int, default=2, help="threads of the index builds")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs of both sides")
    parser.add_argument("--train-threads", type=int, default=2, help="torch threads of both training sides")
    parser.add_argument("--limit", type=int, default=None, help="first N Fashion-MNIST training images")
    parser.add_argument("--sigma", type=float, help="noise norm of the grown vectors [default: the search suite's]")


def missing_peer(part: str) -> str | None:
    """Why `part` cannot run here (its peer package is not installed), or None."""
    module, dist = PEERS[part]
    if importlib.util.find_spec(module) is None:
        return f"skipped: {dist} is not installed (pip install -e '.[peers]')"
    return None


def _part_facts(args: argparse.Namespace, started: float, threads: int) -> dict[str, Any]:
    """The run facts a part carries with it: its command, date, seconds, versions, threads, load average."""
    from importlib.metadata import PackageNotFoundError, version

    env = environment(args.device)
    env["part_threads"] = threads
    for _, dist in PEERS.values():
        try:
            env[dist] = version(dist)
        except PackageNotFoundError:
            env[dist] = None
    return {
        "command": _command(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "git": git_commit(),
        "environment": env,
    }


def _command() -> str:
    """The command line of this run, when it came through `python -m benchmarks`."""
    if Path(sys.argv[0]).parent.name == "benchmarks":
        return shlex.join(["python", "-m", "benchmarks", *sys.argv[1:]])
    return "(called from Python)"


def _train_part(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.peers_training import TrainSetup, compare

    setup = TrainSetup(epochs=args.epochs, threads=args.train_threads, seed=args.seed, limit=args.limit)
    if args.tiny:
        setup.epochs, setup.limit, setup.test_limit = 1, 640, 200
    return compare(setup)


def _vectors(args: argparse.Namespace, n: int) -> Any:
    from benchmarks.peers_indexes import Vectors
    from benchmarks.search_data import make_dataset

    data = make_dataset("caltech", args, n)
    return Vectors.make(data, n, args.queries), data.describe


def _index_part(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.peers_indexes import Timing, index_choice

    timing = Timing(args.single_queries, args.build_threads)
    sizes = [1_000] if args.tiny else _sizes(args.sizes)
    out: dict[str, Any] = {"sizes": []}
    for n in sizes:
        vectors, describe = _vectors(args, n)
        out["data"] = describe
        # the engine keeps Flat up to its exact limit: measure the tuner's own pick beside it there
        out["sizes"].append(index_choice(vectors, args.memory_budget, timing, forced=True))
        del vectors
    return out


def _hnsw_part(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.peers_indexes import Timing, hnsw_pair

    vectors, describe = _vectors(args, 1_000 if args.tiny else args.hnsw_size)
    return {"data": describe, **hnsw_pair(vectors, Timing(args.single_queries, args.build_threads))}


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError as exc:
        raise BenchmarkError(f"--sizes must be comma-separated integers, got {text!r}") from exc
    if not sizes or min(sizes) < 1_000:
        raise BenchmarkError("--sizes needs sizes of at least 1000")
    return sizes


RUNNERS = {"train": _train_part, "index": _index_part, "hnsw": _hnsw_part}
RUN_ORDER = ("index", "hnsw", "train")


def run(args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """Run the asked parts in turn (training last, see below), carry the others over."""
    parts = [p.strip() for p in str(args.parts).split(",") if p.strip()]
    if parts == ["none"]:
        parts = []  # measure nothing: rewrite the record's files from the parts already there
    elif not parts or set(parts) - set(PARTS):
        raise BenchmarkError(
            f"--parts takes a comma-separated subset of {', '.join(PARTS)} or none, got {args.parts!r}"
        )
    if args.tiny:
        args.queries, args.single_queries = 50, 20
    record: dict[str, Any] = {"parts": _carried(out_dir / "peers.json", parts)}
    # The faiss parts first: importing pytorch-metric-learning imports faiss.contrib.torch_utils, which patches
    # faiss's index methods for the rest of the process (autofaiss's own tuning then failed on torch tensors).
    for part in sorted(parts, key=RUN_ORDER.index):
        reason = missing_peer(part)
        if reason is not None:
            print(f"peers: {part}: {reason}", file=sys.stderr)
            record["parts"][part] = {"skipped": reason}
            continue
        started = time.time()
        logger.info("peers: running the %s part", part)
        result = RUNNERS[part](args)
        threads = args.train_threads if part == "train" else args.build_threads
        record["parts"][part] = {**_part_facts(args, started, threads), **result}
        faiss.omp_set_num_threads(args.threads)
    return {"record": record, "figures": [], "table": table_rows(record["parts"])}


def _carried(path: Path, running: list[str]) -> dict[str, Any]:
    """The parts of an earlier record that this run does not re-measure (each keeps its own run's facts)."""
    if not path.is_file():
        return {}
    try:
        earlier = json.loads(path.read_text(encoding="utf-8")).get("parts", {})
    except (OSError, ValueError):
        return {}
    return {name: part for name, part in earlier.items() if name in PARTS and name not in running}


def table_rows(parts: dict[str, Any]) -> list[dict[str, Any]]:
    """One Markdown row per side of each part (the record's "table"), each with its part's run (date and load)."""
    rows = _part_rows(parts)
    for row in rows:
        facts = parts.get(row["part"].split()[0], {})
        load = (facts.get("environment") or {}).get("load_average") or [None]
        row["run"] = (
            f"{facts.get('date', '')}, load {load[0]}, {(facts.get('environment') or {}).get('part_threads')} thr"
        )
    return rows


def _part_rows(parts: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    train = parts.get("train", {})
    for side in train.get("sides", []):
        rows.append(
            {
                "part": "train",
                "side": side["library"],
                "setting": f"{train['recipe']['epochs']} epochs, {train['recipe']['threads']} threads",
                "samples_per_s": side["samples_per_s"],
                "p_at_1": side["p_at_1"],
                "seconds": side["wall_s"],
            }
        )
    for size in parts.get("index", {}).get("sizes", []):
        for side in size["sides"]:
            if "error" in side:
                rows.append({"part": f"index {size['n']}", "side": side["side"], "setting": side["error"]})
                continue
            rows.append(_search_row(f"index {size['n']}", side["side"], side))
            raised = side.get("raised_to_reach")
            if raised:
                rows.append(_search_row(f"index {size['n']}", f"{side['side']} raised", {**side, **raised}))
    hnsw = parts.get("hnsw", {})
    builds = {side["library"]: side for side in hnsw.get("sides", [])}
    for level in hnsw.get("matched", []):
        for library, qps in level["qps_1"].items():
            row = {
                **builds[library],
                "factory": "HNSW32",
                "search_params": "(interpolated on its ef sweep)",
                "recall_at_10": level["recall_at_10"],
                "qps_1": qps,
            }
            rows.append(_search_row(f"hnsw {hnsw['n']}", library, row))
    return rows


def _search_row(part: str, side: str, row: dict[str, Any]) -> dict[str, Any]:
    return {
        "part": part,
        "side": side,
        "setting": f"{row.get('factory', '')} {row.get('search_params', '')}".strip(),
        "recall_at_10": row.get("recall_at_10"),
        "qps_1": row.get("qps_1"),
        "seconds": row.get("build_s"),
        "index_mib": row.get("index_mib"),
    }
