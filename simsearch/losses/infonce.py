"""InfoNCE over the views of a batch (SimCLR's NT-Xent, Chen et al. 2020, with every other view of the same image a
positive) plus the KoLeo entropy term of SSCD (Pizzi et al. 2022, "A Self-Supervised Descriptor for Image Copy
Detection"): the copy-detection recipe, where each image is its own class and its augmented views are the copies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from simsearch.losses.base import LossError, MetricLoss, check_batch, check_positive, zero_loss


class InfoNCELoss(MetricLoss):
    """``-log`` of each view's softmax mass on the other views of its image, over every other view of the batch.

    With labels naming the image each view was made from, and 2+ views per image in a batch, this is the
    self-supervised SimCLR objective (the multi-positive form of Khosla et al. 2020 when an image has more than two
    views). Views whose image has no other view in the batch only serve as negatives.

    KoLeo (Sablayrolles et al. 2019) adds ``-mean log(distance to the nearest other image's view)``: it spreads the
    embeddings evenly over the sphere, so that unrelated photos that look alike are not left packed together, which
    is what a single duplicate threshold needs. SSCD weighs it 30 with temperature 0.05 (its "lambda").

    Args:
        temperature: divides the cosine similarities before the softmax.
        koleo_weight: weight of the KoLeo term (0 leaves it out).
    """

    def __init__(self, temperature: float = 0.05, koleo_weight: float = 0.0) -> None:
        super().__init__()
        check_positive(temperature=temperature)
        if koleo_weight < 0:
            raise LossError(f"koleo_weight must be >= 0, got {koleo_weight}")
        self.temperature = float(temperature)
        self.koleo_weight = float(koleo_weight)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        check_batch(embeddings, labels)
        z = F.normalize(embeddings.float(), dim=1)
        n = z.shape[0]
        self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
        same = (labels[:, None] == labels[None, :]) & ~self_mask
        queries = same.any(1)
        if not bool(queries.any()):
            return zero_loss(embeddings)
        similarity = z @ z.T
        logits = (similarity / self.temperature).masked_fill(self_mask, float("-inf"))
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        positive = log_prob.masked_fill(~same, 0.0).sum(1) / same.sum(1).clamp_min(1)
        loss = -positive[queries].mean()
        if self.koleo_weight > 0:
            others = similarity.masked_fill(same | self_mask, float("-inf"))
            nearest = (2 - 2 * others.max(1).values).clamp_min(1e-8).sqrt()
            loss = loss - self.koleo_weight * torch.log(nearest).mean()
        return loss

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, koleo_weight={self.koleo_weight}"
