"""Scores without a model, to read a model's scores against: the raw pixels of each image, and their principal
components. On small grey images of faces or palm prints raw pixels can match or beat a pretrained network; a user
should see that before trusting the model, or before deciding to train one.

Both are scored exactly as the model is (`simsearch.evaluation.protocol`): the same images, the same split, the
same queries and gallery. Neither looks at a label: the pixel mean and the principal components are taken from the
searched set (the gallery, or the whole set when leave-one-out).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from simsearch.evaluation.embedding import TransformedDataset, labels_by_class_name, readable_batches
from simsearch.evaluation.protocol import EVAL_KS, score_vectors
from simsearch.evaluation.records import EvalRecord

__all__ = ["PCA_DIM", "PIXEL_SIDE", "baseline_records", "pixel_baselines", "pixel_vectors"]

#: Images are resized to this square (whole image, no crop) before their pixels are compared.
PIXEL_SIDE = 32
#: Principal components kept by the PCA baseline (fewer when the searched set is smaller).
PCA_DIM = 128


class _Pixels:
    """An RGB image as its `side x side` pixels in [0, 1], flattened (a class, so loader workers can pickle it)."""

    def __init__(self, side: int) -> None:
        self.side = side

    def __call__(self, image: Image.Image) -> torch.Tensor:
        small = image.resize((self.side, self.side), Image.Resampling.BILINEAR)  # antialiased when it shrinks
        return torch.from_numpy(np.asarray(small, dtype=np.float32).reshape(-1) / 255.0)


def pixel_vectors(
    dataset: Any,
    *,
    side: int = PIXEL_SIDE,
    batch_size: int = 256,
    workers: int = 0,
    skipped: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`(N, 3 * side * side) float32` RGB pixels in [0, 1] of a labelled dataset's images, and their labels.

    `skipped` as in `embed_dataset`: unreadable images left out and named, so the same images are scored as the
    model's."""
    data = TransformedDataset(dataset, _Pixels(side), None, skip_unreadable=skipped is not None)
    chunks, label_chunks = [], []
    for pixels, labels in readable_batches(data, batch_size=batch_size, workers=workers, skipped=skipped):
        chunks.append(pixels.numpy())
        label_chunks.append(labels.numpy())
    if not chunks:
        return np.empty((0, 3 * side * side), np.float32), np.empty(0, np.int64)
    return np.concatenate(chunks), np.concatenate(label_chunks).astype(np.int64, copy=False)


def baseline_records(
    vectors: np.ndarray,
    labels: np.ndarray,
    *,
    gallery: tuple[np.ndarray, np.ndarray] | None = None,
    ks: Sequence[int] = EVAL_KS,
    side: int = PIXEL_SIDE,
    pca_dim: int = PCA_DIM,
    protocol: str | None = None,
    seed: int = 0,
) -> list[EvalRecord]:
    """The raw-pixel and pixel-PCA records of pixel vectors (`pixel_vectors`), leave-one-out or against `gallery`.

    Raw pixels: each vector minus the searched set's mean image, compared by cosine (a correlation of the pixels).
    PCA: the searched set's first `pca_dim` principal components (at most one fewer than its images), by cosine.
    """
    from sklearn.decomposition import PCA

    searched = vectors if gallery is None else gallery[0]
    mean = searched.mean(axis=0, keepdims=True)
    name = f"pixels {side}x{side}"

    def centred(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x - mean, dtype=np.float32)

    records = [
        score_vectors(
            centred(vectors),
            labels,
            model=name,
            embed_dim=vectors.shape[1],
            gallery=None if gallery is None else (centred(gallery[0]), gallery[1]),
            ks=ks,
            protocol=protocol,
            seed=seed,
        )
    ]
    components = min(pca_dim, len(searched) - 1, searched.shape[1])
    if components >= 1:
        pca = PCA(n_components=components, random_state=seed).fit(searched)

        def project(x: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(pca.transform(x), dtype=np.float32)

        records.append(
            score_vectors(
                project(vectors),
                labels,
                model=f"{name} PCA-{components}",
                embed_dim=components,
                gallery=None if gallery is None else (project(gallery[0]), gallery[1]),
                ks=ks,
                protocol=protocol,
                seed=seed,
            )
        )
    return records


def pixel_baselines(
    dataset: Any,
    gallery: Any | None = None,
    *,
    ks: Sequence[int] = EVAL_KS,
    side: int = PIXEL_SIDE,
    pca_dim: int = PCA_DIM,
    protocol: str | None = None,
    batch_size: int = 256,
    workers: int = 0,
    skipped: list[str] | None = None,
) -> list[EvalRecord]:
    """`baseline_records` of a labelled dataset, leave-one-out or against a labelled `gallery` (classes matched by
    name, as the model's scores match them)."""
    vectors, labels = pixel_vectors(dataset, side=side, batch_size=batch_size, workers=workers, skipped=skipped)
    searched = None
    if gallery is not None:
        g_vectors, g_labels = pixel_vectors(gallery, side=side, batch_size=batch_size, workers=workers, skipped=skipped)
        searched = (g_vectors, labels_by_class_name(g_labels, gallery.classes, dataset.classes))
    return baseline_records(vectors, labels, gallery=searched, ks=ks, side=side, pca_dim=pca_dim, protocol=protocol)
