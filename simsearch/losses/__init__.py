"""Metric-learning losses with a uniform call ``loss(embeddings, labels)``, their distances and miners, and a
small registry (``create_loss`` / ``list_losses``) so a config file or the CLI can name a loss.
"""

from __future__ import annotations

import fnmatch
import inspect
from typing import Any, NamedTuple

from simsearch.losses.base import LossError, MetricLoss, PairLoss
from simsearch.losses.center import CenterLoss
from simsearch.losses.contrastive import ContrastiveLoss, PairRegressionLoss
from simsearch.losses.distances import (
    CosineSimilarity,
    Distance,
    EuclideanDistance,
    create_distance,
    list_distances,
)
from simsearch.losses.infonce import InfoNCELoss
from simsearch.losses.margin_softmax import ArcFaceLoss, CosFaceLoss
from simsearch.losses.miners import TRIPLET_MINING
from simsearch.losses.multi_similarity import MultiSimilarityLoss
from simsearch.losses.prototypical import PrototypicalLoss
from simsearch.losses.proxy_anchor import ProxyAnchorLoss
from simsearch.losses.softmax import SoftmaxLoss
from simsearch.losses.triplet import TripletMarginLoss


class _Entry(NamedTuple):
    cls: type[MetricLoss]
    # Losses with a class head or proxies are built with (num_classes, embed_dim); pair losses with neither.
    per_class: bool


_LOSSES: dict[str, _Entry] = {
    "softmax": _Entry(SoftmaxLoss, True),
    "contrastive": _Entry(ContrastiveLoss, False),
    "pair_regression": _Entry(PairRegressionLoss, False),
    "triplet": _Entry(TripletMarginLoss, False),
    "center": _Entry(CenterLoss, True),
    "multi_similarity": _Entry(MultiSimilarityLoss, False),
    "arcface": _Entry(ArcFaceLoss, True),
    "cosface": _Entry(CosFaceLoss, True),
    "proxy_anchor": _Entry(ProxyAnchorLoss, True),
    "prototypical": _Entry(PrototypicalLoss, False),
    "infonce": _Entry(InfoNCELoss, False),
}


def list_losses(pattern: str = "*") -> list[str]:
    """Registered loss names, sorted, optionally filtered by a shell wildcard (``"*face"``)."""
    return sorted(name for name in _LOSSES if fnmatch.fnmatch(name, pattern))


def loss_has_parameters(name: str) -> bool:
    """Whether the named loss owns learnable parameters (a head, weights or proxies) the optimizer must see."""
    return _entry(name).per_class


def is_pair_loss(name: str) -> bool:
    """Whether the named loss can train on explicit Siamese pairs (`PairLoss.pair_loss`), not only P x K batches."""
    return issubclass(_entry(name).cls, PairLoss)


def _entry(name: str) -> _Entry:
    try:
        return _LOSSES[name]
    except KeyError:
        raise LossError(f"unknown loss {name!r}; choose one of {', '.join(list_losses())}") from None


def create_loss(name: str, *, num_classes: int | None = None, embed_dim: int, **kwargs: Any) -> MetricLoss:
    """Build a loss by name; options that are None are dropped so the loss's own (paper) defaults apply.

    Args:
        num_classes: required by the losses with a class head or proxies (softmax, center, arcface, cosface,
            proxy_anchor); ignored by the pair and triplet losses.
        embed_dim: the embedding width; ignored by the pair and triplet losses.
        **kwargs: the loss's own options, e.g. ``margin=0.1, mining="semi_hard", distance="cosine"``.

    Example:
        >>> loss = create_loss("triplet", num_classes=None, embed_dim=128, margin=0.1, distance="cosine")
    """
    entry = _entry(name)
    options = {key: value for key, value in kwargs.items() if value is not None}
    accepted = set(inspect.signature(entry.cls.__init__).parameters) - {"self", "num_classes", "embed_dim"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise LossError(
            f"loss {name!r} has no option {', '.join(map(repr, unknown))}; it takes {', '.join(sorted(accepted))}"
        )
    if entry.per_class:
        if num_classes is None or num_classes < 2:
            raise LossError(f"loss {name!r} needs num_classes >= 2 (the number of training classes), got {num_classes}")
        return entry.cls(num_classes, embed_dim, **options)  # type: ignore[call-arg]
    return entry.cls(**options)


__all__ = [
    "TRIPLET_MINING",
    "ArcFaceLoss",
    "CenterLoss",
    "ContrastiveLoss",
    "CosFaceLoss",
    "CosineSimilarity",
    "Distance",
    "InfoNCELoss",
    "EuclideanDistance",
    "LossError",
    "MetricLoss",
    "MultiSimilarityLoss",
    "PairLoss",
    "PairRegressionLoss",
    "PrototypicalLoss",
    "ProxyAnchorLoss",
    "SoftmaxLoss",
    "TripletMarginLoss",
    "create_distance",
    "create_loss",
    "is_pair_loss",
    "list_distances",
    "list_losses",
    "loss_has_parameters",
]
