"""Every loss, distance and miner against an explicit Python loop on a handful of seeded embeddings."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simsearch.errors import SimSearchError
from simsearch.losses import (
    ArcFaceLoss,
    CenterLoss,
    ContrastiveLoss,
    CosFaceLoss,
    CosineSimilarity,
    Distance,
    EuclideanDistance,
    LossError,
    MultiSimilarityLoss,
    PairRegressionLoss,
    PrototypicalLoss,
    ProxyAnchorLoss,
    SoftmaxLoss,
    TripletMarginLoss,
    create_distance,
    create_loss,
    list_losses,
)
from simsearch.losses.miners import (
    batch_all_triplets,
    batch_hard_triplets,
    pair_masks,
    semi_hard_triplets,
)

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
# Losses with a class head or proxies


def test_softmax_loss_equals_cross_entropy_written_out() -> None:
    x, y = batch(8, requires_grad=True)
    loss_fn = SoftmaxLoss(3, 5, temperature=0.5).double()
    w, b = loss_fn.head.weight, loss_fn.head.bias
    terms = []
    for i in range(8):
        logits = [((x[i] * w[c]).sum() + b[c]) / 0.5 for c in range(3)]
        terms.append(-logits[int(y[i])] + torch.log(sum(torch.exp(z) for z in logits)))
    ref = sum(terms) / 8
    loss = loss_fn(x, y)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(grads(loss, x), grads(ref, x))  # type: ignore[arg-type]


def ref_margin_softmax(x: Tensor, y: Tensor, weight: Tensor, kind: str, margin: float, scale: float) -> Tensor:
    total = torch.tensor(0.0, dtype=x.dtype)
    for i in range(len(x)):
        logits = []
        for c in range(len(weight)):
            cos = ref_dist(CosineSimilarity(), x[i], weight[c])
            if c == int(y[i]):
                if kind == "cosface":
                    cos = cos - margin
                else:
                    theta = torch.acos(cos.clamp(-1, 1))
                    past = theta.item() > math.pi - margin
                    cos = cos - (1 - math.cos(margin)) if past else torch.cos(theta + margin)
            logits.append(scale * cos)
        total = total - logits[int(y[i])] + torch.log(sum(torch.exp(z) for z in logits))  # type: ignore[arg-type]
    return total / len(x)


@pytest.mark.parametrize("kind", ["arcface", "cosface"])
def test_margin_softmax_losses_equal_a_loop_over_classes(kind: str) -> None:
    x, y = batch(8, requires_grad=True)
    cls = ArcFaceLoss if kind == "arcface" else CosFaceLoss
    loss_fn = cls(3, 5, margin=0.4, scale=8.0).double()
    with torch.no_grad():  # one embedding opposite its class, past ArcFace's pi - margin switch
        x[0] = -2.0 * loss_fn.weight[y[0]]
    loss = loss_fn(x, y)
    ref = ref_margin_softmax(x, y, loss_fn.weight, kind, 0.4, 8.0)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(grads(loss, x), grads(ref, x))


def test_arcface_target_logit_keeps_falling_past_pi_minus_margin() -> None:
    loss_fn = ArcFaceLoss(2, 2, margin=0.5)
    angles = torch.linspace(0.0, math.pi, 200, dtype=torch.float64)
    target = loss_fn._target_cosine(torch.cos(angles))
    assert (target[1:] < target[:-1]).all()
    assert (target[:-1] - target[1:]).max() < 0.05, "no jump where the rule switches"
    assert torch.isfinite(target).all()


def test_proxy_anchor_loss_equals_a_loop_over_proxies() -> None:
    x, y = batch(9, classes=3, requires_grad=True)
    y[y == 2] = 1  # class 3 of 4 and class 2 absent: P+ smaller than P
    loss_fn = ProxyAnchorLoss(4, 5, margin=0.1, alpha=8.0).double()
    pos_sum, pos_count, neg_sum = 0.0, 0, 0.0
    for c in range(4):
        s = [ref_dist(CosineSimilarity(), x[i], loss_fn.proxies[c]) for i in range(9)]
        members = [i for i in range(9) if y[i] == c]
        others = [i for i in range(9) if y[i] != c]
        if members:
            pos_sum = pos_sum + torch.log(1 + sum(torch.exp(-8.0 * (s[i] - 0.1)) for i in members))
            pos_count += 1
        neg_sum = neg_sum + torch.log(1 + sum(torch.exp(8.0 * (s[i] + 0.1)) for i in others))
    ref = pos_sum / pos_count + neg_sum / 4
    loss = loss_fn(x, y)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(grads(loss, x), grads(ref, x))  # type: ignore[arg-type]


def test_center_loss_equals_cross_entropy_plus_weighted_half_squared_distance_to_centres() -> None:
    x, y = batch(8)
    loss_fn = CenterLoss(3, 5, weight=0.3, alpha=0.5).double().eval()
    ce = SoftmaxLoss(3, 5).double()
    ce.head.load_state_dict(loss_fn.head.state_dict())
    lc = sum(0.5 * float(((x[i] - loss_fn.centers[int(y[i])]) ** 2).sum()) for i in range(8)) / 8
    torch.testing.assert_close(loss_fn(x, y).item(), ce(x, y).item() + 0.3 * lc)


def test_center_loss_with_a_temperature_equals_a_loop_over_samples_and_classes() -> None:
    x, y = batch(8, requires_grad=True)
    loss_fn = CenterLoss(3, 5, weight=0.2, alpha=0.5, temperature=0.1).double().eval()
    w, b = loss_fn.head.weight, loss_fn.head.bias
    total = 0.0
    for i in range(8):
        logits = [(sum(w[j, d] * x[i, d] for d in range(5)) + b[j]) / 0.1 for j in range(3)]
        ce = -logits[int(y[i])] + torch.log(sum(torch.exp(z) for z in logits))
        lc = 0.5 * sum((x[i, d] - loss_fn.centers[int(y[i]), d]) ** 2 for d in range(5))
        total = total + ce + 0.2 * lc
    ref = total / 8
    loss = loss_fn(x, y)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(grads(loss, x), grads(ref, x))  # type: ignore[arg-type]


def test_center_loss_moves_centres_by_the_papers_rule_over_two_steps() -> None:
    loss_fn = CenterLoss(4, 5, weight=0.1, alpha=0.5).double().train()
    centers = loss_fn.centers.clone().numpy()
    for step in range(2):
        x, y = batch(7, classes=3, seed=10 + step)  # class 3 never appears: its centre must stay put
        before = loss_fn.centers.clone()
        loss = loss_fn(x.requires_grad_(), y)
        # The loss of this step used the centres from before the update.
        lc = 0.5 * ((x.detach() - before[y]) ** 2).sum(1).mean()
        torch.testing.assert_close(loss, F.cross_entropy(loss_fn.head(x), y) + 0.1 * lc)
        loss.backward()
        xs, ys = x.detach().numpy(), y.numpy()
        for j in range(4):
            members = [i for i in range(7) if ys[i] == j]
            delta = sum((centers[j] - xs[i] for i in members), np.zeros(5)) / (1 + len(members))
            centers[j] = centers[j] - 0.5 * delta
        np.testing.assert_allclose(loss_fn.centers.numpy(), centers, rtol=1e-12)
    assert "centers" in loss_fn.state_dict()
    assert all(p is not loss_fn.centers for p in loss_fn.parameters())


def test_center_loss_leaves_centres_alone_in_eval_mode() -> None:
    loss_fn = CenterLoss(3, 5).double().eval()
    before = loss_fn.centers.clone()
    loss_fn(*batch(6))
    assert torch.equal(loss_fn.centers, before)


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


# ----------------------------------------------------------------------------------------------------------------------
# Prototypical


def ref_prototypical(x: Tensor, y: Tensor, dist: Distance, scale: float) -> Tensor:
    n = len(x)
    labels = sorted(set(y.tolist()))
    terms = []
    for i in range(n):
        mates = [j for j in range(n) if j != i and y[j] == y[i]]
        if not mates:
            continue
        logits = []
        for c in labels:
            members = mates if c == y[i] else [j for j in range(n) if y[j] == c]
            prototype = sum(x[j] for j in members) / len(members)
            logits.append(-scale * dist.farness(ref_dist(dist, x[i], prototype)))
        stacked = torch.stack(logits)
        terms.append(torch.logsumexp(stacked, 0) - stacked[labels.index(int(y[i]))])
    return sum(terms) / len(terms)


@pytest.mark.parametrize("dist", DISTANCES, ids=DISTANCE_IDS)
def test_prototypical_loss_equals_a_loop_over_queries_and_leave_one_out_prototypes(dist: Distance) -> None:
    x, y = batch(11, classes=4, requires_grad=True)
    y = torch.where(y == 3, torch.tensor(7), y)  # arbitrary label values
    y[0] = 42  # a class with no classmate: never a query, still a prototype for the others
    loss = PrototypicalLoss(scale=3.0, distance=dist)(x, y)
    ref = ref_prototypical(x, y, dist, 3.0)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(grads(loss, x), grads(ref, x))


def test_prototypical_loss_defaults_to_the_papers_squared_euclidean() -> None:
    loss_fn = create_loss("prototypical", embed_dim=8)
    assert isinstance(loss_fn, PrototypicalLoss) and loss_fn.scale == 10.0
    assert isinstance(loss_fn.distance, EuclideanDistance) and loss_fn.distance.squared
    x, y = batch(6, classes=1, requires_grad=True)  # one class: no wrong answer to push away from
    assert loss_fn(x, y).item() == 0.0


# ----------------------------------------------------------------------------------------------------------------------
# Edge cases


def all_losses(num_classes: int = 3, embed_dim: int = 5) -> dict[str, nn.Module]:
    losses: dict[str, nn.Module] = {
        name: create_loss(name, num_classes=num_classes, embed_dim=embed_dim) for name in list_losses()
    }
    for mining in MININGS:
        losses[f"triplet_{mining}"] = TripletMarginLoss(mining=mining)
    return losses


@pytest.mark.parametrize(
    "name", ["contrastive", "pair_regression", "multi_similarity", "prototypical"] + [f"triplet_{m}" for m in MININGS]
)
def test_a_batch_without_positive_pairs_gives_a_zero_that_still_backpropagates(name: str) -> None:
    loss_fn = all_losses()[name]
    x = torch.randn(4, 5, requires_grad=True)
    for y in (torch.tensor([5, -1, 9, 100]), torch.tensor([3])):  # all distinct labels; a single sample
        xs = x[: len(y)]
        loss = loss_fn(xs, y)
        loss.backward()
        assert torch.isfinite(loss) and x.grad is not None and torch.isfinite(x.grad).all()
        if name not in ("contrastive", "pair_regression") or len(y) == 1:  # negatives alone still teach pair losses
            assert loss.item() == 0.0


def test_contrastive_loss_is_zero_not_nan_when_every_pair_is_satisfied() -> None:
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [5.0, 0.0]], requires_grad=True)
    loss = ContrastiveLoss()(x, torch.tensor([1, 1, 2]))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(x.grad).all()  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["softmax", "center", "arcface", "cosface", "proxy_anchor"])
def test_losses_with_a_class_head_reject_labels_outside_zero_to_num_classes(name: str) -> None:
    loss_fn = create_loss(name, num_classes=3, embed_dim=5)
    x = torch.randn(3, 5)
    for bad in (torch.tensor([0, 1, 3]), torch.tensor([-1, 0, 1])):
        with pytest.raises(ValueError, match=r"0\.\.2"):
            loss_fn(x, bad)


@pytest.mark.parametrize("name", list_losses())
def test_every_loss_rejects_malformed_batches_with_a_domain_error(name: str) -> None:
    loss_fn = create_loss(name, num_classes=3, embed_dim=5)
    with pytest.raises(SimSearchError, match="labels"):
        loss_fn(torch.randn(3, 5), torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(SimSearchError, match="3 embeddings but 2 labels"):
        loss_fn(torch.randn(3, 5), torch.tensor([0, 1]))
    with pytest.raises(SimSearchError, match="embeddings"):
        loss_fn(torch.randn(3), torch.tensor([0, 1, 2]))


def test_pair_losses_accept_any_integer_labels() -> None:
    x, y = batch(8)
    relabelled = torch.tensor([-7, 1000, 3])[y]
    for loss_fn in (
        ContrastiveLoss(),
        PairRegressionLoss(),
        TripletMarginLoss(),
        MultiSimilarityLoss(),
        PrototypicalLoss(),
    ):
        torch.testing.assert_close(loss_fn(x, relabelled.int()), loss_fn(x, y))


# ----------------------------------------------------------------------------------------------------------------------
# Training and registry


@pytest.mark.parametrize("name", sorted(all_losses()))
def test_a_few_optimisation_steps_lower_the_loss_on_a_toy_two_class_problem(name: str) -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    y = torch.arange(12) % 2
    inputs = torch.randn(12, 4, generator=g) + 1.5 * torch.stack([y, 1 - y, y, -y], 1).float()
    model = nn.Linear(4, 8)
    loss_fn = all_losses(num_classes=2, embed_dim=8)[name]
    opt = torch.optim.Adam([*model.parameters(), *loss_fn.parameters()], lr=0.05)
    history = []
    for _ in range(15):
        loss = loss_fn(F.normalize(model(inputs), dim=1), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert all(math.isfinite(v) for v in history)
    assert history[-1] < history[0]


def test_registry_lists_builds_and_explains_losses() -> None:
    assert list_losses() == sorted(
        [
            "softmax",
            "contrastive",
            "pair_regression",
            "triplet",
            "center",
            "multi_similarity",
            "arcface",
            "cosface",
            "proxy_anchor",
            "prototypical",
        ]
    )
    assert list_losses("*face") == ["arcface", "cosface"]
    triplet = create_loss("triplet", num_classes=None, embed_dim=8, margin=None, mining="semi_hard", distance="cosine")
    assert isinstance(triplet, TripletMarginLoss)
    assert triplet.margin == 0.2 and triplet.mining == "semi_hard" and isinstance(triplet.distance, CosineSimilarity)
    arc = create_loss("arcface", num_classes=7, embed_dim=8, scale=None)
    assert isinstance(arc, ArcFaceLoss) and arc.weight.shape == (7, 8) and arc.scale == 64.0
    with pytest.raises(ValueError, match="arcface, center, contrastive"):
        create_loss("lifted_structure", num_classes=3, embed_dim=8)
    with pytest.raises(ValueError, match="num_classes"):
        create_loss("center", num_classes=None, embed_dim=8)
    with pytest.raises(LossError, match="'margni'"):
        create_loss("triplet", num_classes=None, embed_dim=8, margni=0.1)
    with pytest.raises(ValueError, match="mining"):
        create_loss("triplet", num_classes=None, embed_dim=8, mining="hardest")
