"""Engine benchmark: indexing throughput against the bare forward pass, query latency, and retrieval quality.

Run from the repo root:  python -m benchmarks.engine [--images 1000] [--quality-split test]
Writes benchmarks/results/engine.json. Real data only: Caltech-101 from $SIMSEARCH_DATA (in a checkout: ../shared/data).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import DATA_ENV, REPO

DATA = Path(os.environ[DATA_ENV])
CACHE = REPO / ".cache" / "bench"
RESULTS = REPO / "benchmarks" / "results"


def unpack(names: list[str], dest: Path) -> list[Path]:
    """Unpack the named Caltech-101 members (``<class>/<file>``) once into ``dest``."""
    todo = [n for n in names if not (dest / n).exists()]
    if todo:
        wanted = {f"101_ObjectCategories/{n}" for n in todo}
        with tarfile.open(DATA / "caltech101" / "101_ObjectCategories.tar") as tar:
            for member in tar:
                if member.name in wanted:
                    target = dest / member.name.split("/", 1)[1]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(tar.extractfile(member).read())  # type: ignore[union-attr]
    return [dest / n for n in names]


def caltech_names(split: str) -> list[str]:
    """``first1000``: 10 photos from each of the first 100 classes; ``test``: the class-disjoint test half
    (the last 51 of the 101 sorted classes, as in ../shared/data/README.md)."""
    with tarfile.open(DATA / "caltech101" / "101_ObjectCategories.tar") as tar:
        names = sorted(m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile() and m.name.endswith(".jpg"))
    by_class: dict[str, list[str]] = {}
    for n in names:
        cls = n.split("/")[0]
        if cls != "BACKGROUND_Google":
            by_class.setdefault(cls, []).append(n)
    classes = sorted(by_class)
    if split == "first1000":
        return [n for cls in classes[:100] for n in by_class[cls][:10]]
    if split == "test":
        return [n for cls in classes[50:] for n in by_class[cls]]
    raise ValueError(split)


def bare_forward(paths: list[Path], batch_size: int) -> dict[str, float]:
    """Images/s of the model alone on tensors already decoded, transformed and stacked (same batches, threads)."""
    from simsearch.embedding import decode_min_side, forward
    from simsearch.images import load_image
    from simsearch.models import create_transform, load_embedder

    embedder = load_embedder(None, device="cpu")
    transform = create_transform(embedder)
    min_side = decode_min_side(embedder.data_config)
    t0 = time.perf_counter()
    tensors = torch.stack([transform(load_image(p, min_side=min_side)) for p in paths])
    decode_s = time.perf_counter() - t0
    forward(embedder, tensors[:batch_size])  # warm-up
    t0 = time.perf_counter()
    for start in range(0, len(tensors), batch_size):
        forward(embedder, tensors[start : start + batch_size])
    forward_s = time.perf_counter() - t0
    return {"forward_images_per_s": len(paths) / forward_s, "decode_transform_images_per_s": len(paths) / decode_s}


def pipeline(paths_root: Path, n: int, batch_size: int, workers: int | None) -> dict[str, float]:
    """Images/s of ``Collection.index_folder`` on a fresh collection: scan, hash, decode, forward, store, index."""
    import simsearch

    with tempfile.TemporaryDirectory() as tmp:
        col = simsearch.Collection.open(Path(tmp) / "col", create=True, device="cpu")
        col.embedder  # the model load is not indexing work  # noqa: B018
        t0 = time.perf_counter()
        report = col.index_folder(paths_root, batch_size=batch_size, workers=workers)
        wall = time.perf_counter() - t0
        col.close()
    assert report.embedded == n, report.as_dict()
    return {"pipeline_images_per_s": n / wall, "pipeline_wall_s": wall}


def query_latency(root: Path, queries: list[Path], repeats: int) -> dict[str, float]:
    """Warm latency of ``open_collection(...).search(path)`` through the library, and cold CLI wall time."""
    import simsearch

    with tempfile.TemporaryDirectory() as tmp:
        col_path = Path(tmp) / "col"
        with simsearch.Collection.open(col_path, create=True, device="cpu") as col:
            col.index_folder(root, workers=1)
        col = simsearch.open_collection(col_path, device="cpu")
        col.search(queries[0], k=10)  # loads the model
        times = []
        for _ in range(repeats):
            for q in queries:
                t0 = time.perf_counter()
                col.search(q, k=10)
                times.append(time.perf_counter() - t0)
        col.close()
        exe = str(Path(sys.executable).parent / "simsearch")
        cold, torch_import = [], []
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run([exe, "query", str(queries[0]), "-c", str(col_path)], check=True, capture_output=True)
            cold.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import torch"], check=True)
            torch_import.append(time.perf_counter() - t0)
    return {
        "warm_query_ms_p50": 1000 * statistics.median(times),
        "warm_query_ms_p95": 1000 * float(np.percentile(times, 95)),
        "cold_cli_query_s_median": statistics.median(cold),
        "python_import_torch_s_median": statistics.median(torch_import),
        "cold_over_import_torch": statistics.median(cold) / statistics.median(torch_import),
    }


def quality(paths: list[Path]) -> dict[str, float]:
    """Leave-one-out exact k-NN on the vectors the engine stored: P@10, R@k (hit rate), MAP@R, NMI."""
    import simsearch
    from simsearch.metrics import retrieval_metrics

    names = [p.parent.name for p in paths]
    labels = np.unique(names, return_inverse=True)[1]
    with tempfile.TemporaryDirectory() as tmp:
        with simsearch.Collection.open(Path(tmp) / "col", create=True, device="cpu") as col:
            col.index_folder(paths[0].parent.parent)
            by_path = {r.path: r.id for r in col.store.records()}
            x = col.store.vectors([by_path[str(p.resolve())] for p in paths], col.dim)
    scores = retrieval_metrics(x, labels, ks=(1, 2, 4, 8, 10))
    return {
        "precision_at_10": float(scores["precision@10"]),
        "recall_at_1": float(scores["recall@1"]),
        "map_at_r": float(scores["map@r"]),
        "nmi": float(scores["nmi"]),
        "queries": len(paths),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--skip", nargs="*", default=[], choices=["throughput", "query", "quality"])
    args = parser.parse_args()
    if not (DATA / "caltech101").exists():
        sys.exit(f"Caltech-101 not found under {DATA}: set SIMSEARCH_DATA")
    out = RESULTS / "engine.json"
    # A partial run (--skip) updates its own sections and keeps the others of the last record.
    record: dict = json.loads(out.read_text()) if out.exists() else {}
    record |= {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "dataset": "Caltech-101",
        "model": "default (tf_efficientnet_lite0, ImageNet)",
    }
    if "throughput" not in args.skip:
        names = caltech_names("first1000")[: args.images]
        root = CACHE / "first1000"
        paths = unpack(names, root)
        bare = bare_forward(paths, args.batch_size)
        pipe = pipeline(root, len(paths), args.batch_size, args.workers)
        record["throughput"] = {
            "images": len(paths),
            "batch_size": args.batch_size,
            "workers": args.workers,
            **bare,
            **pipe,
            "ratio_pipeline_over_forward": pipe["pipeline_images_per_s"] / bare["forward_images_per_s"],
        }
        print(json.dumps(record["throughput"], indent=2), flush=True)
    if "query" not in args.skip:
        root = CACHE / "first1000"
        paths = unpack(caltech_names("first1000")[:200], root)
        sub = CACHE / "query200"
        if not sub.exists():
            for p in paths:
                (sub / p.parent.name).mkdir(parents=True, exist_ok=True)
                (sub / p.parent.name / p.name).write_bytes(p.read_bytes())
        record["query"] = {"collection_images": 200, **query_latency(sub, paths[:10], repeats=3)}
        print(json.dumps(record["query"], indent=2), flush=True)
    if "quality" not in args.skip:
        paths = unpack(caltech_names("test"), CACHE / "test51")
        record["quality"] = {
            "protocol": "Caltech-101 class-disjoint test half (last 51 classes), leave-one-out",
            **quality(paths),
        }
        print(json.dumps(record["quality"], indent=2), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
