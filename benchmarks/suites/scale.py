"""Scale suite: the Ray engine against the local engine on the same Caltech-101 photos, images/s side by side in one
run (the machine's load average beside each); and the on-disk IVF build (shards filled from a trained index, merged
on disk) against the same IVF built in memory over N synthetic vectors: seconds and peak memory of every step, and the
memory of searching each index (opened memory-mapped from disk, or read whole). Each index step runs in a process
of its own, so that its peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import REPO
from benchmarks.suites import BenchmarkError, caltech_photo_names, copy_photos

logger = logging.getLogger(__name__)

HELP = "Ray engine vs local engine images/s; on-disk IVF merge vs in-memory build (time, peak memory)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=int, default=2000, help="Caltech-101 photos each engine indexes")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1, help="runs of each engine, in alternating order")
    parser.add_argument("--address", default=None, help="Ray cluster to join [default: start one on this machine]")
    parser.add_argument("--vectors", type=int, default=1_000_000, help="synthetic vectors of the index build")
    parser.add_argument("--dim", type=int, default=256, help="their dimension")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--factory", default=None, help="IVF factory [default: the engine's on-disk choice]")
    parser.add_argument("--nprobe", type=int, default=64, help="nprobe of the search comparison")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--no-engines", action="store_true", help="skip the engine comparison")
    parser.add_argument("--no-merge", action="store_true", help="skip the index build comparison")


def run(args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    if args.tiny:
        args.images, args.vectors, args.shards, args.queries = 48, 20_000, 4, 100
    record: dict[str, Any] = {"load_average_at_start": os.getloadavg(), "cores": os.cpu_count()}
    table: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        if not args.no_engines:
            record["engines"] = engines(args, Path(tmp))
            for name in ("local", "ray"):
                row = record["engines"][name]
                table.append({"what": f"{name} engine", "images_per_s": row["images_per_s"], "load_avg": row["load"]})
        if not args.no_merge:
            record["index_build"] = index_build(args, Path(tmp))
            for name, row in record["index_build"]["steps"].items():
                table.append(
                    {
                        "what": name,
                        "seconds": row["seconds"],
                        "peak_anon_MiB": row["peak_anon_bytes"] / 2**20,
                        "peak_file_MiB": row["peak_file_bytes"] / 2**20,
                    }
                )
    record["load_average_at_end"] = os.getloadavg()
    return {"record": record, "figures": [_draw(record, out_dir)], "table": table}


def _draw(record: dict[str, Any], out_dir: Path) -> Path:
    """Images/s of each engine, and the peak memory (the process's own, and mapped file pages) of each index step."""
    from benchmarks.record import figure

    path = out_dir / "scale.png"
    with figure(path, width=11.0, ncols=2) as (left, right):
        if "engines" in record:
            names = ["local", "ray"]
            left.bar(names, [record["engines"][n]["images_per_s"] for n in names], color=["#888888", "#3b7dd8"])
            left.set_ylabel("images/s")
            left.set_title(f"{record['engines']['images']} photos, same run")
        else:
            left.set_axis_off()
        if "index_build" in record:
            steps = record["index_build"]["steps"]
            names = list(steps)
            y = np.arange(len(names))
            right.barh(y - 0.2, [steps[n]["peak_anon_bytes"] / 2**20 for n in names], 0.4, label="own (anonymous)")
            right.barh(y + 0.2, [steps[n]["peak_file_bytes"] / 2**20 for n in names], 0.4, label="mapped files")
            right.set_yticks(y, names)
            right.invert_yaxis()
            right.set_xlabel("peak MiB")
            right.legend()
            build = record["index_build"]
            right.set_title(f"{build['vectors']:,} x {build['dim']}-d, {build['factory']}")
        else:
            right.set_axis_off()
    return path


# ------------------------------------------------------------------------------------------------------ the engines


def engines(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Index the same photos into fresh collections with each engine, `--rounds` times, the order alternating
    (local then Ray, Ray then local, ...) so that a change of the machine's load between runs weighs on both alike;
    Ray's cluster start is timed apart, model loading is not counted, the Ray actors' start is (every run pays it)."""
    from simsearch import Collection, open_collection
    from simsearch.scale import RayEngine, ray_available

    if not ray_available():
        raise BenchmarkError("the scale suite compares the Ray engine: install the `ray` extra")
    photos = copy_photos(caltech_photo_names(args.images, args.data), tmp / "photos")
    out: dict[str, Any] = {"images": args.images, "batch_size": args.batch_size, "rounds": args.rounds}
    started = time.perf_counter()
    ray_engine = RayEngine(args.address).start()
    out["ray_cluster_start_s"] = time.perf_counter() - started
    runs: dict[str, list[dict[str, Any]]] = {"local": [], "ray": []}
    try:
        for round_no in range(args.rounds):
            order = [("local", None), ("ray", ray_engine)]
            for name, engine in order if round_no % 2 == 0 else order[::-1]:
                with Collection.open(tmp / f"{name}-{round_no}", create=True, device=args.device) as col:
                    load = os.getloadavg()[0]
                    started = time.perf_counter()
                    report = col.index_folder(photos, batch_size=args.batch_size, engine=engine)
                    seconds = time.perf_counter() - started
                runs[name].append(
                    {
                        "embedded": report.embedded,
                        "seconds": seconds,
                        "images_per_s": report.embedded / seconds,
                        "load": [load, os.getloadavg()[0]],
                    }
                )
                logger.info("%s engine: %.1f images/s", name, runs[name][-1]["images_per_s"])
    finally:
        ray_engine.close()
    for name, done in runs.items():
        total = sum(r["seconds"] for r in done)
        out[name] = {
            "images_per_s": sum(r["embedded"] for r in done) / total,
            "load": [round(x, 2) for r in done for x in r["load"]],
            "runs": done,
        }
    out["ray_over_local"] = out["ray"]["images_per_s"] / out["local"]["images_per_s"]
    with open_collection(tmp / "local-0") as a, open_collection(tmp / "ray-0") as b:
        ids = a.store.ids()
        out["same_ids_and_paths"] = ids.tolist() == b.store.ids().tolist() and all(
            x.path == y.path for x, y in zip(a.store.get_many(ids), b.store.get_many(ids), strict=True) if x and y
        )
        cos = np.einsum("ij,ij->i", a.store.vectors(ids, a.dim), b.store.vectors(ids, b.dim))
        out["min_cosine"] = float(cos.min())
    return out


# -------------------------------------------------------------------------------------------------- the index build


def _step(step: str, threads: int, **kwargs: Any) -> dict[str, Any]:
    """Run one `_scale_steps` step in a new process and return what it printed."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.suites._scale_steps", step, json.dumps({"threads": threads, **kwargs})],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BenchmarkError(f"index build step {step} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _write_vectors(path: Path, n: int, dim: int, seed: int) -> None:
    """`n` clustered L2-normalised vectors (1,000 centres), written chunk by chunk as raw float32."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, dim)).astype(np.float32)
    with open(path, "wb") as f:
        for start in range(0, n, 100_000):
            m = min(n, start + 100_000) - start
            x = centres[rng.integers(0, len(centres), m)] + 0.5 * rng.standard_normal((m, dim)).astype(np.float32)
            (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32).tofile(f)


def index_build(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from benchmarks.suites._scale_steps import read_rows
    from indexes import ondisk
    from indexes.params import ivf_params

    n, dim = args.vectors, args.dim
    factory = args.factory or ondisk.on_disk_factory(n)
    vectors = tmp / "vectors.f32"
    _write_vectors(vectors, n, dim, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    size = ondisk.training_size(factory, n, dim)
    started = time.perf_counter()
    rows = np.sort(rng.choice(n, size, replace=False))
    sample = np.concatenate(
        [
            read_rows(str(vectors), dim, start, min(n, start + 100_000))[
                rows[(rows >= start) & (rows < start + 100_000)] - start
            ]
            for start in range(0, n, 100_000)
        ]
    )
    trained = ondisk.train(dim, factory, sample)
    train_s = time.perf_counter() - started
    trained_path = tmp / "trained.faiss"
    trained.tofile(trained_path)
    common = {"trained": str(trained_path), "vectors": str(vectors), "dim": dim}
    steps: dict[str, Any] = {}
    steps["in memory: add all"] = _step("memory", args.threads, n=n, out=str(tmp / "memory.faiss"), **common)
    bounds = np.linspace(0, n, args.shards + 1).astype(int)
    shard_files, fills = [], []
    for k in range(args.shards):
        shard_files.append(str(tmp / f"shard-{k}.faiss"))
        fills.append(
            _step("shard", args.threads, start=int(bounds[k]), stop=int(bounds[k + 1]), out=shard_files[-1], **common)
        )
    steps["on disk: fill one shard (largest)"] = max(fills, key=lambda f: f["peak_anon_bytes"])
    steps["on disk: fill all shards"] = {
        "seconds": sum(f["seconds"] for f in fills),
        "peak_anon_bytes": max(f["peak_anon_bytes"] for f in fills),
        "peak_file_bytes": max(f["peak_file_bytes"] for f in fills),
    }
    on_disk = tmp / "ondisk" / "index.faiss"
    on_disk.parent.mkdir()
    steps["on disk: merge"] = _step(
        "merge", args.threads, trained=str(trained_path), shards=shard_files, out=str(on_disk), factory=factory
    )
    for path in shard_files:
        Path(path).unlink()
    queries = tmp / "queries.npy"
    np.save(queries, read_rows(str(vectors), dim, 0, args.queries) + 0.0)
    found = {}
    params = ivf_params(factory, args.nprobe)  # the same for both, quantizer_efSearch included
    for name, index in (("in memory", tmp / "memory.faiss"), ("on disk", on_disk)):
        steps[f"search {name}"] = _step(
            "search",
            args.threads,
            index=str(index),
            queries=str(queries),
            params=params,
            out=str(tmp / f"{name}.npz"),
        )
        found[name] = np.load(tmp / f"{name}.npz")
    merge = steps["on disk: merge"]
    return {
        "vectors": n,
        "dim": dim,
        "factory": factory,
        "shards": args.shards,
        "search_params": params,
        "train_s": train_s,
        "training_vectors": size,
        "in_memory_index_bytes": steps["in memory: add all"]["file_bytes"],
        "on_disk_bytes": merge["file_bytes"] + merge["lists_bytes"],
        # Equal scores rank by rank; ids may differ only where scores tie (the lists hold them in another order).
        "same_ids_share": float((found["in memory"]["ids"] == found["on disk"]["ids"]).mean()),
        "max_score_difference": float(np.abs(found["in memory"]["scores"] - found["on disk"]["scores"]).max()),
        "steps": steps,
    }
