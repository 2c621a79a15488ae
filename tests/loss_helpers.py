"""What the loss tests share: the distances and minings they run over, a seeded batch of embeddings and the
reference loops they compare against."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from simsearch.losses import CosineSimilarity, Distance, EuclideanDistance

DISTANCES = [EuclideanDistance(), EuclideanDistance(squared=True), CosineSimilarity()]
DISTANCE_IDS = ["euclidean", "squared", "cosine"]
MININGS = ["batch_all", "batch_hard", "semi_hard"]


# ----------------------------------------------------------------------------------------------------------------------
# Fixtures and references


def batch(n: int = 10, dim: int = 5, classes: int = 3, seed: int = 0, requires_grad: bool = False):
    """float64 embeddings (unnormalised: losses must not rely on the caller normalising) and labels with repeats."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64)
    y = torch.arange(n) % classes
    y = y[torch.randperm(n, generator=g)]
    return x.requires_grad_(requires_grad), y


def ref_dist(dist: Distance, u: Tensor, v: Tensor) -> Tensor:
    """One value of a distance, written out by hand."""
    if isinstance(dist, CosineSimilarity):
        return (u * v).sum() / (torch.sqrt((u * u).sum()) * torch.sqrt((v * v).sum()))
    sq = ((u - v) ** 2).sum()
    return sq if dist.squared else torch.sqrt(sq)  # type: ignore[attr-defined]


def farther(dist: Distance, v1: float, v2: float) -> bool:
    """True when value v1 means farther apart than value v2."""
    return v1 < v2 if dist.is_similarity else v1 > v2


def ref_triplet_term(dist: Distance, ap: Tensor, an: Tensor, margin: float) -> Tensor:
    raw = an - ap + margin if dist.is_similarity else ap - an + margin
    return torch.clamp(raw, min=0.0)


def enumerate_triplets(y: Tensor) -> set[tuple[int, int, int]]:
    n = len(y)
    return {(a, p, q) for a, p, q in itertools.product(range(n), repeat=3) if a != p and y[a] == y[p] and y[q] != y[a]}


def as_set(triplets: tuple[Tensor, Tensor, Tensor]) -> set[tuple[int, int, int]]:
    return set(zip(*(t.tolist() for t in triplets), strict=True))


def grads(loss: Tensor, x: Tensor) -> Tensor:
    (g,) = torch.autograd.grad(loss, x)
    return g
