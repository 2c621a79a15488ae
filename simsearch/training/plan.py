"""What a training run is about to do, said before its first batch: the classes and images it trains and validates
on, how validation searches, the batches of an epoch, where it runs. A first epoch can take many minutes on a CPU;
this line tells the user at once that the run started on the data and the split they meant."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["RunPlan"]


@dataclass(frozen=True)
class RunPlan:
    """A run's shape, known before its first batch (`TrainProgress.start_run` receives it).

    Attributes:
        train_classes, train_images: what the loss sees.
        val_classes, val_images: the held-out classes that validation scores (0: no validation).
        val_protocol: how validation searches them, e.g. "leave-one-out".
        epochs, start_epoch: the run's length, and the epoch it resumes after (0: a fresh run).
        steps_per_epoch: optimizer steps (batches) an epoch.
        batch: what one batch holds, e.g. "8 classes x 4 images" or "32 pairs".
        device: where the model runs ("cpu", "cuda:0").
        threads: torch's intra-op threads on the CPU.
    """

    train_classes: int
    train_images: int
    val_classes: int
    val_images: int
    val_protocol: str
    epochs: int
    start_epoch: int
    steps_per_epoch: int
    batch: str
    device: str
    threads: int

    def describe(self) -> str:
        """The plan as one line, for a log or a terminal."""
        val = (
            f"validating on {self.val_classes} other classes ({self.val_images} images, {self.val_protocol})"
            if self.val_classes
            else "no validation"
        )
        resume = f", resuming after epoch {self.start_epoch}" if self.start_epoch else ""
        return (
            f"training on {self.train_classes} classes ({self.train_images} images), {val}; "
            f"{self.steps_per_epoch} batches of {self.batch} per epoch, {self.epochs} epochs{resume}; "
            f"{self.device}, {self.threads} threads"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
