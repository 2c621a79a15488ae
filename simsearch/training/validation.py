"""Validation of a training run: the held-out classes scored by R@1 and MAP@R as `simsearch eval` scores them,
before the first epoch (epoch 0, the starting point every later epoch is read against) and after each epoch."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from simsearch.evaluation import embed_dataset
from simsearch.metrics import retrieval_metrics
from simsearch.models import Embedder
from simsearch.training.recipe import TrainingError

__all__ = ["Validation"]

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
        try:
            scores = retrieval_metrics(vectors, labels, ks=(1,), nmi=False)
        except ValueError as exc:
            when = "before training" if epoch == 0 else f"after epoch {epoch}"
            raise TrainingError(f"validation {when}: {exc}") from None
        return {"recall@1": float(scores["recall@1"]), "map@r": float(scores["map@r"])}
