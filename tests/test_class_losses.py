"""Losses with a class head or proxies (softmax, ArcFace, CosFace, proxy anchor, center, prototypical) against an
explicit Python loop on a handful of seeded embeddings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from loss_helpers import DISTANCE_IDS, DISTANCES, batch, grads, ref_dist
from torch import Tensor

from simsearch.losses import (
    ArcFaceLoss,
    CenterLoss,
    CosFaceLoss,
    CosineSimilarity,
    Distance,
    EuclideanDistance,
    PrototypicalLoss,
    ProxyAnchorLoss,
    SoftmaxLoss,
    create_loss,
)

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
