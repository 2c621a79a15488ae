"""Proxy-Anchor loss (Kim, Kim, Cho & Kwak 2020, "Proxy Anchor Loss for Deep Metric Learning"): one learnable proxy
per class, used as an anchor against every embedding of the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simsearch.losses.base import MetricLoss, check_batch, check_non_negative, check_positive, log1p_sum_exp


class ProxyAnchorLoss(MetricLoss):
    """With ``s(x, p)`` the cosine between an embedding and a proxy::

        1/|P+| sum_{p in P+} log(1 + sum_{x in X_p+} exp(-alpha (s(x, p) - margin)))
      + 1/|P|  sum_{p in P}  log(1 + sum_{x in X_p-} exp( alpha (s(x, p) + margin)))

    ``P`` is every proxy, ``P+`` those with at least one embedding of their class in the batch, ``X_p+`` / ``X_p-``
    the batch's embeddings of / not of the proxy's class. The proxies are parameters: give ``loss.parameters()`` to
    the optimizer, at a much higher learning rate than the backbone (the paper uses 100x).
    """

    def __init__(self, num_classes: int, embed_dim: int, margin: float = 0.1, alpha: float = 32.0) -> None:
        super().__init__()
        check_positive(num_classes=num_classes, embed_dim=embed_dim, alpha=alpha)
        check_non_negative(margin=margin)
        self.num_classes = num_classes
        self.margin = float(margin)
        self.alpha = float(alpha)
        self.proxies = nn.Parameter(torch.empty(num_classes, embed_dim))
        nn.init.kaiming_normal_(self.proxies, mode="fan_out")

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        check_batch(embeddings, labels, self.num_classes)
        cos = F.normalize(embeddings, dim=1) @ F.normalize(self.proxies, dim=1).T.to(embeddings.dtype)  # (N, C)
        member = F.one_hot(labels.long(), self.num_classes).bool()
        pos = log1p_sum_exp(-self.alpha * (cos - self.margin), member, dim=0)  # (C,)
        neg = log1p_sum_exp(self.alpha * (cos + self.margin), ~member, dim=0)
        present = member.any(0)
        return pos[present].sum() / present.sum() + neg.sum() / self.num_classes

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, margin={self.margin}, alpha={self.alpha}"
