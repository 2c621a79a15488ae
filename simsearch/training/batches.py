"""What one step of metric learning sees: an epoch's batches (P x K batches, or Siamese pairs) and the loss of one
batch."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from simsearch.data import PKSampler, SiamesePairs
from simsearch.evaluation import TransformedDataset, autocast
from simsearch.losses import MetricLoss, PairLoss
from simsearch.models import Embedder
from simsearch.training.recipe import TrainConfig, TrainingError

__all__ = ["EpochBatches", "TransformedOnce", "batch_loss"]

#: Training images without augmentation are transformed once and kept while they take at most this much memory.
TRANSFORMED_CACHE_BYTES = 1 << 30


class TransformedOnce(Dataset):
    """A training set whose transform is the same every epoch (no augmentation): each item is decoded and
    transformed on first use and kept, so later epochs skip PIL and the transform (on 28 x 28 Fashion-MNIST they
    took about a seventh of a Conv-4 training step on 2 cores)."""

    def __init__(self, data: TransformedDataset) -> None:
        self.data = data
        self.labels = data.labels
        self._items: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Any:
        item = self._items.get(index)
        if item is None:
            item = self._items[index] = self.data[index]
        return item

    @staticmethod
    def fits(config: TrainConfig, data: TransformedDataset, input_size: tuple[int, ...]) -> bool:
        """Whether the recipe's items can be kept: no augmentation, no loader workers (each worker would fill its
        own copy, lost at the epoch's end), and float32 images of `input_size` within TRANSFORMED_CACHE_BYTES."""
        item_bytes = 4 * math.prod(input_size)
        return not config.augment and config.workers == 0 and item_bytes * len(data) <= TRANSFORMED_CACHE_BYTES


class EpochBatches:
    """An epoch's batches: P x K batches of the training set, or shuffled Siamese pairs of it."""

    def __init__(
        self, config: TrainConfig, train_data: TransformedDataset | TransformedOnce, device: torch.device
    ) -> None:
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
