"""Siamese pair training on real Fashion-MNIST images, and the pair losses against the batch API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from training_helpers import fashion_subset, tiny_config

from simsearch.data import ArrayDataset, SiamesePairs
from simsearch.losses import create_loss
from simsearch.models import Embedder, create_transform, load_embedder
from simsearch.training import TrainConfig, TrainingError, build_embedder, train


def _loss_on_fixed_pairs(model: Embedder, data: ArrayDataset, loss_name: str) -> float:
    """The pair loss over 200 fixed pairs, all images in one batch with batch statistics (as in training)."""
    pairs = SiamesePairs(data, 200, seed=99).pairs
    transform = create_transform(model)
    images = torch.stack([transform(data[i][0]) for i in range(len(data))])
    model.train()
    with torch.no_grad():
        vectors = model(images)
    loss_fn = create_loss(loss_name, embed_dim=vectors.shape[1])
    return float(loss_fn.pair_loss(vectors[pairs[:, 0]], vectors[pairs[:, 1]], torch.from_numpy(pairs[:, 2])))


def test_siamese_pair_training_lowers_the_pair_loss_on_fashion_mnist(tmp_path: Path) -> None:
    data = fashion_subset(20)
    config = tiny_config(
        backbone="random:resnet10t",
        backbone_kwargs={"in_chans": 1},
        image_size=28,
        loss="pair_regression",
        sampler="pairs",
        pairs_per_epoch=64,
        pair_batch_size=16,
        epochs=4,
        lr=3e-3,
    )
    torch.manual_seed(config.seed)
    before = _loss_on_fixed_pairs(build_embedder(config), data, "pair_regression")
    result = train(config, data, None, tmp_path / "run")
    assert len(result.history) == 4 and all(h["samples_per_second"] > 0 for h in result.history)
    after = _loss_on_fixed_pairs(load_embedder(result.checkpoint), data, "pair_regression")
    assert after < 0.7 * before
    assert json.loads((result.checkpoint / "config.json").read_text())["recipe"]["sampler"] == "pairs"


def test_pairs_with_a_batch_loss_or_a_bad_sampler_are_clear_errors() -> None:
    with pytest.raises(TrainingError, match="pair loss .*contrastive, pair_regression"):
        TrainConfig(sampler="pairs", loss="triplet").check()
    with pytest.raises(TrainingError, match="sampler"):
        TrainConfig(sampler="quads").check()
    with pytest.raises(TrainingError, match="in_chans"):
        TrainConfig(backbone_kwargs={"in_chans": 2}).check()


def test_pair_losses_score_explicit_pairs_as_the_batch_api_scores_the_same_pairs() -> None:
    torch.manual_seed(0)
    first, second = torch.randn(6, 4), torch.randn(6, 4)
    same = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    # The batch API over the 2B embeddings with labels that make exactly pair i positive when same[i] is 1.
    embeddings = torch.cat([first, second])
    labels = torch.cat([torch.arange(6) * 2, torch.arange(6) * 2 + (1 - same.long())])
    index = (torch.arange(6), torch.arange(6) + 6)
    for name in ("contrastive", "pair_regression"):
        for distance in ("euclidean", "cosine"):
            loss_fn = create_loss(name, embed_dim=4, distance=distance)
            expected = loss_fn(embeddings, labels, pairs=index)
            assert torch.allclose(loss_fn.pair_loss(first, second, same), expected, atol=1e-6), (name, distance)
