"""The metric-learning recipe (`TrainConfig`): every choice of a training run, checked before any work, and the
class-disjoint train/validation split of a labelled dataset."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simsearch.errors import TrainingError
from simsearch.losses import is_pair_loss, list_losses

__all__ = [
    "AUGMENT_OPTIONS",
    "RANDOM_PREFIX",
    "SAMPLERS",
    "TrainConfig",
    "TrainingError",
    "class_disjoint_split",
    "split_classes",
]

# "random:<timm name>" builds an untrained backbone: training from scratch, and tiny models in tests.
RANDOM_PREFIX = "random:"
# Fields that may change between an interrupted run and its resumption without changing what is being trained.
RESUMABLE_FIELDS = frozenset({"epochs", "device", "workers", "patience"})
# "pk": P x K class-balanced batches for any loss; "pairs": explicit Siamese pairs for the pair losses.
SAMPLERS = ("pk", "pairs")
# The training options of `timm.data.create_transform` that a recipe may set; the data config supplies the rest.
AUGMENT_OPTIONS = frozenset(
    {"scale", "ratio", "hflip", "vflip", "color_jitter", "auto_augment", "re_prob", "re_mode", "re_count"}
)


@dataclass
class TrainConfig:
    """A training recipe; JSON-able (`dataclasses.asdict`), stored in the checkpoint as "recipe".

    Attributes:
        backbone: "default", a timm name (pretrained), a checkpoint folder, or "random:<timm name>" (untrained).
        backbone_kwargs: extra `timm.create_model` options, e.g. {"in_chans": 1} (grey input: the pretrained stem's
            RGB filters are summed, the data config gets one channel) or {"drop_path_rate": 0.1}.
        weights: local weights file for a timm name in `backbone`.
        embed_dim: projection head size; None keeps the backbone's features (or a checkpoint's own head).
        loss: a registered loss name (`simsearch.losses.list_losses()`).
        loss_kwargs: the loss's own options (margin, mining, weight, alpha...).
        distance: "cosine" or "euclidean" for losses that take a distance; None keeps the loss's default.
        sampler: "pk" (P x K batches, every loss) or "pairs" (two-tower Siamese pairs, pair losses only).
        p, k: classes per batch and images per class ("pk").
        batches_per_epoch: None = number of training images // (p * k); with "pairs" it sets pairs_per_epoch to
            batches_per_epoch * pair_batch_size when that is None.
        pairs_per_epoch: pairs drawn per epoch ("pairs"); None = the number of training images.
        positive_fraction: share of same-class pairs ("pairs").
        pair_batch_size: pairs per batch ("pairs"); each batch runs 2 * pair_batch_size images through the model.
        lr: head learning rate (AdamW); the backbone gets lr * backbone_lr_mult, the loss's parameters loss_lr.
        warmup_epochs: linear warm-up, then cosine decay to zero, stepped per batch.
        freeze_backbone_epochs: the backbone is frozen (no gradient, BatchNorm in eval) for the first epochs.
        freeze_bn: keep every BatchNorm's running statistics fixed (small batches give poor statistics).
        freeze_stages: keep the stem and the first N stages (timm's coarse layer groups: a ViT's blocks) frozen for
            the whole run, BatchNorm statistics included. The generic early features stay as pretrained, and an
            epoch runs no backward pass through them, so it costs less on a CPU.
        image_size: override the backbone's input resolution (square); stored in the checkpoint's data config.
        crop_pct: override the eval transform's centre crop (the resized image side is input / crop_pct; 1.0 keeps the
            whole image); stored in the checkpoint's data config, so validation, eval and index all see it.
        augment: timm's training augmentations (random resized crop, flip); False uses the eval transform.
        augment_kwargs: options of `timm.data.create_transform` for training, e.g. {"scale": [0.7, 1.0], "hflip": 0}
            (a mirrored character can be another character) or {"re_prob": 0.25} (random erasing).
        device: "auto", "cpu", "cuda"...; mixed precision (bfloat16) is used on CUDA only.
        patience: stop after this many epochs without a better validation MAP@R; None never stops early.
        ema_decay: keep an exponential moving average of the model's weights (timm's `ModelEmaV3`, its decay warmed
            up from 0 towards this cap), and validate and checkpoint the average: late epochs of a run differ by
            more than their trend, and the average smooths that out. None trains without one.
        query_view, gallery_view: on two-view data (`simsearch.data.views`), validate by searching the validation
            items' `gallery_view` images with their `query_view` images, as `simsearch eval` scores such data;
            None (both): leave-one-out over every validation image.
    """

    backbone: str = "default"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None
    embed_dim: int | None = 128
    loss: str = "triplet"
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    distance: str | None = None
    epochs: int = 10
    sampler: str = "pk"
    p: int = 8
    k: int = 4
    batches_per_epoch: int | None = None
    pairs_per_epoch: int | None = None
    positive_fraction: float = 0.5
    pair_batch_size: int = 32
    lr: float = 1e-3
    backbone_lr_mult: float = 0.1
    loss_lr: float | None = None
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    freeze_backbone_epochs: int = 0
    freeze_bn: bool = False
    freeze_stages: int = 0
    image_size: int | None = None
    crop_pct: float | None = None
    augment: bool = True
    augment_kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    device: str = "auto"
    workers: int = 0
    patience: int | None = 5
    val_batch_size: int = 64
    ema_decay: float | None = None
    query_view: str | None = None
    gallery_view: str | None = None

    def check(self) -> None:
        """Raise TrainingError for a recipe that cannot run."""
        if self.epochs < 1:
            raise TrainingError(f"epochs must be >= 1, got {self.epochs}")
        if self.p < 2 or self.k < 2:
            raise TrainingError(f"P x K batches need p >= 2 and k >= 2, got p={self.p}, k={self.k}")
        if self.embed_dim is not None and self.embed_dim < 1:
            raise TrainingError(f"embed_dim must be >= 1, got {self.embed_dim}")
        if not self.lr > 0 or self.backbone_lr_mult < 0 or self.weight_decay < 0:
            raise TrainingError("lr must be > 0, backbone_lr_mult and weight_decay >= 0")
        if self.warmup_epochs < 0 or self.freeze_backbone_epochs < 0 or self.freeze_stages < 0:
            raise TrainingError("warmup_epochs, freeze_backbone_epochs and freeze_stages must be >= 0")
        if self.crop_pct is not None and not 0 < self.crop_pct <= 1:
            raise TrainingError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        if self.patience is not None and self.patience < 1:
            raise TrainingError(f"patience must be >= 1 (or None), got {self.patience}")
        if self.loss_lr is not None and not self.loss_lr > 0:
            raise TrainingError(f"loss_lr must be > 0 (or None: the head's lr), got {self.loss_lr}")
        if self.weights is not None and self.backbone.startswith(RANDOM_PREFIX):
            raise TrainingError(f"backbone {self.backbone} is untrained by definition: it takes no weights file")
        if self.batches_per_epoch is not None and self.batches_per_epoch < 1:
            raise TrainingError(f"batches_per_epoch must be >= 1, got {self.batches_per_epoch}")
        if self.sampler not in SAMPLERS:
            raise TrainingError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.pairs_per_epoch is not None and self.pairs_per_epoch < 1:
            raise TrainingError(f"pairs_per_epoch must be >= 1, got {self.pairs_per_epoch}")
        if not 0.0 <= self.positive_fraction <= 1.0:
            raise TrainingError(f"positive_fraction must be in [0, 1], got {self.positive_fraction}")
        if self.pair_batch_size < 1:
            raise TrainingError(f"pair_batch_size must be >= 1, got {self.pair_batch_size}")
        if self.seed < 0:
            raise TrainingError(f"seed must be >= 0, got {self.seed}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise TrainingError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if (self.query_view is None) != (self.gallery_view is None) or (
            self.query_view is not None and self.query_view == self.gallery_view
        ):
            raise TrainingError(
                f"two-view validation needs a query view and another gallery view, "
                f"got {self.query_view!r} and {self.gallery_view!r}"
            )
        if not isinstance(self.backbone_kwargs, dict):
            raise TrainingError(f"backbone_kwargs must be a dict, got {type(self.backbone_kwargs).__name__}")
        _check_augment_kwargs(self.augment_kwargs)
        in_chans = self.backbone_kwargs.get("in_chans", 3)
        if in_chans not in (1, 3):
            # Images reach the model through PIL as grey ("L") or RGB: other channel counts have no source.
            raise TrainingError(f"in_chans must be 1 (grey) or 3 (RGB) to train on images, got {in_chans!r}")
        if self.sampler == "pairs":
            try:
                pairable = is_pair_loss(self.loss)
            except ValueError as exc:
                raise TrainingError(str(exc)) from None
            if not pairable:
                pair_losses = ", ".join(n for n in list_losses() if is_pair_loss(n))
                raise TrainingError(
                    f"loss {self.loss!r} trains on P x K batches, not on Siamese pairs: "
                    f"use a pair loss ({pair_losses}) or the pk sampler"
                )


def _check_augment_kwargs(options: dict[str, Any]) -> None:
    """timm takes a bad range or probability with a warning and fails later, in a loader: refuse them up front."""
    unknown = sorted(set(options) - AUGMENT_OPTIONS)
    if unknown:
        raise TrainingError(
            f"unknown augmentation option(s) {', '.join(unknown)}; known: {', '.join(sorted(AUGMENT_OPTIONS))}"
        )
    for key in ("scale", "ratio"):
        value = options.get(key)
        if value is None:
            continue
        pair = list(value) if isinstance(value, list | tuple) else None
        if not pair or len(pair) != 2 or not all(_is_number(v) and v > 0 for v in pair) or pair[0] > pair[1]:
            raise TrainingError(f"augmentation option {key} must be [low, high] with 0 < low <= high, got {value!r}")
    for key in ("hflip", "vflip", "re_prob"):
        value = options.get(key)
        if value is not None and not (_is_number(value) and 0 <= value <= 1):
            raise TrainingError(f"augmentation option {key} is a probability in [0, 1], got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def split_classes(classes: list[str], val_fraction: float, *, seed: int = 0) -> tuple[list[str], list[str]]:
    """A class-disjoint split: a seeded random `val_fraction` of the classes (at least 2 when > 0) for validation.

    Returns:
        `(train_classes, val_classes)`, each in the original order.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise TrainingError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if val_fraction == 0:
        return list(classes), []
    n_val = max(2, round(len(classes) * val_fraction))
    if len(classes) - n_val < 2:
        raise TrainingError(f"{len(classes)} classes are too few for a class-disjoint validation split")
    picked = set(np.random.default_rng(seed).choice(len(classes), size=n_val, replace=False).tolist())
    return [c for i, c in enumerate(classes) if i not in picked], [c for i, c in enumerate(classes) if i in picked]


def class_disjoint_split(dataset: Any, val_fraction: float, *, seed: int = 0) -> tuple[Any, Any | None]:
    """`dataset` (with `classes` and `labels`) as a training set and a validation set of other classes
    (`split_classes`), each relabelled from 0 (two-view data keep their views); the validation set is None when
    `val_fraction` is 0."""
    from simsearch.data import class_subset

    train_classes, val_classes = split_classes(list(dataset.classes), val_fraction, seed=seed)
    return class_subset(dataset, train_classes), (class_subset(dataset, val_classes) if val_classes else None)
