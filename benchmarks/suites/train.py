"""Train suite: samples/s of `simsearch.training.train` fine-tuning on real Caltech-101 photos (decode, augment,
forward, loss, backward, step; the first batch of a run and everything around the batches left out) with the whole
backbone trained against `freeze_stages` N (the stem and the first N stages fixed), side by side in one process, the
same P x K batches for each, repeated in turn so that a slow spell of the machine touches every setting alike.
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
    parser.add_argument("--batches", type=int, default=4, help="batches per run; the first is not timed")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each setting, interleaved")


class _BatchClock:
    """A `TrainProgress` that notes when each batch ends: the rate counts the batches after the first (its warm-up
    allocations are not training speed) and nothing around them (model set-up, checkpoint writing)."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.ends = [time.perf_counter()]

    def step(self, loss: float, samples_per_second: float) -> None:
        self.ends.append(time.perf_counter())

    def end_epoch(self, epoch: int, record: dict[str, Any]) -> None:
        pass

    def samples_per_second(self, batch: int) -> float:
        timed = self.ends[2:] if len(self.ends) > 2 else self.ends[1:]  # one batch only (--tiny): keep it
        start = self.ends[1] if len(self.ends) > 2 else self.ends[0]
        return batch * len(timed) / (timed[-1] - start)


def run(args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """Time one short epoch per setting and repeat, in turn; report the median samples/s and the ratio to the first."""
    import numpy as np

    from simsearch.data import ClassSubset, caltech101_split
    from simsearch.training import TrainConfig, train

    if args.tiny:
        args.p, args.k, args.batches, args.repeats = 2, 2, 2, 1
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
            clock = _BatchClock()
            with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
                train(config, subset, None, tmp, clock)
            rates[stages].append(clock.samples_per_second(args.p * args.k))
            logger.info("train: freeze_stages %d, repeat %d: %.2f samples/s", stages, repeat, rates[stages][-1])
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
        "batch": f"P {args.p} x K {args.k}, {args.batches} batches per run (the first untimed), "
        f"{args.repeats} runs each, interleaved",
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
            top = (bar.get_x() + bar.get_width() / 2, bar.get_height())
            label = f"{row['ratio']:.2f}x"
            ax.annotate(label, top, xytext=(0, 3), textcoords="offset points", ha="center", va="bottom")
        ax.set_xlabel("--freeze-stages (stem + first N stages fixed)")
        ax.set_ylabel("training samples / s")
        threads = f"{args.threads} thread{'s' if args.threads != 1 else ''}"
        ax.set_title(f"fine-tuning {args.model}, {args.device}, {threads}")
        ax.grid(True, axis="y", alpha=0.3)
