"""Siamese pair losses: contrastive (Hadsell, Chopra & LeCun 2006, "Dimensionality Reduction by Learning an
Invariant Mapping") and the plain pair-distance regression L = (d(E(x1), E(x2)) - y)^2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from simsearch.losses.base import LossError, PairLoss, check_batch, check_pairs, zero_loss
from simsearch.losses.distances import Distance, EuclideanDistance, as_distance
from simsearch.losses.miners import Pairs, all_pairs


def _select_pairs(labels: Tensor, pairs: Pairs | None) -> Pairs:
    if pairs is None:
        return all_pairs(labels.shape[0], labels.device)
    if len(pairs) != 2 or pairs[0].shape != pairs[1].shape or pairs[0].ndim != 1:
        raise LossError("pairs must be two (P,) index tensors (first, second)")
    return pairs[0].long(), pairs[1].long()


def _mean_nonzero(terms: Tensor) -> Tensor:
    # Averaging over the active terms only keeps the loss from fading as most pairs get satisfied.
    return terms.sum() / (terms > 0).sum().clamp_min(1)


class _DistancePairLoss(PairLoss):
    """A loss of each pair's distance and whether its two sides share a label: the batch's pairs (all, or given by
    index) and explicit two-tower pairs both reduce through `_reduce`."""

    distance: Distance

    def forward(self, embeddings: Tensor, labels: Tensor, pairs: Pairs | None = None) -> Tensor:
        """Loss over all unordered pairs of the batch, or over the given ``(first, second)`` index pairs."""
        check_batch(embeddings, labels)
        first, second = _select_pairs(labels, pairs)
        if first.numel() == 0:
            return zero_loss(embeddings)
        values = self.distance.pairwise(embeddings, embeddings)[first, second]
        return self._reduce(values, labels[first] == labels[second])

    def pair_loss(self, first: Tensor, second: Tensor, same: Tensor) -> Tensor:
        """Loss of explicit pairs: row i of ``first`` with row i of ``second``, ``same`` 1 for a positive pair."""
        check_pairs(first, second, same)
        return self._reduce(self.distance.paired(first, second), same > 0.5)

    def _reduce(self, values: Tensor, same: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class ContrastiveLoss(_DistancePairLoss):
    """Positive pairs are pulled inside ``pos_margin``, negative pairs pushed beyond ``neg_margin``.

    With a distance: ``relu(d - pos_margin)`` for positives and ``relu(neg_margin - d)`` for negatives; with a
    similarity both inequalities flip (``relu(pos_margin - s)``, ``relu(s - neg_margin)``). Hadsell et al. square
    these hinges; the plain hinge used here keeps its gradient up to the margin instead of fading near it.

    Reduction: the positive terms are averaged over the non-zero ones, likewise the negative terms, and the two
    means are added. Averaging them separately keeps the few positive pairs of a batch from being drowned by the
    many negatives; averaging over non-zero terms keeps the loss from fading as pairs get satisfied.

    Args:
        pos_margin: default 0 for a distance, 1 for a similarity (only identical directions are free).
        neg_margin: default 1 for a distance, 0 for a similarity (orthogonal is far enough).
        distance: a Distance or its name; Euclidean by default, as in the paper.
    """

    def __init__(
        self,
        pos_margin: float | None = None,
        neg_margin: float | None = None,
        distance: Distance | str | None = None,
    ) -> None:
        super().__init__()
        self.distance = as_distance(distance, EuclideanDistance())
        sim = self.distance.is_similarity
        self.pos_margin = float(pos_margin if pos_margin is not None else (1.0 if sim else 0.0))
        self.neg_margin = float(neg_margin if neg_margin is not None else (0.0 if sim else 1.0))
        if self.distance.farness(self.pos_margin) > self.distance.farness(self.neg_margin):
            raise LossError(
                f"pos_margin {self.pos_margin} must be closer than neg_margin {self.neg_margin} for {self.distance}"
            )

    def _reduce(self, values: Tensor, same: Tensor) -> Tensor:
        d = self.distance
        far = d.farness(values)
        pos_terms = F.relu(far[same] - d.farness(self.pos_margin))
        neg_terms = F.relu(d.farness(self.neg_margin) - far[~same])
        return _mean_nonzero(pos_terms) + _mean_nonzero(neg_terms)

    def extra_repr(self) -> str:
        return f"pos_margin={self.pos_margin}, neg_margin={self.neg_margin}, distance={self.distance}"


class PairRegressionLoss(_DistancePairLoss):
    """Regress each pair's distance onto 0 (same label) or 1 (different labels): ``mean((d - y)^2)``.

    The simplest Siamese objective. With a similarity the targets flip (1 for similar, 0 for dissimilar), which for
    cosine is the same as regressing the cosine distance ``1 - s`` onto 0/1. Every pair counts equally, so a batch
    with many more negatives than positives weighs negatives more, by design: no reweighting.
    """

    def __init__(self, distance: Distance | str | None = None) -> None:
        super().__init__()
        self.distance = as_distance(distance, EuclideanDistance())

    def _reduce(self, values: Tensor, same: Tensor) -> Tensor:
        different = (~same).to(values.dtype)
        target = 1.0 - different if self.distance.is_similarity else different
        return torch.mean((values - target) ** 2)

    def extra_repr(self) -> str:
        return f"distance={self.distance}"
