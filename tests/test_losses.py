"""How every loss behaves at the edges (no positives, satisfied pairs, bad labels and batches), that a few optimisation
steps lower each one, and the registry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from loss_helpers import MININGS, batch
from torch import nn

from simsearch.errors import SimSearchError
from simsearch.losses import (
    ArcFaceLoss,
    ContrastiveLoss,
    CosineSimilarity,
    LossError,
    MultiSimilarityLoss,
    PairRegressionLoss,
    PrototypicalLoss,
    TripletMarginLoss,
    create_loss,
    list_losses,
)

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
            "infonce",
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
