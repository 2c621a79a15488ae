"""What every loss shares: the error type, input checks, a differentiable zero and a masked log-sum-exp."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from simsearch.errors import LossError

_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


class MetricLoss(nn.Module):
    """Base of every loss: ``loss(embeddings, labels)`` returns a scalar to minimise."""

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class PairLoss(MetricLoss):
    """A loss that can also score explicit Siamese pairs (two-tower training, Koch et al. 2015).

    ``pair_loss(first, second, same)`` takes the two towers' ``(B, D)`` embeddings and ``(B,)`` targets
    (1 = same class, 0 = different), so a pair batch needs no class labels and no ``(2B, 2B)`` distance matrix.
    """

    def pair_loss(self, first: Tensor, second: Tensor, same: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def check_pairs(first: Tensor, second: Tensor, same: Tensor) -> None:
    """Raise LossError unless ``first`` and ``second`` are ``(B, D)`` floats of one shape and ``same`` is ``(B,)``."""
    if first.ndim != 2 or not first.is_floating_point() or first.shape != second.shape:
        raise LossError(
            f"pair embeddings must be two (B, D) float tensors of one shape, got {tuple(first.shape)} and "
            f"{tuple(second.shape)}"
        )
    if same.ndim != 1 or same.shape[0] != first.shape[0]:
        raise LossError(f"pair targets must be ({first.shape[0]},), got shape {tuple(same.shape)}")
    if first.shape[0] == 0:
        raise LossError("empty batch: a loss needs at least one pair")


def check_batch(embeddings: Tensor, labels: Tensor, num_classes: int | None = None) -> None:
    """Raise LossError unless ``embeddings`` is ``(N, D)`` float and ``labels`` is ``(N,)`` integer.

    Args:
        num_classes: for losses with a class head or proxies, labels must also lie in ``0..num_classes-1``.
    """
    if embeddings.ndim != 2 or not embeddings.is_floating_point():
        raise LossError(
            f"embeddings must be a (N, D) float tensor, got shape {tuple(embeddings.shape)} of {embeddings.dtype}"
        )
    if labels.ndim != 1 or labels.dtype not in _INT_DTYPES:
        raise LossError(f"labels must be a (N,) integer tensor, got shape {tuple(labels.shape)} of {labels.dtype}")
    if labels.shape[0] != embeddings.shape[0]:
        raise LossError(f"{embeddings.shape[0]} embeddings but {labels.shape[0]} labels")
    if embeddings.shape[0] == 0:
        raise LossError("empty batch: a loss needs at least one embedding")
    if num_classes is not None:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            raise LossError(
                f"labels must be class indices in 0..{num_classes - 1} for this loss, got values in {low}..{high}"
            )


def check_positive(**options: float) -> None:
    """Raise LossError for any option that is not strictly positive."""
    for name, value in options.items():
        if not value > 0:
            raise LossError(f"{name} must be > 0, got {value}")


def check_non_negative(**options: float) -> None:
    """Raise LossError for any option that is negative."""
    for name, value in options.items():
        if not value >= 0:
            raise LossError(f"{name} must be >= 0, got {value}")


def zero_loss(embeddings: Tensor) -> Tensor:
    """A zero still connected to the graph, so ``backward()`` works when a batch has nothing to learn."""
    return embeddings.sum() * 0


def log1p_sum_exp(x: Tensor, mask: Tensor, dim: int) -> Tensor:
    """``log(1 + sum(exp(x[mask])))`` along ``dim``, stable for large ``x`` and 0 (with finite grads) where all masked.

    A zero logit is prepended instead of taking ``softplus(logsumexp(...))``: the latter gives NaN gradients when a
    whole row is masked.
    """
    masked = x.masked_fill(~mask, float("-inf"))
    shape = list(x.shape)
    shape[dim] = 1
    return torch.logsumexp(torch.cat([x.new_zeros(shape), masked], dim=dim), dim=dim)
