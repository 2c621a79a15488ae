"""Triplet margin loss (Schroff, Kalenichenko & Philbin 2015, "FaceNet") with batch-all and batch-hard mining
(Hermans, Beyer & Leibe 2017, "In Defense of the Triplet Loss for Person Re-Identification") and semi-hard mining.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from simsearch.losses.base import LossError, MetricLoss, check_batch, check_non_negative, zero_loss
from simsearch.losses.distances import Distance, EuclideanDistance, as_distance
from simsearch.losses.miners import TRIPLET_MINING, Triplets, mine_triplets


class TripletMarginLoss(MetricLoss):
    """``relu(d(a, p) - d(a, n) + margin)`` on mined triplets; with a similarity, ``relu(s(a, n) - s(a, p) + margin)``.

    Reduction, by mining:
        - ``batch_hard``: one triplet per anchor (hardest positive, hardest negative), mean over anchors.
        - ``batch_all``: every valid triplet, mean over the triplets with a positive loss only (Hermans et al.:
          averaging over all of them lets the many easy triplets wash the signal out).
        - ``semi_hard``: one triplet per anchor-positive pair, mean over the mined triplets.

    Args:
        margin: in the units of ``distance``.
        distance: a Distance or its name; Euclidean by default, as in FaceNet.
        mining: one of ``"batch_hard"``, ``"batch_all"``, ``"semi_hard"``.
    """

    def __init__(self, margin: float = 0.2, distance: Distance | str | None = None, mining: str = "batch_hard") -> None:
        super().__init__()
        check_non_negative(margin=margin)
        if mining not in TRIPLET_MINING:
            raise LossError(f"unknown triplet mining {mining!r}; choose one of {', '.join(TRIPLET_MINING)}")
        self.margin = float(margin)
        self.distance = as_distance(distance, EuclideanDistance())
        self.mining = mining

    def forward(self, embeddings: Tensor, labels: Tensor, triplets: Triplets | None = None) -> Tensor:
        """Loss over the mined triplets, or over the given ``(anchor, positive, negative)`` index triplets."""
        check_batch(embeddings, labels)
        mat = self.distance.pairwise(embeddings, embeddings)
        if triplets is None:
            a, p, n = mine_triplets(self.mining, mat, labels, self.distance, self.margin)
        else:
            if len(triplets) != 3 or not all(t.ndim == 1 and t.shape == triplets[0].shape for t in triplets):
                raise LossError("triplets must be three (T,) index tensors (anchor, positive, negative)")
            a, p, n = (t.long() for t in triplets)
        if a.numel() == 0:
            return zero_loss(embeddings)
        far = self.distance.farness(mat)
        terms = F.relu(far[a, p] - far[a, n] + self.margin)
        if self.mining == "batch_all":
            return terms.sum() / (terms > 0).sum().clamp_min(1)
        return terms.mean()

    def extra_repr(self) -> str:
        return f"margin={self.margin}, distance={self.distance}, mining={self.mining!r}"
