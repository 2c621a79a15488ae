"""Tests of the P x K sampler and the pair views (pairs and triplets from a batch, Siamese pairs)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from simsearch.data import ArrayDataset, DatasetError, PKSampler, SiamesePairs, pairs_from_batch, triplets_from_batch

# --------------------------------------------------------------------------------------------------------------------
# Samplers and pair views
# --------------------------------------------------------------------------------------------------------------------


def _labels_with_sizes(sizes: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(sizes)), sizes)


def test_pk_sampler_yields_exactly_p_classes_with_k_distinct_images_each() -> None:
    labels = _labels_with_sizes([7, 12, 5, 9, 20, 6])
    sampler = PKSampler(labels, p=3, k=4, seed=0)

    batches = list(sampler)

    assert len(batches) == len(sampler) == len(labels) // 12
    for batch in batches:
        assert len(batch) == 12
        counts = Counter(labels[batch].tolist())
        assert len(counts) == 3 and set(counts.values()) == {4}
        assert len(set(batch)) == 12  # every class here has >= k images: no repeats inside a batch


def test_pk_sampler_is_deterministic_for_a_seed_and_epoch_and_reshuffles_per_epoch() -> None:
    labels = _labels_with_sizes([10] * 8)
    a = PKSampler(labels, p=4, k=2, seed=3)
    b = PKSampler(labels, p=4, k=2, seed=3)
    assert list(a) == list(b)
    assert list(a) == list(a)  # same epoch, same batches

    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(PKSampler(labels, p=4, k=2, seed=4)) != first


def test_pk_sampler_fills_small_classes_with_repeats_and_takes_a_dataset_or_tensor() -> None:
    labels = _labels_with_sizes([2, 2, 2])
    dataset = ArrayDataset(np.zeros((6, 2, 2), np.uint8), labels)
    for source in (dataset, torch.as_tensor(labels)):
        sampler = PKSampler(source, p=2, k=3, num_batches=20, seed=1)
        for batch in sampler:
            counts = Counter(labels[batch].tolist())
            assert len(counts) == 2 and set(counts.values()) == {3}
            for cls in counts:  # both images of the class appear, one of them twice
                assert {i for i in batch if labels[i] == cls} == set(np.flatnonzero(labels == cls).tolist())


def test_pk_sampler_serves_every_image_before_repeating_one_within_a_class() -> None:
    labels = _labels_with_sizes([8, 8])
    batches = list(PKSampler(labels, p=2, k=4, num_batches=2, seed=5))  # 2 batches x 4 per class = each image once
    assert sorted(i for b in batches for i in b) == list(range(16))


def test_pk_sampler_refuses_fewer_classes_than_p() -> None:
    with pytest.raises(DatasetError, match="at least p=4"):
        PKSampler([0, 0, 1, 1, 2, 2], p=4, k=2)


def test_pairs_and_triplets_from_a_batch_equal_python_loops() -> None:
    labels = np.array([0, 1, 0, 2, 1, 0])
    i, j, y = pairs_from_batch(labels)
    expected = [(a, b, int(labels[a] == labels[b])) for a in range(6) for b in range(a + 1, 6)]
    assert list(zip(i.tolist(), j.tolist(), y.tolist(), strict=True)) == expected

    a, p, n = triplets_from_batch(torch.as_tensor(labels))
    expected_t = [
        (x, q, r)
        for x in range(6)
        for q in range(6)
        for r in range(6)
        if q != x and labels[q] == labels[x] and labels[r] != labels[x]
    ]
    assert list(zip(a.tolist(), p.tolist(), n.tolist(), strict=True)) == expected_t


def test_siamese_pairs_have_the_requested_share_of_same_class_pairs_and_correct_targets() -> None:
    labels = _labels_with_sizes([5, 1, 4, 6])  # class 1 has a single image: never in a positive pair
    images = np.arange(16, dtype=np.uint8).reshape(16, 1, 1).repeat(2, 1).repeat(2, 2)
    dataset = ArrayDataset(images, labels, transform=lambda im: int(np.asarray(im)[0, 0]))
    pairs = SiamesePairs(dataset, pairs_per_epoch=200, positive_fraction=0.3, seed=0)

    assert len(pairs) == 200
    assert int(pairs.pairs[:, 2].sum()) == 60
    for idx in range(200):
        (x1, x2), y = pairs[idx]
        assert x1 != x2  # never an image with itself
        assert y == float(labels[x1] == labels[x2])
    first = pairs.pairs.copy()
    pairs.set_epoch(1)
    assert not np.array_equal(first, pairs.pairs)
    assert np.array_equal(SiamesePairs(dataset, 200, 0.3, seed=0).pairs, first)
