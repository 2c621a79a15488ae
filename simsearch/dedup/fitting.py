"""Fitting a calibration from labelled images: a class-per-folder tree (each folder one item), or real photos turned
into near-duplicate sets by seeded variants (`simsearch.dedup.variants`), embedded with the model being calibrated."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from simsearch.dedup.calibration import DEFAULT_PRECISIONS, Calibration, fit
from simsearch.dedup.stored import NEAR_DUPLICATE
from simsearch.dedup.variants import make_variants
from simsearch.errors import CalibrationError

if TYPE_CHECKING:
    from simsearch.models import Embedder

__all__ = ["all_pairs", "calibrate_embedder", "calibrate_vectors", "variant_sets"]

log = logging.getLogger(__name__)

#: Pairs with a lower cosine are only counted: no threshold worth calibrating lies that low.
PAIR_FLOOR = 0.3
_BLOCK = 2048


def all_pairs(vectors: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Scores of every pair (i < j) at or above PAIR_FLOOR, whether each is the same item, and how many
    different-item pairs there are in all (those below the floor included), in blocks of rows (bounded memory)."""
    labels = np.asarray(labels)
    n = len(vectors)
    scores, same = [], []
    negatives = 0
    for start in range(0, n, _BLOCK):
        block = vectors[start : start + _BLOCK] @ vectors.T
        rows, cols = np.nonzero(np.triu(np.ones_like(block, dtype=bool), k=start + 1))
        s = block[rows, cols]
        y = labels[start + rows] == labels[cols]
        negatives += int((~y).sum())
        keep = (s >= PAIR_FLOOR) | y
        scores.append(s[keep])
        same.append(y[keep])
    return np.concatenate(scores), np.concatenate(same), negatives


def variant_sets(photos: Sequence[Path], per_photo: int, seed: int) -> tuple[list[bytes], np.ndarray, list[str]]:
    """Each photo's bytes and `per_photo` seeded variants of it: (images, item label per image, description)."""
    rng = np.random.default_rng(seed)
    images: list[bytes] = []
    labels: list[int] = []
    described: list[str] = []
    for item, photo in enumerate(photos):
        data = Path(photo).read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            variants = make_variants(im, per_photo, rng)
        for blob, what in [(data, "original"), *variants]:
            images.append(blob)
            labels.append(item)
            described.append(what)
    return images, np.asarray(labels), described


def _embed(embedder: Embedder, images: Sequence[bytes | str | os.PathLike[str]], batch: int = 32) -> np.ndarray:
    from simsearch.embedding import embed_images

    parts = [embed_images(embedder, list(images[i : i + batch])) for i in range(0, len(images), batch)]
    return np.concatenate(parts) if parts else np.empty((0, embedder.embed_dim), np.float32)


def calibrate_vectors(
    vectors: np.ndarray,
    labels: np.ndarray,
    *,
    model_id: str,
    weights_sha256: str,
    tta: str | None,
    kind: str = NEAR_DUPLICATE,
    source: str,
    precisions: tuple[float, ...] = DEFAULT_PRECISIONS,
) -> Calibration:
    """Fit thresholds on every pair of labelled vectors (one label per item)."""
    if len(vectors) != len(labels):
        raise CalibrationError("one label per image is needed")
    scores, same, negatives = all_pairs(vectors, labels)
    return fit(
        scores,
        same,
        model_id=model_id,
        weights_sha256=weights_sha256,
        tta=tta,
        kind=kind,
        source=source,
        precisions=precisions,
        negatives=negatives,
    )


def calibrate_embedder(
    embedder: Embedder,
    images: Sequence[bytes | str | os.PathLike[str]],
    labels: np.ndarray,
    *,
    kind: str = NEAR_DUPLICATE,
    source: str,
    precisions: tuple[float, ...] = DEFAULT_PRECISIONS,
) -> Calibration:
    """Embed labelled images with `embedder` and fit its thresholds on every pair of them."""
    if len(images) != len(labels):
        raise CalibrationError("one label per image is needed")
    vectors = _embed(embedder, images)
    log.info("calibration: %d images embedded", len(vectors))
    return calibrate_vectors(
        vectors,
        labels,
        model_id=embedder.model_id,
        weights_sha256=embedder.weights_sha256,
        tta=embedder.tta,
        kind=kind,
        source=source,
        precisions=precisions,
    )
