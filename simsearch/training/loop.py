"""The metric-learning loop: fine-tune an Embedder with P x K batches (or explicit Siamese pairs) and a metric loss,
validate on other classes each epoch (scored as `simsearch.evaluation` scores a model), stop early, keep the best
epoch as a checkpoint and every epoch as a resumable state (`simsearch.runs`)."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from timm.utils import ModelEmaV3
from torch import nn

from simsearch.evaluation import TransformedDataset
from simsearch.losses import MetricLoss, create_loss
from simsearch.models import Embedder, resolve_device, save_checkpoint
from simsearch.runs import (
    Best,
    EpochProgress,
    RunFolder,
    RunIdentity,
    Throughput,
    recipe_dict,
    seed_everything,
)
from simsearch.training.batches import EpochBatches, TransformedOnce, batch_loss
from simsearch.training.model import (
    build_embedder,
    frozen_stages,
    make_optimizer,
    set_backbone_frozen,
    set_train_mode,
    train_transform,
)
from simsearch.training.plan import RunPlan
from simsearch.training.recipe import RESUMABLE_FIELDS, TrainConfig, TrainingError
from simsearch.training.schedule import WarmupCosine, warn_on_new_schedule
from simsearch.training.validation import Validation, make_validation

__all__ = ["TrainProgress", "TrainResult", "train"]

logger = logging.getLogger(__name__)


class TrainProgress(EpochProgress, Protocol):
    """Receives a run's progress (the CLI draws a bar with it): the protocol of both loops, and two optional calls
    that a progress object may leave out. `start_run(plan)` comes before any batch (`RunPlan`: the data, split,
    batches and device); `before_training(scores)` gives the validation scores of the model as it starts (epoch 0),
    before the first epoch of a fresh run."""


@dataclass
class TrainResult:
    """What a run produced. `checkpoint` is `out_dir` itself: the best epoch's model, loadable by `load_embedder`.
    `history` holds the trained epochs (from 1); `before_training` the validation scores of the starting model
    (epoch 0 of history.json; empty without validation)."""

    checkpoint: Path
    best_epoch: int
    best_metrics: dict[str, Any]
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, Any]]
    seconds: float
    samples_per_second: float
    before_training: dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["checkpoint"] = str(self.checkpoint)
        return out


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
    "recipe", "metrics"), `history.json` (with validation, its first record is epoch 0: the scores before training),
    and `last/state.pt` (model, loss, optimizer, scheduler, epoch) from which a later call with the same recipe
    resumes when `resume`.

    Raises:
        TrainingError: a bad recipe, too few classes, or a `last/` state written by another recipe.
    """
    config.check()
    device = resolve_device(config.device)
    seed_everything(config.seed)
    validation = make_validation(config, val_dataset, device)
    num_labels = _check_data(config, train_dataset, validation)
    parts = _Parts.build(config, train_dataset, num_labels, device)
    data = _data_summary(train_dataset, val_dataset)
    run = RunFolder(Path(out_dir).expanduser(), _identity(config, data), resume=resume)
    best = Best(higher_is_better=True)
    start_epoch = _resume(parts, run, best)
    plan = _plan(parts, data, validation, start_epoch)
    logger.info("%s", plan.describe())
    _optional_call(progress, "start_run", plan)
    return _run_epochs(parts, run, best, start_epoch, validation, data, progress)


# --------------------------------------------------------------------------------------------------------------------
# The steps
# --------------------------------------------------------------------------------------------------------------------


def _check_data(config: TrainConfig, train_dataset: Any, validation: Validation | None) -> int:
    """Refuse data the recipe cannot train on, before any model is built; return the number of loss classes (labels
    index the loss's classes: softmax rows, proxies, centres; a gap in them leaves a class unused)."""
    train_labels = np.asarray(train_dataset.labels)
    if train_labels.size and train_labels.min() < 0:
        raise TrainingError(f"class labels must be >= 0, the training data have {int(train_labels.min())}")
    num_classes = len(np.unique(train_labels))
    if config.sampler == "pk" and num_classes < config.p:
        raise TrainingError(f"P x K batches need at least p={config.p} training classes, the data have {num_classes}")
    if config.sampler == "pairs" and num_classes < 2:
        raise TrainingError(f"Siamese pairs need at least two training classes, the data have {num_classes}")
    if validation is not None:
        validation.check()
    return int(train_labels.max()) + 1


def _plan(parts: _Parts, data: dict[str, Any], validation: Validation | None, start_epoch: int) -> RunPlan:
    config = parts.config
    return RunPlan(
        train_classes=len(data["train"]["classes"]),
        train_images=data["train"]["images"],
        val_classes=len(data["val"]["classes"]),
        val_images=data["val"]["images"],
        val_protocol=validation.protocol if validation is not None else "",
        epochs=config.epochs,
        start_epoch=start_epoch,
        steps_per_epoch=parts.batches.steps_per_epoch,
        batch=f"{config.pair_batch_size} pairs" if config.sampler == "pairs" else f"{config.p} classes x {config.k}",
        device=str(parts.device),
        threads=torch.get_num_threads(),
    )


def _optional_call(progress: TrainProgress | None, name: str, *args: Any) -> None:
    """Call one of the progress calls that a progress object may leave out (see `TrainProgress`)."""
    method = getattr(progress, name, None)
    if method is not None:
        method(*args)


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


def _identity(config: TrainConfig, data: dict[str, Any]) -> RunIdentity:
    return RunIdentity(
        recipe=recipe_dict(config),
        data=data,
        defaults=recipe_dict(TrainConfig()),
        resumable=RESUMABLE_FIELDS,
        data_keys=("classes", "images"),
        error=TrainingError,
        start_over="delete it",
    )


@dataclass
class _Parts:
    """Everything a run trains and steps: the model (and its moving average), the loss, the optimizer, the schedule,
    the parts kept fixed, and the batches."""

    config: TrainConfig
    device: torch.device
    embedder: Embedder
    loss_fn: MetricLoss
    loss_kwargs: dict[str, Any]
    ema: ModelEmaV3 | None
    fixed_params: list[nn.Parameter]
    fixed_modules: list[nn.Module]
    optimizer: torch.optim.Optimizer
    batches: EpochBatches
    schedule: WarmupCosine

    @classmethod
    def build(cls, config: TrainConfig, train_dataset: Any, num_labels: int, device: torch.device) -> _Parts:
        embedder = build_embedder(config)
        loss_kwargs = dict(config.loss_kwargs)
        if config.distance is not None:
            loss_kwargs["distance"] = config.distance
        try:
            loss_fn = create_loss(config.loss, num_classes=num_labels, embed_dim=embedder.embed_dim, **loss_kwargs)
        except ValueError as exc:
            raise TrainingError(str(exc)) from None
        embedder.to(device)
        loss_fn.to(device)
        # The average is the model that is validated and kept; the trained weights only feed it.
        ema = None if config.ema_decay is None else ModelEmaV3(embedder, decay=config.ema_decay, use_warmup=True)
        fixed_params, fixed_modules = (
            ([], []) if not config.freeze_stages else frozen_stages(embedder.backbone, config.freeze_stages)
        )
        optimizer = make_optimizer(config, embedder, loss_fn, fixed_params)
        transform = train_transform(embedder, config.augment, config.augment_kwargs)
        transformed = TransformedDataset(train_dataset, transform, embedder, replace_unreadable=True)
        input_size = tuple(embedder.data_config.get("input_size", (3, 224, 224)))
        once = TransformedOnce.fits(config, transformed, input_size)
        batches = EpochBatches(config, TransformedOnce(transformed) if once else transformed, device)
        steps = batches.steps_per_epoch
        schedule = WarmupCosine(optimizer, steps * config.epochs, round(config.warmup_epochs * steps))
        return cls(
            config,
            device,
            embedder,
            loss_fn,
            loss_kwargs,
            ema,
            fixed_params,
            fixed_modules,
            optimizer,
            batches,
            schedule,
        )

    @property
    def kept(self) -> Embedder:
        """The model that is validated and checkpointed: the moving average when there is one."""
        return self.embedder if self.ema is None else self.ema.module  # type: ignore[no-any-return]

    def state(self, best: Best) -> dict[str, Any]:
        return {
            "model": self.embedder.state_dict(),
            "loss": self.loss_fn.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            **({} if self.ema is None else {"ema": self.ema.state_dict()}),
            "best_epoch": best.epoch,
            "best_map": best.value,
            "bad_epochs": best.bad_epochs,
        }

    def load(self, state: dict[str, Any], best: Best) -> None:
        self.embedder.load_state_dict(state["model"])
        self.loss_fn.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.schedule.load_state_dict(state["scheduler"])
        best.epoch, best.bad_epochs, best.value = int(state["best_epoch"]), int(state["bad_epochs"]), state["best_map"]


def _resume(parts: _Parts, run: RunFolder, best: Best) -> int:
    """Load the saved state of this run, if any; return the last epoch it finished (0: none)."""
    state = run.saved_state()
    if state is None:
        return 0
    parts.load(state, best)
    saved_epochs = int(json.loads(state["recipe"]).get("epochs", parts.config.epochs))
    warn_on_new_schedule(
        saved_epochs, parts.config.epochs, parts.config.lr, parts.schedule, parts.batches.steps_per_epoch
    )
    return int(state["epoch"])


def _run_epochs(
    parts: _Parts,
    run: RunFolder,
    best: Best,
    start_epoch: int,
    validation: Validation | None,
    data: dict[str, Any],
    progress: TrainProgress | None,
) -> TrainResult:
    config = parts.config
    best_metrics: dict[str, Any] = next((h.get("val", {}) for h in run.history if h["epoch"] == best.epoch), {})
    if validation is not None and start_epoch == 0:
        # The starting model's scores, the point every epoch's gain is read from. Kept in memory until the first
        # epoch writes the history with it: a run stopped before then leaves nothing behind to resume.
        run.history.append({"epoch": 0, "val": validation.score(parts.kept, 0)})
        _optional_call(progress, "before_training", run.history[0]["val"])
    throughput = Throughput()
    stopped_early = False
    parts.loss_fn.train()
    for epoch in range(start_epoch + 1, config.epochs + 1):
        if config.patience is not None and best.bad_epochs >= config.patience:
            stopped_early = True
            break
        record = _train_epoch(parts, epoch, progress)
        throughput.add(record.pop("samples"))
        if validation is not None:
            record["val"] = validation.score(parts.kept, epoch)
        improved = best.update(epoch, record["val"]["map@r"] if "val" in record else float(epoch))
        if improved:
            best_metrics = dict(record.get("val", {}))
            extra = {"loss": {"name": config.loss, **parts.loss_kwargs}, "recipe": run.identity.recipe, "data": data}
            save_checkpoint(parts.kept, run.out, extra_config={**extra, "metrics": {"epoch": epoch, **best_metrics}})
        val = f", val R@1 {record['val']['recall@1']:.4f} MAP@R {record['val']['map@r']:.4f}" if "val" in record else ""
        run.end_epoch(record, parts.state(best), summary=f"loss {record['loss']:.4f}{val}", improved=improved)
        if progress is not None:
            progress.end_epoch(epoch, record)
    trained = [h for h in run.history if h["epoch"] >= 1]
    return TrainResult(
        checkpoint=run.out,
        best_epoch=best.epoch,
        best_metrics=best_metrics,
        epochs_run=len(trained),
        stopped_early=stopped_early,
        history=trained,
        seconds=throughput.seconds,
        samples_per_second=throughput.per_second,
        before_training=next((dict(h.get("val", {})) for h in run.history if h["epoch"] == 0), {}),
    )


def _train_epoch(parts: _Parts, epoch: int, progress: TrainProgress | None) -> dict[str, Any]:
    """One epoch of optimizer steps; its record (and the samples it saw, under "samples")."""
    config, embedder = parts.config, parts.embedder
    frozen = epoch <= config.freeze_backbone_epochs
    set_backbone_frozen(embedder, frozen, parts.fixed_params)
    set_train_mode(embedder, backbone_frozen=frozen, freeze_bn=config.freeze_bn, always_frozen=parts.fixed_modules)
    epoch_seed = config.seed * 1_000_003 + epoch
    # Every random draw of an epoch (crops and flips in this process, dropout, the loader) starts from (seed,
    # epoch): a resumed run replays the epochs it missed, not the first one's augmentations.
    seed_everything(epoch_seed)
    loader = parts.batches.loader(epoch, torch.Generator().manual_seed(epoch_seed))
    if progress is not None:
        progress.start_epoch(epoch, config.epochs, parts.batches.steps_per_epoch)
    seen, epoch_loss = Throughput(), 0.0
    for batch in loader:
        loss, n_images = batch_loss(embedder, parts.loss_fn, batch, parts.device, pairs=config.sampler == "pairs")
        parts.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        parts.optimizer.step()
        parts.schedule.step()
        if parts.ema is not None:
            parts.ema.update(embedder, step=parts.schedule.last_epoch)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingError(f"the loss became {value} in epoch {epoch}: lower the learning rate")
        epoch_loss += value * n_images
        seen.add(n_images)
        if progress is not None:
            progress.step(value, seen.per_second)
    return {
        "epoch": epoch,
        "loss": epoch_loss / max(seen.samples, 1),
        "lr": parts.schedule.get_last_lr()[-1],
        "backbone_frozen": frozen,
        "samples_per_second": seen.per_second,
        "samples": seen.samples,
    }
