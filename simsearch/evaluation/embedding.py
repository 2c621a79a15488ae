"""Embedding a labelled set as scoring sees it: each image through the model's own eval transform (its colour mode
converted first), unreadable images left out and named, or stood in for during training; a gallery's classes
matched to the queries' by name.

Training embeds its validation classes each epoch through `embed_dataset`, so a model sees the same preprocessing
when it is validated, scored by `simsearch eval` and by the benchmarks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from simsearch.errors import ImageError
from simsearch.models import Embedder, create_transform

__all__ = [
    "TransformedDataset",
    "autocast",
    "collate_readable",
    "embed_dataset",
    "embed_queries_and_gallery",
    "labels_by_class_name",
    "readable_batches",
]

logger = logging.getLogger(__name__)


class TransformedDataset(Dataset):
    """Applies a model's transform to a dataset that yields PIL images (its own transform left unset), converting each
    image to the model's colour mode first ("L" for a one-channel stem, else "RGB").

    An image that fails to decode (a truncated file passes the header check made when the folder was scanned)
    raises by default. With `replace_unreadable` (training) it is reported once and replaced by the next readable
    image of its class, so a long run does not die mid-epoch on one bad file. With `skip_unreadable` (scoring, where
    a stand-in would skew the numbers) every item is `(image or None, label, error message or "")`, for
    `collate_readable` to drop the failures and pass their messages on.
    """

    def __init__(
        self,
        dataset: Any,
        transform: Callable[[Image.Image], torch.Tensor],
        embedder: Embedder | None,
        *,
        replace_unreadable: bool = False,
        skip_unreadable: bool = False,
    ) -> None:
        """Without an `embedder` (a baseline that needs no model) the images are converted to "RGB"."""
        self.dataset = dataset
        self.transform = transform
        grey = embedder is not None and embedder.data_config.get("input_size", (3,))[0] == 1
        self.mode = "L" if grey else "RGB"
        self.labels = np.asarray(dataset.labels, dtype=np.int64)
        self.replace_unreadable = replace_unreadable
        self.skip_unreadable = skip_unreadable
        self._unreadable: set[int] = set()

    def __len__(self) -> int:
        return len(self.dataset)

    def _read(self, index: int) -> tuple[Any, int]:
        if not self.replace_unreadable:
            return self.dataset[index]  # type: ignore[no-any-return]
        if index not in self._unreadable and (item := self._try(index)) is not None:
            return item
        same_class = np.flatnonzero(self.labels == self.labels[index])
        start = int(np.searchsorted(same_class, index))
        for candidate in np.roll(same_class, -start).tolist():
            if candidate not in self._unreadable and (item := self._try(candidate)) is not None:
                return item
        raise ImageError(f"no image of class {int(self.labels[index])} can be read")

    def _try(self, index: int) -> tuple[Any, int] | None:
        try:
            return self.dataset[index]  # type: ignore[no-any-return]
        except ImageError as exc:
            self._unreadable.add(index)
            logger.warning("skipping an unreadable training image (another of its class stands in): %s", exc)
            return None

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        if self.skip_unreadable:
            try:
                image, label = self.dataset[index]
            except ImageError as exc:
                return None, int(self.labels[index]), str(exc)
            return self._prepare(image), int(label), ""
        image, label = self._read(index)
        return self._prepare(image), int(label)

    def _prepare(self, image: Any) -> Any:
        if isinstance(image, Image.Image):
            if image.mode != self.mode:
                image = image.convert(self.mode)
            image = self.transform(image)
        return image


def collate_readable(batch: list[tuple[Any, int, str]]) -> tuple[torch.Tensor | None, torch.Tensor, list[str]]:
    """Batch the items of a `skip_unreadable` dataset: `(images or None when none decoded, labels, error messages)`."""
    kept = [(image, label) for image, label, error in batch if not error]
    images = torch.stack([image for image, _ in kept]) if kept else None
    labels = torch.tensor([label for _, label in kept], dtype=torch.int64)
    return images, labels, [error for _, _, error in batch if error]


def autocast(device: torch.device) -> torch.autocast:
    """bfloat16 autocast on CUDA (no loss scaling needed); off on CPU, where it is slower than float32 on most CPUs."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def readable_batches(
    data: TransformedDataset, *, batch_size: int, workers: int, skipped: list[str] | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The `(images, labels)` batches of a transformed dataset in order. With `skipped` (and a dataset made with
    `skip_unreadable`) an image that fails to decode is left out and its message appended there."""
    lenient = skipped is not None
    loader = DataLoader(
        data,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_readable if lenient else None,
    )
    for batch in loader:
        if lenient:
            skipped.extend(batch[2])  # type: ignore[union-attr]
            if batch[0] is None:
                continue
        yield batch[0], batch[1]


def embed_dataset(
    embedder: Embedder,
    dataset: Any,
    *,
    batch_size: int = 64,
    workers: int = 0,
    device: torch.device | None = None,
    skipped: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Embed a labelled dataset (items `(PIL image or tensor, label)`) with the eval transform.

    Args:
        skipped: when given, an image that fails to decode is left out and its error message appended here (scoring
            the rest is honest; a stand-in image would not be); without it the first such image raises `ImageError`.

    Returns:
        `(N, D) float32` unit vectors and `(N,) int64` labels, of the images that were read.
    """
    dev = device or next(embedder.parameters(), torch.empty(0)).device  # a parameter-free model runs on the CPU
    data = TransformedDataset(dataset, create_transform(embedder), embedder, skip_unreadable=skipped is not None)
    was_training = embedder.training
    embedder.eval()
    chunks: list[np.ndarray] = []
    label_chunks: list[np.ndarray] = []
    try:
        with torch.inference_mode(), autocast(dev):
            for images, labels in readable_batches(data, batch_size=batch_size, workers=workers, skipped=skipped):
                chunks.append(embedder(images.to(dev)).float().cpu().numpy())
                label_chunks.append(labels.numpy())
    finally:
        embedder.train(was_training)
    if not chunks:
        return np.empty((0, embedder.embed_dim), np.float32), np.empty(0, np.int64)
    vectors = np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)
    return vectors, np.concatenate(label_chunks).astype(np.int64, copy=False)


def embed_queries_and_gallery(
    embedder: Embedder,
    dataset: Any,
    gallery: Any | None = None,
    *,
    batch_size: int = 64,
    workers: int = 0,
    skipped: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """`embed_dataset` of the queries, and of `gallery` (when given) with its labels renumbered by class name, as
    `evaluate_embeddings` takes them: `(vectors, labels, (gallery_vectors, gallery_labels) or None)`. `skipped`
    as in `embed_dataset`, for both sets."""
    vectors, labels = embed_dataset(embedder, dataset, batch_size=batch_size, workers=workers, skipped=skipped)
    if gallery is None:
        return vectors, labels, None
    gallery_vectors, gallery_labels = embed_dataset(
        embedder, gallery, batch_size=batch_size, workers=workers, skipped=skipped
    )
    return vectors, labels, (gallery_vectors, labels_by_class_name(gallery_labels, gallery.classes, dataset.classes))


def labels_by_class_name(
    gallery_labels: np.ndarray, gallery_classes: Sequence[str], query_classes: Sequence[str]
) -> np.ndarray:
    """Gallery labels renumbered as the queries number their classes, matched by class name (two sets that share
    classes rarely list them alike); a class the queries lack gets a number of its own, so it never counts as a hit."""
    index = {name: i for i, name in enumerate(query_classes)}
    for name in gallery_classes:
        index.setdefault(name, len(index))
    mapping = np.array([index[name] for name in gallery_classes], dtype=np.int64)
    return mapping[np.asarray(gallery_labels, dtype=np.int64)]
