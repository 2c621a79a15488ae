"""Additive-margin softmax losses on normalised weights and embeddings: ArcFace (Deng, Guo, Xue & Zafeiriou 2019,
"ArcFace: Additive Angular Margin Loss for Deep Face Recognition") and CosFace (Wang et al. 2018, "CosFace: Large
Margin Cosine Loss for Deep Face Recognition").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simsearch.losses.base import MetricLoss, check_batch, check_non_negative, check_positive


class _MarginSoftmax(MetricLoss):
    """Cross-entropy on ``scale * cos(theta)`` with a margin applied to the true class's logit only.

    The class weights are learnable: give ``loss.parameters()`` to the optimizer.
    """

    def __init__(self, num_classes: int, embed_dim: int, margin: float, scale: float) -> None:
        super().__init__()
        check_positive(num_classes=num_classes, embed_dim=embed_dim, scale=scale)
        check_non_negative(margin=margin)
        self.num_classes = num_classes
        self.margin = float(margin)
        self.scale = float(scale)
        self.weight = nn.Parameter(torch.empty(num_classes, embed_dim))
        nn.init.xavier_uniform_(self.weight)

    def cosines(self, embeddings: Tensor) -> Tensor:
        """``(N, C)`` cosine between each embedding and each class weight."""
        cos = F.normalize(embeddings, dim=1) @ F.normalize(self.weight, dim=1).T.to(embeddings.dtype)
        return cos.clamp(-1.0, 1.0)

    def _target_cosine(self, cos: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        check_batch(embeddings, labels, self.num_classes)
        labels = labels.long()[:, None]
        cos = self.cosines(embeddings)
        target = self._target_cosine(cos.gather(1, labels))
        logits = cos.scatter(1, labels, target) * self.scale
        return F.cross_entropy(logits, labels[:, 0])

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, margin={self.margin}, scale={self.scale}"


class ArcFaceLoss(_MarginSoftmax):
    """The true class's logit is ``scale * cos(theta + margin)``: a margin on the angle itself.

    Past ``theta = pi - margin``, ``cos(theta + margin)`` would rise again and reward moving away from the class;
    there the logit continues as ``cos(theta) - (1 - cos(margin))`` instead, which is continuous (-1 at the switch)
    and keeps decreasing with the angle.
    """

    def __init__(self, num_classes: int, embed_dim: int, margin: float = 0.5, scale: float = 64.0) -> None:
        super().__init__(num_classes, embed_dim, margin, scale)

    def _target_cosine(self, cos: Tensor) -> Tensor:
        m = self.margin
        # cos(t + m) from cos(t) without acos, whose gradient is infinite at +-1.
        sin = (1.0 - cos * cos).clamp_min(1e-12).sqrt()
        shifted = cos * math.cos(m) - sin * math.sin(m)
        return torch.where(cos > math.cos(math.pi - m), shifted, cos - (1.0 - math.cos(m)))


class CosFaceLoss(_MarginSoftmax):
    """The true class's logit is ``scale * (cos(theta) - margin)``: a margin on the cosine."""

    def __init__(self, num_classes: int, embed_dim: int, margin: float = 0.35, scale: float = 64.0) -> None:
        super().__init__(num_classes, embed_dim, margin, scale)

    def _target_cosine(self, cos: Tensor) -> Tensor:
        return cos - self.margin
