"""Pair and triplet losses (contrastive, pair regression, triplet, multi-similarity) against an explicit Python loop
on a handful of seeded embeddings."""

from __future__ import annotations

import itertools

import pytest
import torch
from loss_helpers import DISTANCE_IDS, DISTANCES, MININGS, batch, enumerate_triplets, grads, ref_dist, ref_triplet_term
from torch import Tensor

from simsearch.losses import (
    ContrastiveLoss,
    CosineSimilarity,
    Distance,
    EuclideanDistance,
    MultiSimilarityLoss,
    PairRegressionLoss,
    TripletMarginLoss,
)

# ----------------------------------------------------------------------------------------------------------------------
# Pair losses


def ref_contrastive(x: Tensor, y: Tensor, dist: Distance, pos_margin: float, neg_margin: float) -> Tensor:
    pos_terms, neg_terms = [], []
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            d = ref_dist(dist, x[i], x[j])
            if y[i] == y[j]:
                term = pos_margin - d if dist.is_similarity else d - pos_margin
                pos_terms.append(torch.clamp(term, min=0.0))
            else:
                term = d - neg_margin if dist.is_similarity else neg_margin - d
                neg_terms.append(torch.clamp(term, min=0.0))

    def mean_nonzero(terms: list[Tensor]) -> Tensor:
        active = [t for t in terms if t > 0]
        return sum(active) / len(active) if active else torch.tensor(0.0, dtype=x.dtype)  # type: ignore[return-value]

    return mean_nonzero(pos_terms) + mean_nonzero(neg_terms)


@pytest.mark.parametrize("dist", DISTANCES, ids=DISTANCE_IDS)
def test_contrastive_loss_equals_a_loop_over_all_pairs(dist: Distance) -> None:
    x, y = batch(10, requires_grad=True)
    pos_margin, neg_margin = (0.6, 0.1) if dist.is_similarity else (0.5, 2.5)
    loss = ContrastiveLoss(pos_margin, neg_margin, distance=dist)(x, y)
    ref = ref_contrastive(x, y, dist, pos_margin, neg_margin)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(grads(loss, x), grads(ref, x))


def test_contrastive_loss_defaults_flip_with_a_similarity() -> None:
    assert (ContrastiveLoss().pos_margin, ContrastiveLoss().neg_margin) == (0.0, 1.0)
    cos = ContrastiveLoss(distance="cosine")
    assert (cos.pos_margin, cos.neg_margin) == (1.0, 0.0)
    x, y = batch(8)
    torch.testing.assert_close(cos(x, y), ref_contrastive(x, y, CosineSimilarity(), 1.0, 0.0))
    with pytest.raises(ValueError, match="pos_margin"):
        ContrastiveLoss(pos_margin=2.0, neg_margin=1.0)


def test_contrastive_loss_on_given_pairs_uses_only_those_pairs() -> None:
    x, y = batch(8)
    given = [(0, 3), (2, 4), (5, 7), (1, 6), (3, 0)]
    pos_terms, neg_terms = [], []
    for i, j in given:
        d = float(torch.dist(x[i], x[j]))
        if y[i] == y[j]:
            pos_terms.append(max(0.0, d - 0.5))
        else:
            neg_terms.append(max(0.0, 2.5 - d))
    ref = sum(pos_terms) / max(1, sum(t > 0 for t in pos_terms)) + sum(neg_terms) / max(
        1, sum(t > 0 for t in neg_terms)
    )
    first, second = (torch.tensor(t) for t in zip(*given, strict=True))
    loss = ContrastiveLoss(0.5, 2.5)(x, y, pairs=(first, second))
    torch.testing.assert_close(loss.item(), ref)


@pytest.mark.parametrize("dist", DISTANCES, ids=DISTANCE_IDS)
def test_pair_regression_loss_equals_the_mean_squared_error_of_every_pair(dist: Distance) -> None:
    x, y = batch(9, requires_grad=True)
    terms = []
    for i in range(9):
        for j in range(i + 1, 9):
            d = ref_dist(dist, x[i], x[j])
            target = float(y[i] != y[j])
            if dist.is_similarity:
                target = 1.0 - target
            terms.append((d - target) ** 2)
    ref = sum(terms) / len(terms)
    loss = PairRegressionLoss(distance=dist)(x, y)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(grads(loss, x), grads(ref, x))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------------------------
# Triplet loss


def ref_triplet(x: Tensor, y: Tensor, dist: Distance, margin: float, mining: str) -> Tensor:
    n = len(x)
    d = [[ref_dist(dist, x[i], x[j]) for j in range(n)] for i in range(n)]
    far = [[float(dist.farness(d[i][j].detach())) for j in range(n)] for i in range(n)]
    terms = []
    if mining == "batch_all":
        for a, p, q in sorted(enumerate_triplets(y)):
            terms.append(ref_triplet_term(dist, d[a][p], d[a][q], margin))
        active = [t for t in terms if t > 0]
        return sum(active) / max(1, len(active))  # type: ignore[return-value]
    if mining == "batch_hard":
        for a in range(n):
            positives = [p for p in range(n) if p != a and y[p] == y[a]]
            negatives = [q for q in range(n) if y[q] != y[a]]
            if positives and negatives:
                p = max(positives, key=lambda p: far[a][p])
                q = min(negatives, key=lambda q: far[a][q])
                terms.append(ref_triplet_term(dist, d[a][p], d[a][q], margin))
    else:
        for a, p in itertools.permutations(range(n), 2):
            if y[a] != y[p]:
                continue
            band = [q for q in range(n) if y[q] != y[a] and far[a][p] < far[a][q] < far[a][p] + margin]
            if band:
                q = min(band, key=lambda q: far[a][q])
                terms.append(ref_triplet_term(dist, d[a][p], d[a][q], margin))
    return sum(terms) / len(terms)  # type: ignore[return-value]


@pytest.mark.parametrize("mining", MININGS)
@pytest.mark.parametrize("dist", DISTANCES, ids=DISTANCE_IDS)
def test_triplet_loss_equals_a_loop_over_the_mined_triplets(dist: Distance, mining: str) -> None:
    x, y = batch(10, requires_grad=True)
    margin = 0.3
    loss = TripletMarginLoss(margin, distance=dist, mining=mining)(x, y)
    ref = ref_triplet(x, y, dist, margin, mining)
    assert ref.item() > 0, "a zero reference would make this test vacuous"
    torch.testing.assert_close(loss, ref)
    if mining == "batch_hard":
        torch.testing.assert_close(grads(loss, x), grads(ref, x))


def test_triplet_loss_on_given_triplets_averages_over_them() -> None:
    x, y = batch(8)
    triplets = sorted(enumerate_triplets(y))[:5]
    a, p, q = (torch.tensor(t) for t in zip(*triplets, strict=True))
    loss = TripletMarginLoss(1.0, mining="batch_hard")(x, y, triplets=(a, p, q))
    ref = sum(float(torch.clamp(torch.dist(x[i], x[j]) - torch.dist(x[i], x[k]) + 1.0, min=0)) for i, j, k in triplets)
    torch.testing.assert_close(loss.item(), ref / 5)


# ----------------------------------------------------------------------------------------------------------------------
# Multi-similarity


def ref_multi_similarity(x: Tensor, y: Tensor, dist: Distance, alpha: float, beta: float, base: float, eps: float):
    n = len(x)
    s = [[-dist.farness(ref_dist(dist, x[i], x[j])) for j in range(n)] for i in range(n)]
    per_anchor = []
    for i in range(n):
        positives = [j for j in range(n) if j != i and y[j] == y[i]]
        negatives = [k for k in range(n) if y[k] != y[i]]
        if not positives or not negatives:
            continue
        max_neg = max(s[i][k].item() for k in negatives)
        min_pos = min(s[i][j].item() for j in positives)
        kept_pos = [j for j in positives if s[i][j].item() - eps < max_neg]
        kept_neg = [k for k in negatives if s[i][k].item() + eps > min_pos]
        pos = torch.log(1 + sum((torch.exp(-alpha * (s[i][j] - base)) for j in kept_pos), x.new_zeros(())))
        neg = torch.log(1 + sum((torch.exp(beta * (s[i][k] - base)) for k in kept_neg), x.new_zeros(())))
        per_anchor.append(pos / alpha + neg / beta)
    return sum(per_anchor) / len(per_anchor)


@pytest.mark.parametrize("dist", [CosineSimilarity(), EuclideanDistance()], ids=["cosine", "euclidean"])
def test_multi_similarity_loss_equals_a_loop_with_its_pair_mining(dist: Distance) -> None:
    x, y = batch(10, requires_grad=True)
    options = dict(alpha=2.0, beta=10.0, base=0.5 if dist.is_similarity else -2.0, epsilon=0.3)
    loss = MultiSimilarityLoss(**options, distance=dist)(x, y)
    ref = ref_multi_similarity(x, y, dist, options["alpha"], options["beta"], options["base"], options["epsilon"])
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(grads(loss, x), grads(ref, x))


def test_multi_similarity_mining_drops_easy_pairs() -> None:
    # Anchor 0: positive 1 is far closer than every negative, so with epsilon 0 it is not kept.
    x = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [-1.0, 0.1]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    loss = MultiSimilarityLoss(epsilon=0.0)(x, y)
    ref = ref_multi_similarity(x, y, CosineSimilarity(), 2.0, 50.0, 0.5, 0.0)
    torch.testing.assert_close(loss, ref)
    unmined = MultiSimilarityLoss(epsilon=10.0)(x, y)
    assert unmined.item() > loss.item() + 1e-3
