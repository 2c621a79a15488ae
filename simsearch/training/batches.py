"""What one step of metric learning sees: an epoch's batches (P x K batches, or Siamese pairs) and the loss of one
batch."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.utils.data import DataLoader

from simsearch.data import PKSampler, SiamesePairs
from simsearch.evaluation import TransformedDataset, autocast
from simsearch.losses import MetricLoss, PairLoss
from simsearch.models import Embedder
from simsearch.training.recipe import TrainConfig, TrainingError

__all__ = ["EpochBatches", "batch_loss"]


class EpochBatches:
    """An epoch's batches: P x K batches of the training set, or shuffled Siamese pairs of it."""

    def __init__(self, config: TrainConfig, train_data: TransformedDataset, device: torch.device) -> None:
        self.config = config
        self.data = train_data
        self.pin_memory = device.type == "cuda"
        self.sampler: PKSampler | None = None
        self.pairs: SiamesePairs | None = None
        if config.sampler == "pairs":
            n_pairs = config.pairs_per_epoch or (
                config.batches_per_epoch * config.pair_batch_size if config.batches_per_epoch else len(train_data)
            )
            self.pairs = SiamesePairs(train_data, n_pairs, config.positive_fraction, seed=config.seed)
            self.steps_per_epoch = math.ceil(n_pairs / config.pair_batch_size)
        else:
            self.sampler = PKSampler(
                train_data.labels, config.p, config.k, num_batches=config.batches_per_epoch, seed=config.seed
            )
            self.steps_per_epoch = len(self.sampler)

    def loader(self, epoch: int, generator: torch.Generator) -> DataLoader[Any]:
        common: dict[str, Any] = {
            "num_workers": self.config.workers,
            "pin_memory": self.pin_memory,
            "generator": generator,
        }
        if self.pairs is not None:
            self.pairs.set_epoch(epoch)
            # The pairs are drawn shuffled already; no shuffle here keeps an epoch a function of (seed, epoch).
            return DataLoader(self.pairs, batch_size=self.config.pair_batch_size, **common)
        assert self.sampler is not None
        self.sampler.set_epoch(epoch)
        return DataLoader(self.data, batch_sampler=self.sampler, **common)


def batch_loss(
    embedder: Embedder, loss_fn: MetricLoss, batch: Any, device: torch.device, *, pairs: bool
) -> tuple[torch.Tensor, int]:
    """The loss of one batch and the number of images it ran through the model.

    A pair batch `((x1, x2), y)` goes through the model as one batch of 2B images: the two towers of a Siamese
    network share their weights, so this is the same function (BatchNorm sees both halves together).
    """
    if pairs:
        (first, second), same = batch
        images = torch.cat([first, second]).to(device, non_blocking=True)
        with autocast(device):
            embeddings = embedder(images)
        emb1, emb2 = embeddings.float().split(len(first))
        if not isinstance(loss_fn, PairLoss):
            raise TrainingError(f"{type(loss_fn).__name__} cannot score Siamese pairs")
        return loss_fn.pair_loss(emb1, emb2, same.to(device)), len(images)
    images, labels = batch
    images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
    with autocast(device):
        embeddings = embedder(images)
    return loss_fn(embeddings.float(), labels), len(labels)
