"""Scoring a model by retrieval: embed a labelled set with the model's eval transform, then exact k-NN recall@k (hit
rate), MAP@R, R-precision and NMI, leave-one-out or against a gallery; and the Omniglot 20-way one-shot protocol.

Training embeds its validation classes each epoch through `embed_dataset`, so a model sees the same preprocessing
when it is validated, scored by `simsearch eval` and by the benchmarks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from simsearch.data import ArrayDataset, omniglot_one_shot_runs
from simsearch.errors import EvaluationError, ImageError
from simsearch.metrics import one_shot_accuracy, retrieval_metrics
from simsearch.models import Embedder, create_transform

__all__ = [
    "EVAL_KS",
    "EvaluationError",
    "TransformedDataset",
    "autocast",
    "collate_readable",
    "embed_dataset",
    "embed_queries_and_gallery",
    "evaluate",
    "evaluate_embeddings",
    "labels_by_class_name",
    "one_shot_eval",
]

logger = logging.getLogger(__name__)

# The k of recall@k that `evaluate` reports (hit rate), as in the deep-metric-learning literature and the eval plot.
EVAL_KS = (1, 2, 4, 8, 16, 32)


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
        embedder: Embedder,
        *,
        replace_unreadable: bool = False,
        skip_unreadable: bool = False,
    ) -> None:
        self.dataset = dataset
        self.transform = transform
        self.mode = "L" if embedder.data_config.get("input_size", (3,))[0] == 1 else "RGB"
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
    lenient = skipped is not None
    data = TransformedDataset(dataset, create_transform(embedder), embedder, skip_unreadable=lenient)
    loader = DataLoader(
        data,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_readable if lenient else None,
    )
    was_training = embedder.training
    embedder.eval()
    chunks: list[np.ndarray] = []
    label_chunks: list[np.ndarray] = []
    try:
        with torch.inference_mode(), autocast(dev):
            for batch in loader:
                if lenient:
                    skipped.extend(batch[2])  # type: ignore[union-attr]
                    if batch[0] is None:
                        continue
                chunks.append(embedder(batch[0].to(dev)).float().cpu().numpy())
                label_chunks.append(batch[1].numpy())
    finally:
        embedder.train(was_training)
    if not chunks:
        return np.empty((0, embedder.embed_dim), np.float32), np.empty(0, np.int64)
    vectors = np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)
    return vectors, np.concatenate(label_chunks).astype(np.int64, copy=False)


def evaluate(
    embedder: Embedder,
    dataset: Any,
    *,
    gallery: Any | None = None,
    ks: tuple[int, ...] = EVAL_KS,
    batch_size: int = 64,
    workers: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Exact k-NN retrieval scores of a labelled dataset: recall@k (hit rate), MAP@R, R-precision, NMI.

    Leave-one-out over `dataset` by default; with `gallery` (another labelled dataset) each image of `dataset` searches
    the gallery instead, classes matched by name. k values larger than the gallery allows are dropped.
    """
    vectors, labels, searched = embed_queries_and_gallery(
        embedder, dataset, gallery, batch_size=batch_size, workers=workers
    )
    return evaluate_embeddings(embedder, vectors, labels, gallery=searched, ks=ks, seed=seed)


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


def evaluate_embeddings(
    embedder: Embedder,
    vectors: np.ndarray,
    labels: np.ndarray,
    *,
    gallery: tuple[np.ndarray, np.ndarray] | None = None,
    ks: tuple[int, ...] = EVAL_KS,
    seed: int = 0,
) -> dict[str, Any]:
    """`evaluate` on embeddings computed already (by `embed_dataset`), e.g. to plot them as well.

    Args:
        embedder: the model that made `vectors`; only its identity goes into the record.
        vectors: `(N, D)` embeddings.
        labels: `(N,)` classes.
        gallery: `(vectors, labels)` to search instead of `vectors` themselves (labels in the same numbering, see
            `labels_by_class_name`); without it the search is leave-one-out.
    """
    size = len(vectors) - 1 if gallery is None else len(gallery[0])
    usable = tuple(k for k in ks if k <= size)
    if not usable:
        raise EvaluationError(f"evaluation needs at least two images, got {len(vectors)}")
    searched: dict[str, Any] = {} if gallery is None else {"gallery": gallery[0], "gallery_labels": gallery[1]}
    try:
        scores = retrieval_metrics(vectors, labels, ks=usable, seed=seed, **searched)
    except ValueError as exc:
        raise EvaluationError(str(exc)) from None
    protocol = "exact k-NN, cosine, leave-one-out" if gallery is None else "exact k-NN, cosine, against a gallery"
    return {
        "model": embedder.model_id,
        "tta": embedder.tta,
        "embed_dim": embedder.embed_dim,
        "images": len(vectors),
        "classes": len(np.unique(labels)),
        "protocol": protocol,
        "metrics": {k: (float(v) if isinstance(v, float) else v) for k, v in scores.items()},
    }


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


def one_shot_eval(embedder: Embedder, runs: list[Any] | None = None, *, batch_size: int = 64) -> dict[str, Any]:
    """Omniglot 20-way one-shot accuracy (Lake et al. 2015) on the official runs, nearest training image by cosine.

    The run images (grey `(105, 105)` uint8, ink black on white like `load_omniglot`) go through the model's own
    eval transform, as `embed_dataset` gives them, converted to the channels its data config asks for.

    Args:
        runs: `simsearch.data.OneShotRun`s; None reads the 20 official runs from the shared data folder.

    Returns:
        `{"accuracy": float, "runs": int, "per_run": [float, ...]}`, accuracies in [0, 1].
    """
    if runs is None:
        runs = omniglot_one_shot_runs()
    if not runs:
        raise EvaluationError("no one-shot runs to evaluate")
    # Embed every run once, then score each run on its slice: the per-run numbers and the total share one pass.
    arrays = [np.asarray(im, dtype=np.uint8) for run in runs for im in (*run.train_images, *run.test_images)]
    if len({a.shape for a in arrays}) > 1:
        raise EvaluationError(f"one-shot run images differ in size ({sorted({a.shape for a in arrays})[:3]}...)")
    images = np.stack(arrays)
    vectors, _ = embed_dataset(embedder, ArrayDataset(images, np.zeros(len(images), np.int64)), batch_size=batch_size)
    per_run: list[float] = []
    offset = 0
    for run in runs:
        n = len(run.train_images) + len(run.test_images)
        chunk = vectors[offset : offset + n]
        offset += n
        try:
            per_run.append(one_shot_accuracy(_constant_embedding(chunk), [run]))
        except ValueError as exc:
            raise EvaluationError(str(exc)) from None
    correct = sum(acc * len(run.test_images) for acc, run in zip(per_run, runs, strict=True))
    total = sum(len(run.test_images) for run in runs)
    return {"accuracy": correct / total, "runs": len(runs), "per_run": per_run}


def _constant_embedding(vectors: np.ndarray) -> Callable[[list[np.ndarray]], np.ndarray]:
    """An embed_fn for `one_shot_accuracy` that returns vectors computed beforehand."""

    def embed_fn(_images: list[np.ndarray]) -> np.ndarray:
        return vectors

    return embed_fn
