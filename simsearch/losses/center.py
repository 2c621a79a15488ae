"""Center loss with softmax (Wen, Zhang, Li & Qiao 2016, "A Discriminative Feature Learning Approach for Deep Face
Recognition"): L = CE(head) + weight * Lc, with class centres moved by their own update rule, not by the optimizer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simsearch.losses.base import LossError, MetricLoss, check_batch, check_non_negative, check_positive


class CenterLoss(MetricLoss):
    """Cross-entropy on a linear head plus ``weight * Lc``, ``Lc = 1/2 * sum_i ||x_i - c_{y_i}||^2 / N``.

    The centres are a buffer (saved in ``state_dict``, invisible to the optimizer). In training mode, after the
    loss is computed from the current centres, each class ``j`` seen in the batch moves by the paper's rule::

        delta_j = sum_i [y_i = j] (c_j - x_i) / (1 + sum_i [y_i = j])
        c_j <- c_j - alpha * delta_j

    Why not let the optimizer move them: Wen et al. update centres per mini-batch from only that batch's members,
    at their own rate ``alpha``, because a mini-batch sees few samples of each class and centres driven by the
    network's learning rate (and momentum, weight decay) would either crawl or swing; the ``1 +`` in the
    denominator damps classes with few samples in the batch. The gradient of ``Lc`` therefore reaches only the
    embeddings. The softmax term keeps classes apart, Lc makes each class compact; neither alone is enough.

    Args:
        weight: lambda, the weight of Lc against the cross-entropy.
        alpha: the centres' own update rate in ``[0, 1]``.
        temperature: divides the head's logits, as in `SoftmaxLoss`. Wen et al.'s features are unnormalised; on
            L2-normalised embeddings the logits start near zero, and with thousands of classes the cross-entropy
            then barely moves from log(C) for epochs (measured on Omniglot's 3,472 rotated characters). About 0.05
            fixes that.
    """

    centers: Tensor

    def __init__(
        self, num_classes: int, embed_dim: int, weight: float = 0.01, alpha: float = 0.5, temperature: float = 1.0
    ) -> None:
        super().__init__()
        check_positive(num_classes=num_classes, embed_dim=embed_dim, temperature=temperature)
        check_non_negative(weight=weight, alpha=alpha)
        if alpha > 1:
            raise LossError(f"alpha must be in [0, 1], got {alpha}")
        self.num_classes = num_classes
        self.weight = float(weight)
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.head = nn.Linear(embed_dim, num_classes)
        # Roughly unit-norm random centres: the scale of the L2-normalised embeddings they will chase.
        self.register_buffer("centers", torch.randn(num_classes, embed_dim) / math.sqrt(embed_dim))

    def center_term(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Lc: half the mean squared distance of each embedding to its class centre."""
        diff = embeddings - self.centers[labels].to(embeddings.dtype)
        return 0.5 * (diff * diff).sum(1).mean()

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        check_batch(embeddings, labels, self.num_classes)
        labels = labels.long()
        loss = F.cross_entropy(self.head(embeddings) / self.temperature, labels) + self.weight * self.center_term(
            embeddings, labels
        )
        if self.training and self.alpha > 0:
            self.update_centers(embeddings.detach(), labels)
        return loss

    @torch.no_grad()
    def update_centers(self, embeddings: Tensor, labels: Tensor) -> None:
        """Apply one step of Wen et al.'s centre update for the classes present in the batch."""
        x = embeddings.to(self.centers.dtype)
        counts = torch.bincount(labels, minlength=self.num_classes).to(x.dtype)  # (C,)
        sums = torch.zeros_like(self.centers).index_add_(0, labels, x)  # sum of x_i per class
        # sum_i [y_i = j] (c_j - x_i) = n_j c_j - sum_i x_i; classes absent from the batch get a zero delta.
        delta = (counts[:, None] * self.centers - sums) / (1.0 + counts[:, None])
        self.centers.sub_(self.alpha * delta)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, weight={self.weight}, alpha={self.alpha}, temperature={self.temperature}"
        )
