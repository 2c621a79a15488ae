"""Which pairs and triplets of a batch a loss looks at: label masks and the triplet miners.

A miner returns index tensors ``(anchor, positive, negative)``; the loss then evaluates only those triplets.
Batch-all and batch-hard follow Hermans et al. 2017 ("In Defense of the Triplet Loss for Person
Re-Identification"); semi-hard follows Schroff et al. 2015 ("FaceNet").
"""

from __future__ import annotations

import torch
from torch import Tensor

from simsearch.losses.base import LossError
from simsearch.losses.distances import Distance

Pairs = tuple[Tensor, Tensor]
Triplets = tuple[Tensor, Tensor, Tensor]

TRIPLET_MINING = ("batch_all", "batch_hard", "semi_hard")


def pair_masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Positive mask (same label, not the sample itself) and negative mask (other label), both ``(N, N)`` bool."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def all_pairs(n: int, device: torch.device | None = None) -> Pairs:
    """Every unordered pair ``i < j`` of a batch of ``n``, each once."""
    ij = torch.triu_indices(n, n, offset=1, device=device)
    return ij[0], ij[1]


def _empty_triplets(device: torch.device) -> Triplets:
    empty = torch.empty(0, dtype=torch.long, device=device)
    return empty, empty.clone(), empty.clone()


def batch_all_triplets(labels: Tensor) -> Triplets:
    """Every valid triplet: ``a != p``, ``y_a == y_p``, ``y_n != y_a``; O(N^3) memory, fine for hundreds."""
    pos, neg = pair_masks(labels)
    valid = pos[:, :, None] & neg[:, None, :]
    a, p, n = valid.nonzero(as_tuple=True)
    return a, p, n


def batch_hard_triplets(mat: Tensor, labels: Tensor, distance: Distance) -> Triplets:
    """One triplet per anchor: its farthest positive and its closest negative.

    Anchors without a positive or without a negative in the batch are left out.

    Args:
        mat: ``(N, N)`` values of ``distance`` between the batch's embeddings.
    """
    pos, neg = pair_masks(labels)
    far = distance.farness(mat.detach())
    anchors = (pos.any(1) & neg.any(1)).nonzero(as_tuple=True)[0]
    if anchors.numel() == 0:
        return _empty_triplets(labels.device)
    hardest_pos = far.masked_fill(~pos, float("-inf")).argmax(1)
    hardest_neg = far.masked_fill(~neg, float("inf")).argmin(1)
    return anchors, hardest_pos[anchors], hardest_neg[anchors]


def semi_hard_triplets(mat: Tensor, labels: Tensor, distance: Distance, margin: float) -> Triplets:
    """For each anchor-positive pair, the closest negative that is still farther than the positive, within margin.

    These negatives violate the margin (so they teach something) without being closer than the positive, which
    Schroff et al. found to collapse training early on. Pairs with no such negative are left out.

    Args:
        mat: ``(N, N)`` values of ``distance`` between the batch's embeddings.
        margin: in the units of ``distance``.
    """
    pos, neg = pair_masks(labels)
    far = distance.farness(mat.detach())
    a, p = pos.nonzero(as_tuple=True)
    if a.numel() == 0:
        return _empty_triplets(labels.device)
    far_ap = far[a, p][:, None]
    far_an = far[a]  # (pairs, N)
    band = neg[a] & (far_an > far_ap) & (far_an < far_ap + margin)
    n = far_an.masked_fill(~band, float("inf")).argmin(1)
    keep = band.any(1)
    return a[keep], p[keep], n[keep]


def mine_triplets(strategy: str, mat: Tensor, labels: Tensor, distance: Distance, margin: float) -> Triplets:
    """Dispatch to one of ``TRIPLET_MINING`` by name."""
    if strategy == "batch_all":
        return batch_all_triplets(labels)
    if strategy == "batch_hard":
        return batch_hard_triplets(mat, labels, distance)
    if strategy == "semi_hard":
        return semi_hard_triplets(mat, labels, distance, margin)
    raise LossError(f"unknown triplet mining {strategy!r}; choose one of {', '.join(TRIPLET_MINING)}")
