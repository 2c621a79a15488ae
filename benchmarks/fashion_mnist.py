"""Fashion-MNIST: a metric-learning model trained from scratch on the 60k training images, scored by P@1 of the 10k
test images against the training set as the gallery (a closed-set task: the same ten classes on both sides).

Run from the repo root:  python -m benchmarks.fashion_mnist --threads 1   (about 140 minutes on one CPU core)
The defaults are the recipe of the best committed record (fashion_mnist_resnet20_80ep.json): ResNet-20 (CIFAR-style,
three stages of 16/32/64 channels) on grey 28 x 28 images (no ImageNet stem to shrink them to 8 x 8), CosFace (s 30,
m 0.25), 80 epochs of 10 x 16 P x K batches, mild crops and flips with a little random erasing: `RECIPE` below, changed
with `--set FIELD=VALUE` (e.g. `--set epochs=100 --set augment_kwargs.re_prob=0.5`). P@1 is reported as
is and with test-time flips (each image's vector averaged with its mirror's), from the same model.
Writes benchmarks/results/fashion_mnist_<loss>_<net>_<epochs>ep_seed<seed>.json (or --out). Real data only, from
$SIMSEARCH_DATA.
Published reference: 0.899, "AlexNet with triplet loss" in the Fashion-MNIST benchmark table; goal: P@1 >= 0.94.

Five thousand training images, drawn with the seed, are held out for validation (best epoch); `--val-images 0` trains
on all 60k and keeps the last epoch. The gallery is the full training set, as the protocol says, and the test images
are used once, for the final score.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.recipes import add_recipe_option, recipe_from_args
from benchmarks.record import default_result_path, environment
from simsearch.data import ArrayDataset, load_fashion_mnist
from simsearch.evaluation import embed_dataset
from simsearch.metrics import knn, retrieval_metrics
from simsearch.models import load_embedder
from simsearch.runs import recipe_dict
from simsearch.training import TrainConfig, train

REFERENCE = 0.899
GOAL = 0.94
#: The recipe of the best committed record: ResNet-20 from scratch on grey 28 x 28 images, CosFace, every batch a
#: P x K of the ten classes (batches_per_epoch None: the training images // (P x K)), no early stop.
RECIPE = TrainConfig(
    backbone="random:simsearch_resnet20",
    backbone_kwargs={"in_chans": 1},
    embed_dim=128,
    loss="cosface",
    loss_kwargs={"scale": 30, "margin": 0.25},
    epochs=80,
    p=10,
    k=16,
    lr=2e-3,
    backbone_lr_mult=1.0,
    image_size=28,
    augment=True,
    augment_kwargs={"scale": [0.8, 1.0], "ratio": [0.9, 1.1], "hflip": 0.5, "color_jitter": 0, "re_prob": 0.1},
    seed=0,
    device="cpu",
    patience=None,
)

logger = logging.getLogger("benchmarks.fashion_mnist")


def subset(dataset: ArrayDataset, rows: np.ndarray) -> ArrayDataset:
    return ArrayDataset(dataset.images[rows], dataset.labels[rows], classes=dataset.classes, to_rgb=dataset.to_rgb)


def precision_at_1(queries: np.ndarray, query_labels: np.ndarray, gallery: np.ndarray, labels: np.ndarray) -> float:
    """Share of queries whose nearest gallery image (exact, cosine) has their class."""
    nearest = knn(queries, gallery, 1)[:, 0]
    return float(np.mean(labels[nearest] == query_labels))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_option(parser, RECIPE)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--val-images", type=int, default=5000, help="0: train on all 60k and keep the last epoch")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N training images (smoke runs)")
    parser.add_argument("--run-dir", default=None, help="checkpoint folder [default: a temporary one]")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    args.recipe = recipe_from_args(parser, RECIPE, args.changes)
    return args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config: TrainConfig = args.recipe
    full_train = load_fashion_mnist("train", to_rgb=not config.backbone_kwargs.get("in_chans") == 1)
    test = load_fashion_mnist("test", to_rgb=full_train.to_rgb)
    if args.limit:
        full_train = subset(full_train, np.arange(args.limit))
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(full_train))
    val_rows, train_rows = np.sort(order[: args.val_images]), np.sort(order[args.val_images :])
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(args.run_dir or tmp)
        # A run dir left by an interrupted run resumes; its earlier epochs are not in this process's train_seconds.
        history_file = run_dir / "history.json"
        resumed_after = len(json.loads(history_file.read_text())) if history_file.is_file() else 0
        started = time.perf_counter()
        val_set = subset(full_train, val_rows) if len(val_rows) else None
        result = train(config, subset(full_train, train_rows), val_set, run_dir)
        train_seconds = time.perf_counter() - started
        embedder = load_embedder(run_dir)
        started = time.perf_counter()
        gallery, gallery_labels = embed_dataset(embedder, full_train, batch_size=256)
        queries, query_labels = embed_dataset(embedder, test, batch_size=256)
        embed_seconds = time.perf_counter() - started
        # The same model with test-time flips (each image averaged with its mirror): the run trains with flips.
        embedder.set_tta("hflip")
        started = time.perf_counter()
        gallery_tta, _ = embed_dataset(embedder, full_train, batch_size=256)
        queries_tta, _ = embed_dataset(embedder, test, batch_size=256)
        embed_seconds_tta = time.perf_counter() - started
    p_at_1 = precision_at_1(queries, query_labels, gallery, gallery_labels)
    p_at_1_tta = precision_at_1(queries_tta, query_labels, gallery_tta, gallery_labels)
    test_loo = retrieval_metrics(queries, query_labels, ks=(1,))
    held_out = f"{len(val_rows)} held out for validation" if len(val_rows) else "none held out: the last epoch is kept"
    record = {
        "benchmark": "fashion-mnist",
        "protocol": f"train on the 60k train images ({held_out}); P@1 of the 10k test images with the "
        "full 60k train set as gallery, exact k-NN, cosine (closed set: the same ten classes)",
        "p@1": p_at_1,
        "p@1_hflip_tta": p_at_1_tta,
        "test_leave_one_out": {k: float(v) for k, v in test_loo.items()},
        "reference": REFERENCE,
        "goal": GOAL,
        "recipe": recipe_dict(config),
        "options": {k: v for k, v in vars(args).items() if k in ("val_images", "limit", "threads")},
        "best_epoch": result.best_epoch,
        "best_val": result.best_metrics,
        "epochs_run": result.epochs_run,
        "train_seconds": round(train_seconds, 1),
        "resumed_after_epoch": resumed_after,
        "train_samples_per_second": round(result.samples_per_second, 1),
        "embed_images_per_second": round((len(gallery) + len(queries)) / embed_seconds, 1),
        "embed_images_per_second_hflip_tta": round((len(gallery) + len(queries)) / embed_seconds_tta, 1),
        "note": f"{'the best epoch is chosen on validation' if len(val_rows) else 'the last epoch is kept'} "
        "without test-time flips; both P@1 come from that model",
        "environment": environment("cpu"),
        "command": shlex.join(["python", "-m", "benchmarks.fashion_mnist", *(sys.argv[1:] if argv is None else argv)]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    out = Path(args.out or default_result_path("fashion_mnist", config))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    summary = {"p@1": p_at_1, "p@1_hflip_tta": p_at_1_tta, "best_val": result.best_metrics}
    print(json.dumps({**summary, "train_seconds": round(train_seconds)}))


if __name__ == "__main__":
    main()
