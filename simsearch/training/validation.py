"""Validation of a training run: the held-out classes scored by R@1 and MAP@R as `simsearch eval` scores them,
before the first epoch (epoch 0, the starting point every later epoch is read against) and after each epoch:
leave-one-out, or on two-view data from the query view to the gallery view, as the test of such data is scored."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from simsearch.evaluation import embed_dataset
from simsearch.metrics import retrieval_metrics
from simsearch.models import Embedder
from simsearch.training.recipe import TrainingError

__all__ = ["Validation", "ViewValidation", "make_validation"]

logger = logging.getLogger(__name__)


class Validation:
    """Scores a model on the validation classes, leave-one-out; each unreadable image is reported once a run."""

    protocol = "leave-one-out"

    def __init__(self, dataset: Any, *, batch_size: int, workers: int, device: torch.device) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.workers = workers
        self.device = device
        self._reported: set[str] = set()

    def check(self) -> None:
        """Refuse a validation set that cannot be scored, before any model is built.

        Raises:
            TrainingError: no class of two images (each image is scored against the others of its class).
        """
        _, counts = np.unique(np.asarray(self.dataset.labels), return_counts=True)
        if not (counts >= 2).any():
            raise TrainingError("the validation set needs a class with at least two images")

    def embed(self, model: Embedder, dataset: Any) -> tuple[np.ndarray, np.ndarray]:
        skipped: list[str] = []
        vectors, labels = embed_dataset(
            model, dataset, batch_size=self.batch_size, workers=self.workers, device=self.device, skipped=skipped
        )
        for message in sorted(set(skipped) - self._reported):  # each bad file once per run, not once per epoch
            logger.warning("validation leaves out an unreadable image: %s", message)
        self._reported.update(skipped)
        return vectors, labels

    def score(self, model: Embedder, epoch: int) -> dict[str, float]:
        """R@1 and MAP@R of `model` after `epoch` (0: before training).

        Raises:
            TrainingError: NaN embeddings (the model diverged although the loss stayed finite).
        """
        vectors, labels = self.embed(model, self.dataset)
        return self._scores(epoch, vectors, labels)

    def _scores(self, epoch: int, vectors: np.ndarray, labels: np.ndarray, **gallery: Any) -> dict[str, float]:
        try:
            scores = retrieval_metrics(vectors, labels, ks=(1,), nmi=False, **gallery)
        except ValueError as exc:
            when = "before training" if epoch == 0 else f"after epoch {epoch}"
            raise TrainingError(f"validation {when}: {exc}") from None
        return {"recall@1": float(scores["recall@1"]), "map@r": float(scores["map@r"])}


class ViewValidation(Validation):
    """Scores two-view validation items as they will be tested: each image of the query view searches the images of
    the gallery view (one right item among all the others), not every image against all, where an item's other
    images in the query's own view would be found as well."""

    def __init__(self, dataset: Any, query_view: str, gallery_view: str, **options: Any) -> None:
        super().__init__(dataset, **options)
        self.query_view = query_view
        self.gallery_view = gallery_view
        self.protocol = f"query view {query_view} against gallery view {gallery_view}"

    def check(self) -> None:
        """Refuse validation data that cannot be searched from one view to the other.

        Raises:
            TrainingError: data without views, a view they lack, or no item seen in both views.
        """
        from simsearch.data import DatasetError

        if not hasattr(self.dataset, "view"):
            raise TrainingError(
                "validating from one view to another needs two-view data: class folders with one image per view named "
                "by its view, view folders with matching file names, or an LMDB folder packed from either"
            )
        try:
            queries, gallery = self.dataset.view(self.query_view), self.dataset.view(self.gallery_view)
        except DatasetError as exc:
            raise TrainingError(f"validation: {exc}") from None
        if not np.intersect1d(queries.labels, gallery.labels).size:
            raise TrainingError(f"no validation item is seen in both {self.query_view} and {self.gallery_view}")

    def score(self, model: Embedder, epoch: int) -> dict[str, float]:
        queries, q_labels = self.embed(model, self.dataset.view(self.query_view))
        gallery, g_labels = self.embed(model, self.dataset.view(self.gallery_view))
        return self._scores(epoch, queries, q_labels, gallery=gallery, gallery_labels=g_labels)


def make_validation(config: Any, dataset: Any | None, device: torch.device) -> Validation | None:
    """The validation a recipe asks for (`TrainConfig.query_view`), of `dataset` (None: no validation)."""
    if dataset is None:
        return None
    options: dict[str, Any] = {"batch_size": config.val_batch_size, "workers": config.workers, "device": device}
    if config.query_view is not None:
        return ViewValidation(dataset, config.query_view, config.gallery_view, **options)
    return Validation(dataset, **options)
