"""InfoNCE (+ KoLeo): views of one image pulled together, other images pushed apart, through the loss registry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from simsearch.losses import InfoNCELoss, LossError, create_loss


def test_matched_views_score_lower_than_mismatched_ones() -> None:
    torch.manual_seed(0)
    base = F.normalize(torch.randn(8, 16), dim=1)
    labels = torch.arange(8).repeat(2)
    matched = torch.cat([base, base + 0.01 * torch.randn(8, 16)])
    shuffled = torch.cat([base, base[torch.randperm(8)]])
    loss = create_loss("infonce", embed_dim=16, temperature=0.1)
    assert isinstance(loss, InfoNCELoss)
    assert float(loss(matched, labels)) < float(loss(shuffled, labels))


def test_koleo_rewards_spread_and_gradients_flow() -> None:
    torch.manual_seed(0)
    labels = torch.arange(6).repeat(2)
    packed = F.normalize(torch.ones(12, 4) + 0.01 * torch.randn(12, 4), dim=1)
    spread = F.normalize(torch.randn(12, 4), dim=1)
    koleo = InfoNCELoss(temperature=0.1, koleo_weight=1.0)
    plain = InfoNCELoss(temperature=0.1)
    assert float(koleo(packed, labels) - plain(packed, labels)) > float(koleo(spread, labels) - plain(spread, labels))
    x = torch.randn(12, 4, requires_grad=True)
    koleo(x, labels).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_a_batch_without_two_views_of_an_image_gives_zero_and_bad_options_fail() -> None:
    assert float(InfoNCELoss()(torch.randn(4, 8), torch.arange(4))) == 0.0
    with pytest.raises(LossError):
        InfoNCELoss(koleo_weight=-1.0)
    with pytest.raises(LossError):
        InfoNCELoss(temperature=0.0)
