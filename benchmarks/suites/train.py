"""Train suite: samples/s of `simsearch.training.train` fine-tuning on real Caltech-101 photos (decode, augment,
forward, loss, backward, step) with the whole backbone trained against `freeze_stages` N (the stem and the first N
stages fixed), side by side in one process, the same P x K batches for each, repeated in turn so that a slow spell of
the machine touches every setting alike.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.suites import BenchmarkError

logger = logging.getLogger(__name__)

HELP = "training samples/s: whole backbone vs --freeze-stages N, side by side"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", help="a timm backbone: 'default', a timm name, a checkpoint")
    parser.add_argument("--freeze-stages", type=int, nargs="+", default=[0, 4, 6], help="settings compared")
    parser.add_argument("--loss", default="multi_similarity")
    parser.add_argument("--p", type=int, default=16, help="classes per batch")
    parser.add_argument("--k", type=int, default=4, help="images per class")
    parser.add_argument("--batches", type=int, default=3, help="timed batches per run")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each setting, interleaved")


def run(args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """Time one short epoch per setting and repeat, in turn; report the median samples/s and the ratio to the first."""
    import numpy as np

    from simsearch.data import ClassSubset, caltech101_split
    from simsearch.training import TrainConfig, train

    if args.tiny:
        args.p, args.k, args.batches, args.repeats = 2, 2, 1, 1
        args.freeze_stages = args.freeze_stages[:2]
    if min(args.p, args.k) < 2 or args.batches < 1 or args.repeats < 1:
        raise BenchmarkError("--p and --k must be at least 2, --batches and --repeats at least 1")
    dataset = caltech101_split("train", root=args.data)
    subset = ClassSubset(dataset, dataset.classes[: max(args.p, 2)])
    rates: dict[int, list[float]] = {n: [] for n in args.freeze_stages}
    for repeat in range(args.repeats):
        for stages in args.freeze_stages:
            config = TrainConfig(
                backbone=args.model,
                embed_dim=None,
                loss=args.loss,
                p=args.p,
                k=args.k,
                batches_per_epoch=args.batches,
                epochs=1,
                lr=3e-5,
                backbone_lr_mult=1.0,
                freeze_bn=True,
                freeze_stages=stages,
                patience=None,
                device=args.device,
                seed=args.seed,
            )
            with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
                started = time.perf_counter()
                result = train(config, subset, None, tmp)
                logger.info("train: freeze_stages %d, repeat %d: %.1f s", stages, repeat, time.perf_counter() - started)
            rates[stages].append(result.samples_per_second)
    base = float(np.median(rates[args.freeze_stages[0]]))
    rows = [
        {
            "freeze_stages": stages,
            "samples_per_s": round(float(np.median(values)), 2),
            "ratio": round(float(np.median(values)) / base, 2),
            "runs": ", ".join(f"{v:.2f}" for v in values),
        }
        for stages, values in rates.items()
    ]
    record = {
        "model": args.model,
        "data": f"caltech101:train, first {len(subset.classes)} classes ({len(subset)} photos), timm augmentation",
        "batch": f"P {args.p} x K {args.k}, {args.batches} batches per run, {args.repeats} runs each, interleaved",
        "recipe": {"loss": args.loss, "embed_dim": None, "freeze_bn": True, "lr": 3e-5},
        "ratio_to": f"freeze_stages {args.freeze_stages[0]}",
        "settings": rows,
    }
    figure_path = out_dir / "train_throughput.png"
    _plot(rows, figure_path, args)
    return {"record": record, "figures": [figure_path.name], "table": rows}


def _plot(rows: list[dict[str, Any]], path: Path, args: argparse.Namespace) -> None:
    from benchmarks.record import figure

    with figure(path, width=6.0, height=3.6) as ax:
        labels = [f"{row['freeze_stages']}" for row in rows]
        bars = ax.bar(labels, [row["samples_per_s"] for row in rows], color="tab:blue")
        for bar, row in zip(bars, rows, strict=True):
            ax.annotate(f"{row['ratio']:.2f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center")
        ax.set_xlabel("--freeze-stages (stem + first N stages fixed)")
        ax.set_ylabel("training samples / s")
        threads = f"{args.threads} thread{'s' if args.threads != 1 else ''}"
        ax.set_title(f"fine-tuning {args.model}, {args.device}, {threads}")
        ax.grid(True, axis="y", alpha=0.3)
