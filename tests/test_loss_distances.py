"""Distances and triplet miners against an explicit Python loop on a handful of seeded embeddings."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from loss_helpers import DISTANCE_IDS, DISTANCES, as_set, batch, enumerate_triplets, farther, ref_dist

from simsearch.losses import CosineSimilarity, Distance, EuclideanDistance, create_distance
from simsearch.losses.miners import batch_all_triplets, batch_hard_triplets, pair_masks, semi_hard_triplets

# ----------------------------------------------------------------------------------------------------------------------
# Distances


@pytest.mark.parametrize("dist", DISTANCES, ids=DISTANCE_IDS)
def test_pairwise_distance_equals_the_value_of_every_pair_by_hand(dist: Distance) -> None:
    x, _ = batch(7)
    z, _ = batch(4, seed=1)
    mat = dist.pairwise(x, z)
    assert mat.shape == (7, 4)
    for i in range(7):
        for j in range(4):
            torch.testing.assert_close(mat[i, j], ref_dist(dist, x[i], z[j]))


def test_euclidean_distance_gradient_is_finite_between_identical_embeddings() -> None:
    x = torch.randn(4, 3, dtype=torch.float32).requires_grad_()
    d = EuclideanDistance().pairwise(x, x)
    d.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("delta", [3e-5, 1e-5, 3e-6])
def test_euclidean_distance_of_near_duplicates_keeps_its_value_and_gradient_in_float32(delta: float) -> None:
    """|a|^2 + |b|^2 - 2ab cancels to 0 for unit vectors this close; a near-duplicate negative must still be pushed."""
    base = F.normalize(torch.randn(1, 128, generator=torch.Generator().manual_seed(0)), dim=1)
    near = F.normalize(base + delta * torch.randn(1, 128, generator=torch.Generator().manual_seed(1)), dim=1)
    anchor, negative = base.clone(), near.clone().requires_grad_()
    d = EuclideanDistance().pairwise(anchor, negative)[0, 0]
    d.backward()
    exact = (anchor.double() - negative.detach().double()).norm()
    assert float(d.detach()) == pytest.approx(float(exact), rel=1e-4)
    assert negative.grad is not None and float(negative.grad.norm()) == pytest.approx(1.0, rel=1e-3)


def test_distances_know_whether_larger_means_closer() -> None:
    assert CosineSimilarity().is_similarity and not EuclideanDistance().is_similarity
    assert CosineSimilarity().farness(0.3) == -0.3 and EuclideanDistance().farness(0.3) == 0.3
    assert isinstance(create_distance("cosine"), CosineSimilarity)
    with pytest.raises(ValueError, match="euclidean"):
        create_distance("manhattan")


# ----------------------------------------------------------------------------------------------------------------------
# Miners


def test_batch_all_miner_returns_exactly_the_valid_triplets() -> None:
    _, y = batch(9)
    assert as_set(batch_all_triplets(y)) == enumerate_triplets(y)


@pytest.mark.parametrize("dist", DISTANCES, ids=DISTANCE_IDS)
def test_batch_hard_miner_picks_the_farthest_positive_and_closest_negative_per_anchor(dist: Distance) -> None:
    x, y = batch(10)
    mat = dist.pairwise(x, x)
    expected = set()
    for a in range(10):
        candidates = [(p, q) for (a2, p, q) in enumerate_triplets(y) if a2 == a]
        if not candidates:
            continue
        best_p = max({p for p, _ in candidates}, key=lambda p: float(dist.farness(mat[a, p])))
        best_n = min({q for _, q in candidates}, key=lambda q: float(dist.farness(mat[a, q])))
        expected.add((a, best_p, best_n))
    assert as_set(batch_hard_triplets(mat, y, dist)) == expected


@pytest.mark.parametrize("dist", DISTANCES, ids=DISTANCE_IDS)
def test_semi_hard_miner_picks_the_closest_negative_beyond_the_positive_within_the_margin(dist: Distance) -> None:
    x, y = batch(12)
    mat = dist.pairwise(x, x).tolist()
    margin = 0.5
    expected = set()
    for a, p in itertools.permutations(range(12), 2):
        if y[a] != y[p]:
            continue
        band = [
            q
            for q in range(12)
            if y[q] != y[a]
            and farther(dist, mat[a][q], mat[a][p])
            and abs(mat[a][q] - mat[a][p]) < margin  # still violates the margin
        ]
        if band:
            expected.add((a, p, min(band, key=lambda q: abs(mat[a][q] - mat[a][p]))))
    mined = as_set(semi_hard_triplets(dist.pairwise(x, x), y, dist, margin))
    assert mined == expected
    assert mined, "the seeded batch should contain semi-hard triplets, or this test proves nothing"


def test_miners_return_nothing_when_the_batch_has_no_positive_or_no_negative() -> None:
    x, _ = batch(5)
    dist = EuclideanDistance()
    mat = dist.pairwise(x, x)
    for y in (torch.arange(5), torch.zeros(5, dtype=torch.long)):
        assert batch_all_triplets(y)[0].numel() == 0
        assert batch_hard_triplets(mat, y, dist)[0].numel() == 0
        assert semi_hard_triplets(mat, y, dist, 0.2)[0].numel() == 0
    pos, neg = pair_masks(torch.tensor([7, -3, 7]))
    assert pos.tolist() == [[False, False, True], [False, False, False], [True, False, False]]
    assert neg.tolist() == [[False, True, False], [True, False, True], [False, True, False]]
