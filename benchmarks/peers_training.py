"""Training side by side: simsearch's training loop (`simsearch.training.train`, what `simsearch train` runs) and
pytorch-metric-learning's TripletMarginLoss, TripletMarginMiner("semihard") and MPerClassSampler, on the same small
CNN (one module builds both models, with the same initial weights), the same loss margin, class-balanced batches,
optimizer, schedule and threads, on Fashion-MNIST. Both are scored by the same code: P@1 of the test images against
the 60k training images as the gallery (exact, cosine).
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from benchmarks.fashion_mnist import precision_at_1, subset
from simsearch.data import ArrayDataset, load_fashion_mnist
from simsearch.evaluation import embed_dataset
from simsearch.models import Embedder
from simsearch.runs import seed_everything
from simsearch.training import TrainConfig, train

logger = logging.getLogger(__name__)

BACKBONE = "random:simsearch_conv4"
MARGIN = 0.2


@dataclass
class TrainSetup:
    """What both sides share: the recipe's numbers and the data."""

    epochs: int = 2
    per_class: int = 16
    batch: int = 128
    lr: float = 1e-3
    threads: int = 2
    seed: int = 0
    limit: int | None = None  # first N training images (tiny runs); the gallery is the same N
    test_limit: int | None = None


def recipe(setup: TrainSetup) -> TrainConfig:
    """simsearch's recipe: Conv-4 on grey 28 x 28 images, a 128-d head, triplet loss with semi-hard mining (margin
    0.2, Euclidean on unit vectors), P x K batches of `batch // per_class` classes, Adam (AdamW without weight decay)
    at `lr` on every weight, no warm-up (cosine decay), no augmentation, no validation, no early stop."""
    return TrainConfig(
        backbone=BACKBONE,
        backbone_kwargs={"in_chans": 1},
        embed_dim=128,
        loss="triplet",
        loss_kwargs={"margin": MARGIN, "mining": "semi_hard"},
        epochs=setup.epochs,
        p=setup.batch // setup.per_class,
        k=setup.per_class,
        lr=setup.lr,
        backbone_lr_mult=1.0,
        weight_decay=0.0,
        warmup_epochs=0.0,
        image_size=28,
        augment=False,
        seed=setup.seed,
        device="cpu",
        patience=None,
    )


def load_data(setup: TrainSetup) -> tuple[ArrayDataset, ArrayDataset]:
    """The Fashion-MNIST train and test splits (grey), cut to the limits."""
    train_set = load_fashion_mnist("train", to_rgb=False)
    test_set = load_fashion_mnist("test", to_rgb=False)
    if setup.limit:
        train_set = subset(train_set, np.arange(min(setup.limit, len(train_set))))
    if setup.test_limit:
        test_set = subset(test_set, np.arange(min(setup.test_limit, len(test_set))))
    return train_set, test_set


def score(embedder: Embedder, train_set: ArrayDataset, test_set: ArrayDataset) -> float:
    """P@1 of the test images against the training images as the gallery: the same code for both sides."""
    embedder.eval()
    gallery, gallery_labels = embed_dataset(embedder, train_set, batch_size=256)
    queries, query_labels = embed_dataset(embedder, test_set, batch_size=256)
    return precision_at_1(queries, query_labels, gallery, gallery_labels)


def run_simsearch(setup: TrainSetup, train_set: ArrayDataset, test_set: ArrayDataset) -> dict[str, Any]:
    """Train through `simsearch.training.train` (decoding, transforms, sampler, loss, step, checkpoint per epoch)."""
    from simsearch.models import load_embedder

    torch.set_num_threads(setup.threads)
    config = recipe(setup)
    with tempfile.TemporaryDirectory(prefix="peers-train-") as tmp:
        started = time.perf_counter()
        result = train(config, train_set, None, tmp)
        wall = time.perf_counter() - started
        embedder = load_embedder(tmp)
    p_at_1 = score(embedder, train_set, test_set)
    return {
        "library": "simsearch",
        "samples_per_s": round(result.samples_per_second, 1),
        "p_at_1": round(p_at_1, 4),
        "batch_seconds": round(result.seconds, 1),
        "wall_s": round(wall, 1),
        "final_loss": round(float(result.history[-1]["loss"]), 4),
        "steps_per_epoch": len(train_set) // config.p // config.k,
        "what_is_timed": "the epochs' batches: PIL images through the eval transform (once each: no augmentation), "
        "sampler, forward, mining, loss, backward, step (set-up and per-epoch checkpoints are in wall_s only)",
    }


def _tensors(embedder: Embedder, dataset: ArrayDataset) -> torch.Tensor:
    """Every image through the model's eval transform once (the transform simsearch applies per batch here)."""
    from simsearch.training.model import train_transform

    transform = train_transform(embedder, False)
    return torch.stack([transform(dataset[i][0]) for i in range(len(dataset))])


def run_peer(setup: TrainSetup, train_set: ArrayDataset, test_set: ArrayDataset) -> dict[str, Any]:
    """The same model and recipe trained with pytorch-metric-learning's loss, miner and sampler, in the loop its
    examples use: tensors prepared once, `DataLoader(sampler=MPerClassSampler)`, miner, loss, Adam step."""
    from pytorch_metric_learning import losses, miners, samplers
    from pytorch_metric_learning.utils import common_functions
    from torch.utils.data import DataLoader, TensorDataset

    from simsearch.training.model import build_embedder
    from simsearch.training.schedule import WarmupCosine

    torch.set_num_threads(setup.threads)
    config = recipe(setup)
    seed_everything(config.seed)
    embedder = build_embedder(config)  # the same weights as simsearch's run: same seed, same module, same order
    started = time.perf_counter()
    images = _tensors(embedder, train_set)
    labels = torch.as_tensor(np.asarray(train_set.labels), dtype=torch.long)
    prepare_s = time.perf_counter() - started
    common_functions.NUMPY_RANDOM = np.random.RandomState(config.seed)  # the sampler's draws
    sampler = samplers.MPerClassSampler(
        labels, m=setup.per_class, batch_size=setup.batch, length_before_new_iter=len(labels)
    )
    loader = DataLoader(TensorDataset(images, labels), batch_size=setup.batch, sampler=sampler, drop_last=True)
    miner = miners.TripletMarginMiner(margin=MARGIN, type_of_triplets="semihard")
    loss_fn = losses.TripletMarginLoss(margin=MARGIN)
    optimizer = torch.optim.Adam(embedder.parameters(), lr=setup.lr)
    schedule = WarmupCosine(optimizer, len(loader) * setup.epochs, 0)  # simsearch's schedule, for like with like
    embedder.train()
    samples, loss_value = 0, float("nan")
    batch_started = time.perf_counter()
    for _ in range(setup.epochs):
        for x, y in loader:
            embeddings = embedder(x)
            loss = loss_fn(embeddings, y, miner(embeddings, y))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            samples += len(y)
            loss_value = float(loss.detach())
    batch_seconds = time.perf_counter() - batch_started
    wall = time.perf_counter() - started
    p_at_1 = score(embedder, train_set, test_set)
    return {
        "library": "pytorch-metric-learning",
        "samples_per_s": round(samples / batch_seconds, 1),
        "p_at_1": round(p_at_1, 4),
        "batch_seconds": round(batch_seconds, 1),
        "wall_s": round(wall, 1),
        "prepare_s": round(prepare_s, 1),
        "final_loss": round(loss_value, 4),
        "steps_per_epoch": len(loader),
        "what_is_timed": "the epochs' batches: prepared tensors, sampler, forward, mining, loss, backward, step "
        "(the one-off transform of every image into a tensor is prepare_s, in wall_s only)",
    }


def compare(setup: TrainSetup) -> dict[str, Any]:
    """Both sides in turn in this process; the record's part with both rows and the ratios of this run."""
    train_set, test_set = load_data(setup)
    ours = run_simsearch(setup, train_set, test_set)
    logger.info("peers: simsearch training %s", ours)
    peer = run_peer(setup, train_set, test_set)
    logger.info("peers: pytorch-metric-learning training %s", peer)
    return {
        "data": f"Fashion-MNIST: {len(train_set)} training images (the gallery too), {len(test_set)} test queries",
        "recipe": {
            "model": f"{BACKBONE} (simsearch.models.convnet), grey 28 x 28, 128-d head, L2-normalised output",
            "loss": f"triplet, margin {MARGIN}, Euclidean distance on unit vectors, semi-hard negatives",
            "batches": f"{setup.batch} = {setup.batch // setup.per_class} classes x {setup.per_class}",
            "optimizer": f"Adam lr {setup.lr} (simsearch: AdamW, weight decay 0), cosine decay to 0, no warm-up",
            "epochs": setup.epochs,
            "threads": setup.threads,
            "seed": setup.seed,
            "initial_weights": "identical: the same module and seed build both models",
            "mining_difference": "simsearch semi_hard: per same-class pair, the closest negative farther than "
            "the positive within the margin (FaceNet), mean over those triplets; pytorch-metric-learning "
            "semihard: every such negative, mean over the triplets with a positive loss",
        },
        "sides": [ours, peer],
        "ratios": {
            "samples_per_s": round(ours["samples_per_s"] / peer["samples_per_s"], 3),
            "p_at_1_difference": round(ours["p_at_1"] - peer["p_at_1"], 4),
        },
    }
