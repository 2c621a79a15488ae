"""Class-balanced batching for metric learning: the P x K batch sampler, in-batch pair/triplet indices, Siamese pairs.

Batch losses (contrastive, triplet, multi-similarity...) find their positives inside a P x K batch; `SiamesePairs`
serves the classic two-tower training that consumes explicit `((x1, x2), y)` pairs instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from simsearch.data.folders import DatasetError

__all__ = ["PKSampler", "SiamesePairs", "pairs_from_batch", "triplets_from_batch"]

logger = logging.getLogger(__name__)

LabelSource = Sequence[int] | np.ndarray | torch.Tensor | Any


def _labels_of(source: LabelSource) -> np.ndarray:
    """`(N,) int64` labels of a dataset (its `labels` attribute) or of a label sequence."""
    labels = getattr(source, "labels", source)
    if isinstance(labels, torch.Tensor):
        labels = labels.cpu().numpy()
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"labels must be a 1-D integer sequence (or a dataset with `.labels`), got {labels.shape}")
    return labels.astype(np.int64, copy=False)


def _class_members(labels: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The distinct classes (sorted) and, for each, the sorted indices of its items."""
    order = np.argsort(labels, kind="stable")
    classes, starts = np.unique(labels[order], return_index=True)
    return classes, np.split(order, starts[1:])


class PKSampler(Sampler[list[int]]):
    """Batch sampler: each batch holds P distinct classes with K images each (Hermans et al. 2017, "In Defense of
    the Triplet Loss"), so every anchor has K-1 positives and (P-1)K negatives in its batch.

    Use it as `DataLoader(dataset, batch_sampler=PKSampler(dataset, p, k))`. Within an epoch the P classes of a
    batch are drawn uniformly without replacement; each class hands out its images from its own shuffled queue, so
    images are seen about equally often. A class with fewer than K images gives all of them plus random repeats
    (sampling with replacement for the remainder only). Batches depend only on (seed, epoch): call `set_epoch(e)`
    before each epoch for a fresh, reproducible order (as with torch's DistributedSampler); without it every pass
    repeats epoch 0.
    """

    def __init__(
        self,
        labels: LabelSource,
        p: int,
        k: int,
        *,
        num_batches: int | None = None,
        seed: int = 0,
    ) -> None:
        """Group the items by class.

        Args:
            labels: a dataset with `labels`, or the labels themselves.
            p: classes per batch.
            k: images per class.
            num_batches: batches per epoch; default `len(labels) // (p * k)` (at least 1).
            seed: fixes the batches of every epoch.

        Raises:
            DatasetError: fewer than `p` classes.
        """
        if p < 1 or k < 1:
            raise ValueError(f"p and k must be >= 1, got p={p}, k={k}")
        self.labels = _labels_of(labels)
        self.classes, self._members = _class_members(self.labels)
        if len(self.classes) < p:
            raise DatasetError(f"P x K sampling needs at least p={p} classes, the data have {len(self.classes)}")
        small = sum(len(m) < k for m in self._members)
        if small:
            logger.info(
                "%d of %d classes have fewer than k=%d images: their batches repeat images", small, len(self.classes), k
            )
        self.p, self.k, self.seed = p, k, seed
        self.num_batches = num_batches if num_batches is not None else max(1, len(self.labels) // (p * k))
        if self.num_batches < 1:
            raise ValueError(f"num_batches must be >= 1, got {self.num_batches}")
        self.epoch = 0

    @property
    def batch_size(self) -> int:
        return self.p * self.k

    def set_epoch(self, epoch: int) -> None:
        """Choose which epoch's batches the next iteration yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        n_classes = len(self.classes)
        queues = [rng.permutation(m) for m in self._members]
        cursors = np.zeros(n_classes, dtype=np.int64)
        for _ in range(self.num_batches):
            batch: list[int] = []
            for c in rng.choice(n_classes, size=self.p, replace=False):
                members = self._members[c]
                if len(members) < self.k:
                    extra = rng.choice(members, size=self.k - len(members), replace=True)
                    picked = np.concatenate([rng.permutation(members), extra])
                else:
                    if cursors[c] + self.k > len(queues[c]):
                        # New round: the unserved tail first, then the other images shuffled. Each image comes once
                        # per round and none twice in a batch (the tail is shorter than k).
                        tail = queues[c][cursors[c] :]
                        rest = rng.permutation(np.setdiff1d(members, tail, assume_unique=True))
                        queues[c] = np.concatenate([tail, rest])
                        cursors[c] = 0
                    picked = queues[c][cursors[c] : cursors[c] + self.k]
                    cursors[c] += self.k
                batch.extend(int(i) for i in picked)
            yield batch


def pairs_from_batch(labels: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every unordered pair `i < j` of a batch: `(i, j, y)` with y = 1 for the same class, 0 otherwise.

    Returns:
        `(M,) int64`, `(M,) int64`, `(M,) int64` with M = B(B-1)/2, in row-major (i, then j) order.
    """
    lab = _labels_of(labels)
    i, j = np.triu_indices(len(lab), k=1)
    return i.astype(np.int64), j.astype(np.int64), (lab[i] == lab[j]).astype(np.int64)


def triplets_from_batch(labels: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every valid triplet of a batch: anchor a, positive p != a of a's class, negative n of another class.

    Returns:
        `(a, p, n)`, each `(T,) int64`, ordered by anchor, then positive, then negative.
    """
    lab = _labels_of(labels)
    same = lab[:, None] == lab[None, :]
    positive = same & ~np.eye(len(lab), dtype=bool)
    a, p, n = np.nonzero(positive[:, :, None] & ~same[:, None, :])
    return a.astype(np.int64), p.astype(np.int64), n.astype(np.int64)


class SiamesePairs(Dataset):
    """A view of a labelled dataset as `((x1, x2), y)` pairs for two-tower Siamese training (Koch et al. 2015).

    `y` is 1.0 for a pair of the same class and 0.0 otherwise (a float, as a binary or regression target wants).
    A positive pair takes a class uniformly among those with at least two images, then two distinct images of it;
    a negative pair takes two distinct classes uniformly, then one image of each. Uniform classes rather than
    uniform images keep big classes from dominating. The pairs are drawn in advance from (seed, epoch):
    `set_epoch(e)` draws a new reproducible set.
    """

    def __init__(
        self,
        dataset: Dataset,
        pairs_per_epoch: int,
        positive_fraction: float = 0.5,
        seed: int = 0,
    ) -> None:
        """Draw epoch 0's pairs.

        Args:
            dataset: a dataset with `labels`, whose items are `(x, label)`.
            pairs_per_epoch: length of this view.
            positive_fraction: share of same-class pairs (rounded to a whole number of pairs).
            seed: fixes every epoch's pairs.
        """
        if pairs_per_epoch < 1:
            raise ValueError(f"pairs_per_epoch must be >= 1, got {pairs_per_epoch}")
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
        self.dataset = dataset
        self.labels = _labels_of(dataset)
        _, members = _class_members(self.labels)
        self._members = members
        self._pair_classes = np.array([c for c, m in enumerate(members) if len(m) >= 2], dtype=np.int64)
        self.pairs_per_epoch = pairs_per_epoch
        self.positive_fraction = positive_fraction
        n_pos = round(pairs_per_epoch * positive_fraction)
        if n_pos and len(self._pair_classes) == 0:
            raise DatasetError("positive pairs need a class with at least two images")
        if n_pos < pairs_per_epoch and len(members) < 2:
            raise DatasetError("negative pairs need at least two classes")
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw the pairs of `epoch` (positives first, then shuffled together)."""
        self.epoch = epoch
        rng = np.random.default_rng([self.seed, epoch])
        n_pos = round(self.pairs_per_epoch * self.positive_fraction)
        n_neg = self.pairs_per_epoch - n_pos
        rows: list[tuple[int, int, int]] = []
        for c in rng.choice(self._pair_classes, size=n_pos) if n_pos else []:
            i, j = rng.choice(self._members[c], size=2, replace=False)
            rows.append((int(i), int(j), 1))
        for _ in range(n_neg):
            c1, c2 = rng.choice(len(self._members), size=2, replace=False)
            rows.append((int(rng.choice(self._members[c1])), int(rng.choice(self._members[c2])), 0))
        pairs = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
        self.pairs: np.ndarray = pairs[rng.permutation(len(pairs))]

    def __len__(self) -> int:
        return self.pairs_per_epoch

    def __getitem__(self, index: int) -> tuple[tuple[Any, Any], float]:
        i, j, y = self.pairs[index]
        x1, _ = self.dataset[int(i)]
        x2, _ = self.dataset[int(j)]
        return (x1, x2), float(y)
