"""Quality suite: retrieval quality of one model by exact k-NN on the protocols of ../shared/data/README.md
(Caltech-101 and Omniglot class-disjoint, Fashion-MNIST closed set): R@1/2/4/8 (hit rate), MAP@R, R-precision, NMI,
and Omniglot's official 20-way one-shot accuracy.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.suites import BenchmarkError, autocast, class_balanced_rows, prepare

logger = logging.getLogger(__name__)

HELP = "R@1/2/4/8, MAP@R, R-precision, NMI (+ Omniglot one-shot) by exact k-NN"

DATASETS = ("caltech101", "omniglot", "fashion-mnist")
KS = (1, 2, 4, 8)
TINY_LIMIT = 12

PROTOCOLS = {
    "caltech101": "class-disjoint: the last 51 of the 101 sorted classes (BACKGROUND_Google dropped), 3,151 photos, "
    "query set = gallery, leave-one-out",
    "omniglot": "class-disjoint: the evaluation split (659 characters of 20 alphabets, 13,180 images), query set = "
    "gallery, leave-one-out; plus the official 20-way one-shot runs (all_runs.zip), nearest training image by cosine",
    "fashion-mnist": "closed set (the same 10 classes on both sides): the 10,000 test images query the 60,000 train "
    "images as gallery",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", help="'default', a timm name or a checkpoint folder")
    parser.add_argument("--dataset", choices=(*DATASETS, "all"), default="all")
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="at most N images per split: the first images of as many whole classes as fit (>= 2 per class)",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None, help="decode workers [default: half the cores]")
    parser.add_argument("--one-shot-runs", type=int, default=20, help="official Omniglot runs to score (of 20)")


class _Rows:
    """Some rows of a labelled dataset, keeping the `labels` attribute that `embed_dataset` reads."""

    def __init__(self, dataset: Any, rows: np.ndarray) -> None:
        self.dataset = dataset
        self.rows = rows
        self.labels = np.asarray(dataset.labels)[rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[int(self.rows[index])]


def _embed(embedder: Any, dataset: Any, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, float]:
    """`(N, D)` vectors, `(N,)` labels and the seconds spent (decode, transform and forward)."""
    from simsearch.evaluation import embed_dataset

    started = time.perf_counter()
    with autocast(args.device, args.amp):
        vectors, labels = embed_dataset(embedder, dataset, batch_size=args.batch_size, workers=args.workers)
    return vectors, labels, time.perf_counter() - started


def _scores(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: (float(v) if isinstance(v, float | np.floating) else v) for k, v in metrics.items()}


def _caltech(embedder: Any, args: argparse.Namespace) -> dict[str, Any]:
    from simsearch.data import caltech101_split
    from simsearch.embedding import decode_min_side
    from simsearch.metrics import retrieval_metrics

    test = caltech101_split("test", min_side=decode_min_side(embedder.data_config), root=args.data)
    data = _Rows(test, class_balanced_rows(test.labels, args.limit))
    vectors, labels, seconds = _embed(embedder, data, args)
    metrics = retrieval_metrics(vectors, labels, ks=_usable(KS, len(vectors) - 1), seed=args.seed)
    return _entry("caltech101", metrics, labels, seconds, len(vectors))


def _omniglot(embedder: Any, args: argparse.Namespace) -> dict[str, Any]:
    from simsearch.data import load_omniglot, omniglot_one_shot_runs
    from simsearch.evaluation import one_shot_eval
    from simsearch.metrics import retrieval_metrics

    evaluation = load_omniglot("evaluation", root=args.data)
    data = _Rows(evaluation, class_balanced_rows(evaluation.labels, args.limit))
    vectors, labels, seconds = _embed(embedder, data, args)
    metrics = retrieval_metrics(vectors, labels, ks=_usable(KS, len(vectors) - 1), seed=args.seed)
    entry = _entry("omniglot", metrics, labels, seconds, len(vectors))
    if args.one_shot_runs < 1:
        raise BenchmarkError(f"--one-shot-runs must be at least 1, got {args.one_shot_runs}")
    runs = omniglot_one_shot_runs(root=args.data)[: args.one_shot_runs]
    with autocast(args.device, args.amp):
        one_shot = one_shot_eval(embedder, runs, batch_size=args.batch_size)
    entry["one_shot_accuracy"] = float(one_shot["accuracy"])
    entry["one_shot_runs"] = int(one_shot["runs"])
    entry["one_shot_per_run"] = [float(a) for a in one_shot["per_run"]]
    return entry


def _fashion_mnist(embedder: Any, args: argparse.Namespace) -> dict[str, Any]:
    from simsearch.data import load_fashion_mnist
    from simsearch.metrics import retrieval_metrics

    train = load_fashion_mnist("train", root=args.data)
    test = load_fashion_mnist("test", root=args.data)
    gallery = _Rows(train, class_balanced_rows(train.labels, args.limit))
    queries = _Rows(test, class_balanced_rows(test.labels, args.limit))
    g_vectors, g_labels, g_seconds = _embed(embedder, gallery, args)
    q_vectors, q_labels, q_seconds = _embed(embedder, queries, args)
    metrics = retrieval_metrics(
        q_vectors,
        q_labels,
        gallery=g_vectors,
        gallery_labels=g_labels,
        ks=_usable(KS, len(g_vectors)),
        seed=args.seed,
    )
    return _entry("fashion-mnist", metrics, q_labels, g_seconds + q_seconds, len(g_vectors) + len(q_vectors))


def _usable(ks: tuple[int, ...], available: int) -> tuple[int, ...]:
    usable = tuple(k for k in ks if k <= available)
    if not usable:
        raise BenchmarkError(f"a gallery of {available} neighbours is too small for recall@{ks[0]}")
    return usable


def _entry(name: str, metrics: dict[str, Any], labels: np.ndarray, seconds: float, embedded: int) -> dict[str, Any]:
    return {
        "dataset": name,
        "protocol": PROTOCOLS[name],
        "queries": int(metrics["queries"]),
        "gallery": int(metrics["gallery"]),
        "classes": int(len(np.unique(labels))),
        "metrics": _scores(metrics),
        "embedded_images": embedded,
        "embed_seconds": seconds,
        "embed_images_per_s": embedded / seconds if seconds > 0 else None,
    }


RUNNERS = {"caltech101": _caltech, "omniglot": _omniglot, "fashion-mnist": _fashion_mnist}


def run(args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """Embed each dataset's evaluation images with the model, score them by exact k-NN, draw recall@k."""
    from simsearch.embedding import default_workers
    from simsearch.models import load_embedder

    if args.tiny:
        args.limit = min(args.limit or TINY_LIMIT, TINY_LIMIT)
        args.one_shot_runs = min(args.one_shot_runs, 1)
        args.workers = 0 if args.workers is None else args.workers
    if args.workers is None:
        args.workers = default_workers(on_cpu=args.device == "cpu")
    embedder = prepare(load_embedder(args.model, device=args.device), args.device)
    names = DATASETS if args.dataset == "all" else (args.dataset,)
    results: dict[str, Any] = {}
    for name in names:
        logger.info("quality: %s", name)
        results[name] = RUNNERS[name](embedder, args)
        logger.info("quality: %s %s", name, {k: round(v, 4) for k, v in results[name]["metrics"].items()})

    figure_path = out_dir / "quality_recall_at_k.png"
    _plot(results, figure_path, embedder.model_id)
    on_cuda = args.device.startswith("cuda")
    record = {
        "model": {
            "spec": args.model,
            "model_id": embedder.model_id,
            "embed_dim": int(embedder.embed_dim),
            "weights_sha256": embedder.weights_sha256,
            "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in embedder.data_config.items()},
        },
        "protocol": {
            "search": "exact k-NN (faiss flat inner product on L2-normalised vectors = cosine)",
            "recall_at_k": "hit rate: a query counts if any of its k nearest has its class",
            "map_at_r": "Musgrave et al. 2020",
            "nmi": "faiss k-means (k-means++ seeding) with as many clusters as query classes",
            "limit": args.limit,
            "precision": "bf16 autocast (embed_dataset's own choice on CUDA)" if on_cuda else f"amp {args.amp}",
        },
        "datasets": results,
    }
    return {"record": record, "figures": [figure_path], "table": [_row(r) for r in results.values()]}


def _row(entry: dict[str, Any]) -> dict[str, Any]:
    m = entry["metrics"]
    row: dict[str, Any] = {"dataset": entry["dataset"], "queries": entry["queries"], "gallery": entry["gallery"]}
    row["classes"] = entry["classes"]
    for k in KS:
        row[f"R@{k}"] = m.get(f"recall@{k}")
    row["MAP@R"] = m.get("map@r")
    row["R-prec"] = m.get("r_precision")
    row["NMI"] = m.get("nmi")
    row["one-shot"] = entry.get("one_shot_accuracy")
    row["img/s"] = entry["embed_images_per_s"]
    return row


def _plot(results: dict[str, Any], path: Path, model_id: str) -> None:
    from benchmarks.record import figure

    with figure(path) as ax:
        for name, entry in results.items():
            ks = [k for k in KS if f"recall@{k}" in entry["metrics"]]
            recalls = [entry["metrics"][f"recall@{k}"] for k in ks]
            label = f"{name} (MAP@R {entry['metrics'].get('map@r', float('nan')):.3f})"
            ax.plot(ks, recalls, marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(KS), [str(k) for k in KS])
        ax.set_xlabel("k")
        ax.set_ylabel("recall@k (hit rate)")
        ax.set_ylim(0, 1.02)
        ax.grid(True, alpha=0.3)
        ax.set_title(f"exact k-NN retrieval, {model_id}")
        ax.legend(loc="lower right")
