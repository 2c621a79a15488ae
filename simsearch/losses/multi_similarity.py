"""Multi-similarity loss with its pair mining (Wang, Han, Huang, Dong & Scott 2019, "Multi-Similarity Loss with
General Pair Weighting for Deep Metric Learning").
"""

from __future__ import annotations

import torch
from torch import Tensor

from simsearch.losses.base import MetricLoss, check_batch, check_non_negative, check_positive, log1p_sum_exp, zero_loss
from simsearch.losses.distances import CosineSimilarity, Distance, as_distance
from simsearch.losses.miners import pair_masks


class MultiSimilarityLoss(MetricLoss):
    """Per anchor ``i``, after mining::

        1/alpha * log(1 + sum_{j in P_i} exp(-alpha (S_ij - base)))
      + 1/beta  * log(1 + sum_{k in N_i} exp( beta (S_ik - base)))

    Mining keeps a positive only if ``S_ij - epsilon < max_k S_ik`` (over the anchor's negatives) and a negative
    only if ``S_ik + epsilon > min_j S_ij`` (over its positives): pairs that are informative relative to the
    hardest pair of the other kind. The loss is the mean over anchors that have at least one positive and one
    negative in the batch.

    ``S`` is a similarity (cosine by default, as in the paper). Given a distance, ``S = -d`` and ``base`` is read on
    that negated scale.
    """

    def __init__(
        self,
        alpha: float = 2.0,
        beta: float = 50.0,
        base: float = 0.5,
        epsilon: float = 0.1,
        distance: Distance | str | None = None,
    ) -> None:
        super().__init__()
        check_positive(alpha=alpha, beta=beta)
        check_non_negative(epsilon=epsilon)
        self.alpha, self.beta, self.base, self.epsilon = float(alpha), float(beta), float(base), float(epsilon)
        self.distance = as_distance(distance, CosineSimilarity())

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        check_batch(embeddings, labels)
        sim = -self.distance.farness(self.distance.pairwise(embeddings, embeddings))
        pos, neg = pair_masks(labels)
        valid = pos.any(1) & neg.any(1)
        if not bool(valid.any()):
            return zero_loss(embeddings)
        with torch.no_grad():
            s = sim.detach()
            hardest_neg = s.masked_fill(~neg, float("-inf")).amax(1, keepdim=True)
            hardest_pos = s.masked_fill(~pos, float("inf")).amin(1, keepdim=True)
            keep_pos = pos & (s - self.epsilon < hardest_neg)
            keep_neg = neg & (s + self.epsilon > hardest_pos)
        pos_term = log1p_sum_exp(-self.alpha * (sim - self.base), keep_pos, dim=1) / self.alpha
        neg_term = log1p_sum_exp(self.beta * (sim - self.base), keep_neg, dim=1) / self.beta
        return (pos_term + neg_term)[valid].mean()

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, beta={self.beta}, base={self.base}, epsilon={self.epsilon}, distance={self.distance}"
        )
