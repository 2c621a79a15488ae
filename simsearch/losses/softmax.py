"""Softmax loss: cross-entropy on a linear classification head over the embeddings, the classification baseline.

The head is thrown away after training; only the embeddings it shaped are kept. Its parameters belong to the
loss, so give ``loss.parameters()`` to the optimizer too.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from simsearch.losses.base import MetricLoss, check_batch, check_positive


class SoftmaxLoss(MetricLoss):
    """``CE(W x + b) / temperature``: plain classification used as a metric-learning baseline.

    Args:
        temperature: divides the logits. L2-normalised embeddings give small logits early on; a temperature below
            1 sharpens them (Wu et al. 2018 / Zhai & Wu 2019 use about 0.05).
        bias: whether the head has a bias.
    """

    def __init__(self, num_classes: int, embed_dim: int, temperature: float = 1.0, bias: bool = True) -> None:
        super().__init__()
        check_positive(num_classes=num_classes, embed_dim=embed_dim, temperature=temperature)
        self.num_classes = num_classes
        self.temperature = float(temperature)
        self.head = nn.Linear(embed_dim, num_classes, bias=bias)

    def logits(self, embeddings: Tensor) -> Tensor:
        """``(N, C)`` class scores of ``(N, D)`` embeddings."""
        return self.head(embeddings) / self.temperature

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        check_batch(embeddings, labels, self.num_classes)
        return F.cross_entropy(self.logits(embeddings), labels.long())
