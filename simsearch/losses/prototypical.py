"""Prototypical loss (Snell, Swersky & Zemel 2017, "Prototypical Networks for Few-shot Learning"), read off a
P x K batch: every image is a query against the class means of the others.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from simsearch.losses.base import MetricLoss, check_batch, check_positive, zero_loss
from simsearch.losses.distances import Distance, EuclideanDistance, as_distance


class PrototypicalLoss(MetricLoss):
    """Cross-entropy of each embedding over the batch's class prototypes, ``softmax(-scale * d(x_i, c_j))``.

    A prototype is the mean embedding of a class in the batch. The query's own class prototype leaves the query
    out (the mean of its K - 1 classmates), so one P x K batch is a P-way, (K-1)-shot episode in which every image
    is a query, instead of the paper's split into a support and a query set that scores only part of the batch.
    The sampler sets the episode: K = 2 trains one-shot, as Omniglot's one-shot test asks; a larger P makes the
    episode harder, which Snell et al. found helps. Images whose class has no classmate in the batch are not
    queries, but their class still counts as a wrong answer for the others.

    Args:
        scale: multiplies the distances before the softmax. The paper's embeddings are unnormalised; ours are
            L2-normalised, so squared distances lie in [0, 4] and the logits need a scale to be peaked at all.
        distance: squared Euclidean by default, the paper's (it makes the classifier linear in the embedding);
            any other works, a similarity with its sign flipped.
    """

    def __init__(self, scale: float = 10.0, distance: Distance | str | None = None) -> None:
        super().__init__()
        check_positive(scale=scale)
        self.scale = float(scale)
        self.distance = as_distance(distance, EuclideanDistance(squared=True))

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        check_batch(embeddings, labels)
        classes, index = torch.unique(labels, return_inverse=True)
        counts = torch.bincount(index, minlength=len(classes)).to(embeddings.dtype)
        queries = counts[index] > 1
        if len(classes) < 2 or not bool(queries.any()):
            return zero_loss(embeddings)
        sums = embeddings.new_zeros(len(classes), embeddings.shape[1]).index_add_(0, index, embeddings)
        prototypes = sums / counts[:, None]
        x, own_index = embeddings[queries], index[queries]
        own = (sums[own_index] - x) / (counts[own_index] - 1)[:, None]
        far = self.distance.farness(self.distance.pairwise(x, prototypes))
        own_far = self.distance.farness(self.distance.paired(x, own))
        far = far.scatter(1, own_index[:, None], own_far[:, None])
        return F.cross_entropy(-self.scale * far, own_index)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, distance={self.distance}"
