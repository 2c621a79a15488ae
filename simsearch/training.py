"""Metric-learning training: a recipe (`TrainConfig`), the loop that fine-tunes an Embedder with P x K batches (or
explicit Siamese pairs) and a metric loss, per-epoch class-disjoint validation (scored as `simsearch.evaluation`
scores a model), early stopping, the best checkpoint and a resumable `last/` state.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import timm.data
import timm.models
import torch
from PIL import Image
from timm.utils import ModelEmaV3
from torch import nn
from torch.utils.data import DataLoader

from simsearch.autoencoders import EncoderBackbone
from simsearch.data import PKSampler, SiamesePairs
from simsearch.errors import TrainingError
from simsearch.evaluation import TransformedDataset, autocast, embed_dataset
from simsearch.losses import MetricLoss, PairLoss, create_loss, is_pair_loss, list_losses, loss_has_parameters
from simsearch.metrics import retrieval_metrics
from simsearch.models import (
    GEM_OPTION,
    Embedder,
    GeM,
    channel_data_config,
    create_backbone,
    create_transform,
    load_embedder,
    random_embedder,
    resolve_device,
    save_checkpoint,
)
from simsearch.runs import HISTORY_FILE, LAST_DIR, STATE_FILE, forget_run, save_state, seed_everything, write_json

__all__ = [
    "LAST_DIR",
    "RANDOM_PREFIX",
    "AUGMENT_OPTIONS",
    "SAMPLERS",
    "TrainConfig",
    "TrainProgress",
    "TrainResult",
    "TrainingError",
    "build_embedder",
    "channel_data_config",
    "frozen_stages",
    "split_classes",
    "train",
]

logger = logging.getLogger(__name__)

# "random:<timm name>" builds an untrained backbone: training from scratch, and tiny models in tests.
RANDOM_PREFIX = "random:"
# Fields that may change between an interrupted run and its resumption without changing what is being trained.
_RESUMABLE_CHANGES = frozenset({"epochs", "device", "workers", "patience"})
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


@dataclass
class TrainResult:
    """What a run produced. `checkpoint` is `out_dir` itself: the best epoch's model, loadable by `load_embedder`."""

    checkpoint: Path
    best_epoch: int
    best_metrics: dict[str, Any]
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, Any]]
    seconds: float
    samples_per_second: float

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["checkpoint"] = str(self.checkpoint)
        return out


class TrainProgress(Protocol):
    """Receives progress; the CLI draws a bar with it. Epochs are numbered from 1."""

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None: ...

    def step(self, loss: float, samples_per_second: float) -> None: ...

    def end_epoch(self, epoch: int, record: dict[str, Any]) -> None: ...


# --------------------------------------------------------------------------------------------------------------------
# Model, data, optimisation
# --------------------------------------------------------------------------------------------------------------------


def build_embedder(config: TrainConfig) -> Embedder:
    """The model to train: the backbone of `config.backbone` (with `config.backbone_kwargs`) and a fresh projection
    head of `config.embed_dim`; its data config matches the backbone's input channels."""
    if config.backbone.startswith(RANDOM_PREFIX):
        base = random_embedder(config.backbone[len(RANDOM_PREFIX) :], **config.backbone_kwargs)
    else:
        base = load_embedder(config.backbone, weights=config.weights, device="cpu")
        base.use_channels_last(False)
        if config.backbone_kwargs:
            _rebuild_backbone(base, config.backbone_kwargs)
    if config.embed_dim is None:
        embedder = base
    else:
        embedder = Embedder(
            base.backbone,
            arch=base.arch,
            embed_dim=config.embed_dim,
            spec={"kind": "trained", "name": base.arch, "path": None},
            data_config=dict(base.data_config),
            backbone_kwargs=base.backbone_kwargs,
        )
    if config.image_size is not None:
        _check_fixed_input(embedder, config.image_size)
        channels = embedder.data_config.get("input_size", (3,))[0]
        embedder.data_config["input_size"] = (channels, config.image_size, config.image_size)
    if config.crop_pct is not None:
        embedder.data_config["crop_pct"] = float(config.crop_pct)
    return embedder


def _check_fixed_input(embedder: Embedder, image_size: int) -> None:
    """Refuse an `image_size` the backbone cannot take, before any image is read.

    Every autoencoder kind flattens its input into a Linear layer and `EncoderBackbone` checks the shape, so the
    encoder takes its `input_shape` only. Some timm models (ViTs and other patch-grid nets) also fix their input
    size when built; one zero image through the backbone finds those, since they would fail at the first batch.
    """
    if isinstance(embedder.backbone, EncoderBackbone):
        shape = tuple(embedder.backbone.input_shape)
        if shape[1:] != (image_size, image_size):
            # A non-square input has no square size that fits; its own data config already resizes to it.
            fix = f"set it to {shape[1]} or leave it unset" if shape[1] == shape[2] else "leave it unset"
            raise TrainingError(
                f"image_size {image_size} does not fit backbone {embedder.arch}, whose encoder takes "
                f"{'x'.join(map(str, shape))} images only: {fix}"
            )
        return
    channels = embedder.data_config.get("input_size", (3,))[0]
    backbone = embedder.backbone
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            backbone(torch.zeros(1, channels, image_size, image_size, device=next(backbone.parameters()).device))
    except (AssertionError, RuntimeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TrainingError(
            f"image_size {image_size} does not fit backbone {embedder.arch} ({reason}); a timm ViT takes other "
            "sizes with --backbone-option dynamic_img_size=true, or leave image_size unset"
        ) from None
    finally:
        backbone.train(was_training)


def _rebuild_backbone(embedder: Embedder, options: dict[str, Any]) -> None:
    """Rebuild a loaded backbone with more timm options and carry its weights over (in place).

    A changed `in_chans` adapts the stem as timm does for pretrained weights (`adapt_input_conv`: one channel sums
    the RGB filters); options that change any other weight's shape cannot keep the weights and are refused.
    """
    from timm.models import adapt_input_conv

    kwargs = {**embedder.backbone_kwargs, **options}
    backbone = create_backbone(embedder.arch, **kwargs)
    state = embedder.backbone.state_dict()
    first_conv = (getattr(backbone, "pretrained_cfg", None) or {}).get("first_conv")
    for name in [first_conv] if isinstance(first_conv, str) else list(first_conv or ()):
        key = f"{name}.weight"
        target = backbone.state_dict().get(key)
        if key in state and target is not None and state[key].shape[1] != target.shape[1]:
            state[key] = adapt_input_conv(int(target.shape[1]), state[key])
    # A GeM layer's p starts at the value the options give; a loaded backbone's learnt p stays when they give none.
    fresh = backbone.state_dict()
    gem = {f"{name}.p" for name, m in backbone.named_modules() if isinstance(m, GeM)}
    if GEM_OPTION not in options:
        gem -= set(state)
    try:
        backbone.load_state_dict({**state, **{k: fresh[k] for k in gem}})
    except RuntimeError as exc:
        raise TrainingError(
            f"backbone option(s) {', '.join(sorted(options))} change {embedder.arch}'s weights, so its loaded "
            f"weights do not fit: {str(exc).splitlines()[0]}"
        ) from None
    embedder.backbone = backbone
    embedder.backbone_kwargs = kwargs
    # The config was resolved for the old stem: a changed in_chans changes the channels its transforms give.
    embedder.data_config = channel_data_config(embedder.data_config, kwargs.get("in_chans"))


def _train_transform(
    embedder: Embedder, augment: bool, options: dict[str, Any] | None = None
) -> Callable[[Image.Image], torch.Tensor]:
    if not augment:
        return create_transform(embedder)
    kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in (options or {}).items()}
    try:
        return timm.data.create_transform(**embedder.data_config, is_training=True, **kwargs)  # type: ignore[no-any-return]
    except (TypeError, ValueError, AssertionError) as exc:
        raise TrainingError(f"bad augmentation options {options}: {exc}".splitlines()[0]) from None


def _lr_lambda(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Linear warm-up from ~0 to 1, then half a cosine down to 0 at `total_steps`."""

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def frozen_stages(backbone: nn.Module, stages: int) -> tuple[list[nn.Parameter], list[nn.Module]]:
    """The parameters of a timm backbone's stem and first `stages` layer groups after it, by timm's coarse layer
    groups (EfficientNet, ResNet: one a stage; a ViT: one a block, its stem holding the patch embedding, class token
    and position embedding), and every module wholly inside them (to set to eval mode, dropout included).

    Raises:
        TrainingError: the backbone has no layer groups, or too few for at least one group to train.
    """
    matcher = getattr(backbone, "group_matcher", None)
    if matcher is None:
        raise TrainingError(f"{type(backbone).__name__} has no layer groups (timm's group_matcher): no stages to fix")
    # A GeM layer's p is pooling, not a stage: timm cannot place it and would count it as a layer group of its own.
    pooling = {f"{name}.p" if name else "p" for name, m in backbone.named_modules() if isinstance(m, GeM)}
    grouped = timm.models.group_parameters(backbone, matcher(coarse=True)).values()
    groups = [kept for group in grouped if (kept := [name for name in group if name not in pooling])]
    if stages >= len(groups) - 1:
        raise TrainingError(
            f"freeze_stages {stages} leaves nothing of the backbone to train: it has a stem and {len(groups) - 1} "
            f"layer groups after it, so at most {len(groups) - 2} can stay frozen"
        )
    named = dict(backbone.named_parameters())
    params = [named[name] for group in groups[: stages + 1] for name in group]
    fixed = {id(p) for p in params}
    modules = [m for m in backbone.modules() if (ps := list(m.parameters())) and all(id(p) in fixed for p in ps)]
    return params, modules


def _set_backbone_frozen(embedder: Embedder, frozen: bool, always: list[nn.Parameter]) -> None:
    for param in embedder.backbone.parameters():
        param.requires_grad_(not frozen)
    for param in always:
        param.requires_grad_(False)


def _set_train_mode(
    embedder: Embedder, *, backbone_frozen: bool, freeze_bn: bool, always_frozen: list[nn.Module]
) -> None:
    embedder.train()
    if backbone_frozen:
        # A frozen backbone must not move at all, its BatchNorm running statistics included.
        embedder.backbone.eval()
    elif freeze_bn:
        for module in embedder.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    for module in always_frozen:
        module.eval()


def _recipe_dict(config: TrainConfig) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config)))  # type: ignore[no-any-return]


def _data_summary(train_dataset: Any, val_dataset: Any | None) -> dict[str, Any]:
    """The classes and image counts a run trains and validates on: kept in the checkpoint (so the validation classes
    can be scored again later), and a resumed run must see the same, or it would mix two splits in one run."""

    def part(dataset: Any | None) -> dict[str, Any]:
        if dataset is None:
            return {"classes": [], "images": 0}
        names = getattr(dataset, "classes", None)
        if names is None:
            names = np.unique(np.asarray(dataset.labels)).tolist()
        return {"classes": [str(name) for name in names], "images": len(dataset)}

    return {"train": part(train_dataset), "val": part(val_dataset)}


# --------------------------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------------------------


def train(
    config: TrainConfig,
    train_dataset: Any,
    val_dataset: Any | None,
    out_dir: str | os.PathLike[str],
    progress: TrainProgress | None = None,
    *,
    resume: bool = True,
) -> TrainResult:
    """Fine-tune an Embedder with a metric loss on P x K batches, or on Siamese pairs (`config.sampler == "pairs"`:
    both images of a pair go through the same model, the loss's `pair_loss` scores them); keep the best epoch (by
    validation MAP@R).

    Datasets yield `(PIL image, label)` (their own transform unset: the model's transforms are applied here) and
    carry `labels` `(N,) int64`. Validation holds other classes than training (class-disjoint); without it every
    epoch is kept as the best (the last one wins).

    Writes to `out_dir`: the best model as a simsearch checkpoint (model.safetensors + config.json with "loss",
    "recipe", "metrics"), `history.json`, and `last/state.pt` (model, loss, optimizer, scheduler, epoch) from which
    a later call with the same recipe resumes when `resume`.

    Raises:
        TrainingError: a bad recipe, too few classes, or a `last/` state written by another recipe.
    """
    config.check()
    out = Path(out_dir).expanduser()
    device = resolve_device(config.device)
    seed_everything(config.seed)

    pairs = config.sampler == "pairs"
    train_labels = np.asarray(train_dataset.labels)
    if train_labels.size and train_labels.min() < 0:
        raise TrainingError(f"class labels must be >= 0, the training data have {int(train_labels.min())}")
    num_classes = len(np.unique(train_labels))
    if not pairs and num_classes < config.p:
        raise TrainingError(f"P x K batches need at least p={config.p} training classes, the data have {num_classes}")
    if pairs and num_classes < 2:
        raise TrainingError(f"Siamese pairs need at least two training classes, the data have {num_classes}")
    if val_dataset is not None:
        # Validation scores each image against the others of its class: a class of one image has nothing to find.
        _, val_counts = np.unique(np.asarray(val_dataset.labels), return_counts=True)
        if not (val_counts >= 2).any():
            raise TrainingError("the validation set needs a class with at least two images")

    embedder = build_embedder(config)
    loss_kwargs = dict(config.loss_kwargs)
    if config.distance is not None:
        loss_kwargs["distance"] = config.distance
    try:
        # Labels index the loss's classes (softmax rows, proxies, centres): a gap in them leaves a class unused.
        loss_fn: MetricLoss = create_loss(
            config.loss, num_classes=int(train_labels.max()) + 1, embed_dim=embedder.embed_dim, **loss_kwargs
        )
    except ValueError as exc:
        raise TrainingError(str(exc)) from None
    embedder.to(device)
    loss_fn.to(device)
    # The average is the model that is validated and kept; the trained weights only feed it.
    ema = None if config.ema_decay is None else ModelEmaV3(embedder, decay=config.ema_decay, use_warmup=True)
    kept: Embedder = embedder if ema is None else ema.module

    fixed_params, fixed_modules = (
        ([], []) if not config.freeze_stages else frozen_stages(embedder.backbone, config.freeze_stages)
    )
    fixed = {id(p) for p in fixed_params}
    backbone_params = [p for p in embedder.backbone.parameters() if id(p) not in fixed]
    groups: list[dict[str, Any]] = [
        {"params": backbone_params, "lr": config.lr * config.backbone_lr_mult, "name": "backbone"},
        {"params": list(embedder.head.parameters()), "lr": config.lr, "name": "head"},
    ]
    if loss_has_parameters(config.loss):
        loss_params = [p for p in loss_fn.parameters() if p.requires_grad]
        if loss_params:
            groups.append({"params": loss_params, "lr": config.loss_lr or config.lr, "name": "loss"})
    groups = [g for g in groups if g["params"]]
    if config.freeze_backbone_epochs and all(g["name"] == "backbone" for g in groups):
        raise TrainingError(
            f"nothing to train while the backbone is frozen: {embedder.arch} has no projection head here and loss "
            f"{config.loss!r} no parameters; set embed_dim (a head) or freeze_backbone_epochs 0"
        )
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)

    train_data = TransformedDataset(
        train_dataset,
        _train_transform(embedder, config.augment, config.augment_kwargs),
        embedder,
        replace_unreadable=True,
    )
    sampler: PKSampler | None = None
    pair_data: SiamesePairs | None = None
    if pairs:
        n_pairs = config.pairs_per_epoch or (
            config.batches_per_epoch * config.pair_batch_size if config.batches_per_epoch else len(train_data)
        )
        pair_data = SiamesePairs(train_data, n_pairs, config.positive_fraction, seed=config.seed)
        steps_per_epoch = math.ceil(n_pairs / config.pair_batch_size)
    else:
        sampler = PKSampler(
            train_dataset.labels, config.p, config.k, num_batches=config.batches_per_epoch, seed=config.seed
        )
        steps_per_epoch = len(sampler)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(total_steps, warmup_steps))

    recipe = _recipe_dict(config)
    data_summary = _data_summary(train_dataset, val_dataset)
    start_epoch, best_map, best_epoch, bad_epochs = 0, -math.inf, 0, 0
    best_metrics: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    state_path = out / LAST_DIR / STATE_FILE
    if not resume:
        forget_run(out)
    if resume and state_path.is_file():
        state = _load_state(state_path, recipe, data_summary)
        embedder.load_state_dict(state["model"])
        loss_fn.load_state_dict(state["loss"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best_epoch, bad_epochs = int(state["epoch"]), int(state["best_epoch"]), int(state["bad_epochs"])
        best_map = float(state["best_map"])
        _warn_on_new_schedule(json.loads(state["recipe"]), config, scheduler, steps_per_epoch, warmup_steps)
        if (out / HISTORY_FILE).is_file():
            history = [h for h in json.loads((out / HISTORY_FILE).read_text()) if h["epoch"] <= start_epoch]
        best_metrics = next((h.get("val", {}) for h in history if h["epoch"] == best_epoch), {})
        logger.info("resuming %s after epoch %d (step %d)", out, start_epoch, start_epoch * steps_per_epoch)

    started = time.perf_counter()
    samples_seen = 0
    val_skipped: set[str] = set()
    stopped_early = False
    loss_fn.train()
    for epoch in range(start_epoch + 1, config.epochs + 1):
        if config.patience is not None and bad_epochs >= config.patience:
            stopped_early = True
            break
        frozen = epoch <= config.freeze_backbone_epochs
        _set_backbone_frozen(embedder, frozen, fixed_params)
        _set_train_mode(embedder, backbone_frozen=frozen, freeze_bn=config.freeze_bn, always_frozen=fixed_modules)
        epoch_seed = config.seed * 1_000_003 + epoch
        # Every random draw of an epoch (crops and flips in this process, dropout, the loader) starts from (seed,
        # epoch): a resumed run replays the epochs it missed, not the first one's augmentations.
        seed_everything(epoch_seed)
        generator = torch.Generator().manual_seed(epoch_seed)
        loader: DataLoader[Any]
        if pair_data is not None:
            pair_data.set_epoch(epoch)
            # The pairs are drawn shuffled already; no shuffle here keeps an epoch a function of (seed, epoch).
            loader = DataLoader(
                pair_data,
                batch_size=config.pair_batch_size,
                num_workers=config.workers,
                pin_memory=device.type == "cuda",
                generator=generator,
            )
        elif sampler is not None:
            sampler.set_epoch(epoch)
            loader = DataLoader(
                train_data,
                batch_sampler=sampler,
                num_workers=config.workers,
                pin_memory=device.type == "cuda",
                generator=generator,
            )
        if progress is not None:
            progress.start_epoch(epoch, config.epochs, steps_per_epoch)
        epoch_loss, epoch_samples, epoch_start = 0.0, 0, time.perf_counter()
        for batch in loader:
            loss, n_images = _batch_loss(embedder, loss_fn, batch, device, pairs=pairs)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update(embedder, step=scheduler.last_epoch)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingError(f"the loss became {value} in epoch {epoch}: lower the learning rate")
            epoch_loss += value * n_images
            epoch_samples += n_images
            if progress is not None:
                progress.step(value, epoch_samples / max(time.perf_counter() - epoch_start, 1e-9))
        samples_seen += epoch_samples
        record: dict[str, Any] = {
            "epoch": epoch,
            "loss": epoch_loss / max(epoch_samples, 1),
            "lr": scheduler.get_last_lr()[-1],
            "backbone_frozen": frozen,
            "samples_per_second": epoch_samples / max(time.perf_counter() - epoch_start, 1e-9),
        }
        if val_dataset is not None:
            skipped: list[str] = []
            vectors, val_labels = embed_dataset(
                kept,
                val_dataset,
                batch_size=config.val_batch_size,
                workers=config.workers,
                device=device,
                skipped=skipped,
            )
            for message in sorted(set(skipped) - val_skipped):  # each bad file once per run, not once per epoch
                logger.warning("validation leaves out an unreadable image: %s", message)
            val_skipped.update(skipped)
            try:
                scores = retrieval_metrics(vectors, val_labels, ks=(1,), nmi=False)
            except ValueError as exc:  # NaN embeddings: the model diverged although the loss stayed finite
                raise TrainingError(f"validation after epoch {epoch}: {exc}") from None
            record["val"] = {"recall@1": float(scores["recall@1"]), "map@r": float(scores["map@r"])}
            current = record["val"]["map@r"]
        else:
            current = float(epoch)
        history.append(record)
        improved = current > best_map
        if improved:
            best_map, best_epoch, bad_epochs = current, epoch, 0
            best_metrics = dict(record.get("val", {}))
            save_checkpoint(
                kept,
                out,
                extra_config={
                    "loss": {"name": config.loss, **loss_kwargs},
                    "recipe": recipe,
                    "data": data_summary,
                    "metrics": {"epoch": epoch, **best_metrics},
                },
            )
        else:
            bad_epochs += 1
        logger.info(
            "epoch %d/%d: loss %.4f%s%s",
            epoch,
            config.epochs,
            record["loss"],
            f", val R@1 {record['val']['recall@1']:.4f} MAP@R {record['val']['map@r']:.4f}" if "val" in record else "",
            " (best)" if improved else "",
        )
        # History first: a state never names an epoch that history.json lacks (resuming cuts the rest).
        write_json(out / HISTORY_FILE, history)
        save_state(
            state_path,
            {
                "model": embedder.state_dict(),
                "loss": loss_fn.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                **({} if ema is None else {"ema": ema.state_dict()}),
                "epoch": epoch,
                "best_epoch": best_epoch,
                "best_map": best_map,
                "bad_epochs": bad_epochs,
                "recipe": json.dumps(recipe, sort_keys=True),
                "data": json.dumps(data_summary, sort_keys=True),
            },
        )
        if progress is not None:
            progress.end_epoch(epoch, record)
    seconds = time.perf_counter() - started
    return TrainResult(
        checkpoint=out,
        best_epoch=best_epoch,
        best_metrics=best_metrics,
        epochs_run=len(history),
        stopped_early=stopped_early,
        history=history,
        seconds=seconds,
        samples_per_second=samples_seen / max(seconds, 1e-9),
    )


def _batch_loss(
    embedder: Embedder, loss_fn: MetricLoss, batch: Any, device: torch.device, *, pairs: bool
) -> tuple[torch.Tensor, int]:
    """The loss of one batch and the number of images it ran through the model.

    A pair batch `((x1, x2), y)` goes through the model as one batch of 2B images: the two towers of a Siamese
    network share their weights, so this is the same function (BatchNorm sees both halves together).
    """
    if pairs:
        (first, second), same = batch
        images = torch.cat([first, second]).to(device, non_blocking=True)
        with autocast(device):
            embeddings = embedder(images)
        emb1, emb2 = embeddings.float().split(len(first))
        if not isinstance(loss_fn, PairLoss):
            raise TrainingError(f"{type(loss_fn).__name__} cannot score Siamese pairs")
        return loss_fn.pair_loss(emb1, emb2, same.to(device)), len(images)
    images, labels = batch
    images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
    with autocast(device):
        embeddings = embedder(images)
    return loss_fn(embeddings.float(), labels), len(labels)


def _warn_on_new_schedule(
    saved: dict[str, Any],
    config: TrainConfig,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    steps_per_epoch: int,
    warmup_steps: int,
) -> None:
    """Resuming with another `epochs` is allowed (it extends or shortens a run), but the cosine is recomputed for the
    new length, so the learning rate jumps at the resumed step: say so, with both rates, rather than hide it."""
    old_epochs = int(saved.get("epochs", config.epochs))
    if old_epochs == config.epochs:
        return
    step = int(scheduler.last_epoch)
    old_factor = _lr_lambda(steps_per_epoch * old_epochs, warmup_steps)(step)
    new_factor = _lr_lambda(steps_per_epoch * config.epochs, warmup_steps)(step)
    logger.warning(
        "the run was started for %d epochs and resumes for %d: the learning-rate schedule is recomputed, "
        "so at step %d the rate goes from %.3g to %.3g",
        old_epochs,
        config.epochs,
        step,
        config.lr * old_factor,
        config.lr * new_factor,
    )


def _load_state(path: Path, recipe: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    # weights_only: tensors, numbers, strings and containers only, never arbitrary pickled objects.
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for a damaged file
        raise TrainingError(f"cannot resume from {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    # A key the saved recipe lacks was added to TrainConfig since: the run used its default.
    saved = {**_recipe_dict(TrainConfig()), **json.loads(state.get("recipe", "{}"))}
    changed = sorted(
        k for k in set(saved) | set(recipe) if saved.get(k) != recipe.get(k) and k not in _RESUMABLE_CHANGES
    )
    if changed:
        raise TrainingError(
            f"{path.parent} holds a run with another recipe ({', '.join(changed)} differ): "
            "use another output folder, or delete it to start over"
        )
    saved_data = json.loads(state.get("data", "null"))  # absent in states written before it was kept
    if saved_data is not None and saved_data != data:
        differ = [
            f"{part} {key}"
            for part in ("train", "val")
            for key in ("classes", "images")
            if saved_data[part][key] != data[part][key]
        ]
        raise TrainingError(
            f"{path.parent} holds a run on other data ({', '.join(differ)} differ): "
            "use another output folder, or delete it to start over"
        )
    return state  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------------------------------


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
