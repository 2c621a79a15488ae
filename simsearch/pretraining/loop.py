"""The autoencoder pretraining loop: train any `simsearch.autoencoders` kind on images held in memory (labels only
feed the CVAE), score each epoch on held-out images, keep the best epoch as a checkpoint and every epoch as a
resumable state (`simsearch.runs`), and draw the pictures of the best model."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simsearch.autoencoders import AutoEncoder
from simsearch.models import resolve_device
from simsearch.pretraining.data import PretrainData, data_summary, load_data
from simsearch.pretraining.model import build, load_autoencoder, make_optimizers, save
from simsearch.pretraining.recipe import RESUMABLE_FIELDS, PretrainConfig, PretrainError, PretrainResult
from simsearch.runs import Best, EpochProgress, RunFolder, RunIdentity, Throughput, recipe_dict, seed_everything

__all__ = ["PICTURES_DIR", "pretrain"]

logger = logging.getLogger(__name__)

PICTURES_DIR = "pictures"


def pretrain(
    config: PretrainConfig,
    train_data: Any,
    out_dir: str | os.PathLike[str],
    *,
    progress: EpochProgress | None = None,
    val_data: Any | None = None,
    resume: bool = True,
    pictures: bool = True,
) -> PretrainResult:
    """Train an autoencoder on images and keep the epoch of lowest validation loss as a checkpoint.

    Datasets yield `(PIL image or uint8 array, label)` and may carry `labels` `(N,)` and `classes`; the images are
    converted once to `(C, S, S)` in [0, 1] (the checkpoint's own eval transform) and held in memory. Labels only
    feed the CVAE (whose `val_data` must have the training classes) and the pictures. Without `val_data`,
    `config.val_fraction` of the images is held out; without either, the training loss chooses the best epoch.

    Writes to `out_dir`: `model.safetensors` + `config.json` (the encoder as an embedding model, with "autoencoder",
    "recipe", "metrics" and "classes"), `autoencoder.safetensors` (every weight), `history.json`, `last/state.pt`
    (from which a later call with the same recipe and data resumes when `resume`), and `pictures/*.png` when
    `pictures` (a restart removes the old ones).

    Raises:
        PretrainError: a bad recipe or data, a `last/` state written by another recipe or on other data, or a loss
            that became NaN or infinite.
    """
    config.check()
    out = Path(out_dir).expanduser()
    device = resolve_device(config.device)
    seed_everything(config.seed)
    data = load_data(config, train_data, val_data)
    ae = build(config, tuple(data.train_x.shape[1:]), data.num_classes)  # type: ignore[arg-type]
    ae.to(device)
    optimizers = make_optimizers(ae, config)
    run = RunFolder(out, _identity(config, data), resume=resume)
    if not resume:
        # The old run's pictures show its model: a restart (maybe of another kind) must not leave them beside new ones.
        for old in (out / PICTURES_DIR).glob("*.png"):
            old.unlink(missing_ok=True)
    best = Best(higher_is_better=False)
    start_epoch = _resume(run, ae, optimizers, best, device)
    out.mkdir(parents=True, exist_ok=True)
    throughput = _run_epochs(config, run, ae, optimizers, data, best, start_epoch, device, progress)
    written = _write_pictures(out, data, device, config.seed) if pictures and best.epoch else []
    return PretrainResult(
        checkpoint=out,
        best_epoch=best.epoch,
        monitor=f"{'val' if data.val_x is not None else 'train'} {_monitor_key(ae.kind)}",
        best_value=best.value,
        epochs_run=len(run.history),
        history=run.history,
        seconds=throughput.seconds,
        samples_per_second=throughput.per_second,
        pictures=written,
    )


# --------------------------------------------------------------------------------------------------------------------
# The steps
# --------------------------------------------------------------------------------------------------------------------


def _identity(config: PretrainConfig, data: PretrainData) -> RunIdentity:
    return RunIdentity(
        recipe=recipe_dict(config),
        data=data_summary(data),
        defaults=recipe_dict(PretrainConfig()),
        resumable=RESUMABLE_FIELDS,
        data_keys=("images", "shape", "classes", "content"),
        error=PretrainError,
        start_over="restart",
    )


def _resume(
    run: RunFolder, ae: AutoEncoder, optimizers: list[torch.optim.Optimizer], best: Best, device: torch.device
) -> int:
    """Load the saved state of this run, if any; return the last epoch it finished (0: none)."""
    state = run.saved_state()
    if state is None:
        return 0
    try:
        ae.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise PretrainError(f"{run.state_path} does not fit this model: {str(exc).splitlines()[0]}") from None
    for optimizer, saved in zip(optimizers, state["optimizers"], strict=True):
        optimizer.load_state_dict(saved)
    _set_rng_state(state["rng"], device)
    best.epoch, best.value = int(state["best_epoch"]), float(state["best_value"])
    return int(state["epoch"])


def _run_epochs(
    config: PretrainConfig,
    run: RunFolder,
    ae: AutoEncoder,
    optimizers: list[torch.optim.Optimizer],
    data: PretrainData,
    best: Best,
    start_epoch: int,
    device: torch.device,
    progress: EpochProgress | None,
) -> Throughput:
    monitor = _monitor_key(ae.kind)
    throughput = Throughput()
    ae.train()
    for epoch in range(start_epoch + 1, config.epochs + 1):
        record = _train_epoch(config, ae, optimizers, data, epoch, device, progress)
        throughput.add(record.pop("samples"))
        current = record["train"][monitor]
        if data.val_x is not None and data.val_y is not None:
            record["val"] = _evaluate(ae, data.val_x, data.val_y, config.batch_size, device, config.seed)
            record["val_loss"] = record["val"]["loss"]
            current = record["val"][monitor]
        if not math.isfinite(current):
            # A step can diverge after its own loss was measured: then only the validation (or mean) loss shows it.
            split = "validation" if "val" in record else "training"
            what = "pixel error" if monitor == "pixel" else "loss"
            raise PretrainError(f"the {split} {what} became {current} in epoch {epoch}: lower the learning rate")
        record["monitor"] = current
        improved = best.update(epoch, current)
        if improved:
            metrics = {"epoch": epoch, "monitor": monitor, "value": current, **record.get("val", {})}
            save(ae, run.out, {"recipe": run.identity.recipe, "metrics": metrics, "classes": data.classes})
        state = {
            "model": ae.state_dict(),
            "optimizers": [o.state_dict() for o in optimizers],
            "rng": _rng_state(device),
            "best_epoch": best.epoch,
            "best_value": best.value,
        }
        val = f", val loss {record['val_loss']:.5f}" if "val_loss" in record else ""
        run.end_epoch(record, state, summary=f"loss {record['loss']:.5f}{val}", improved=improved)
        if progress is not None:
            progress.end_epoch(epoch, record)
    return throughput


def _train_epoch(
    config: PretrainConfig,
    ae: AutoEncoder,
    optimizers: list[torch.optim.Optimizer],
    data: PretrainData,
    epoch: int,
    device: torch.device,
    progress: EpochProgress | None,
) -> dict[str, Any]:
    """One epoch over the training images; its record (and the images it saw, under "samples")."""
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    batches = _batches(len(data.train_x), config.batch_size, generator)
    if progress is not None:
        progress.start_epoch(epoch, config.epochs, len(batches))
    sums: dict[str, float] = {}
    seen = Throughput()
    for idx in batches:
        x, y = _to_device(data.train_x[idx], data.train_y[idx], device)
        labels = y if ae.conditional else None
        terms = ae.loss(x, labels)
        optimizers[0].zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizers[0].step()
        if len(optimizers) > 1:
            disc = ae.discriminator_loss(x, labels)  # type: ignore[operator]
            optimizers[1].zero_grad(set_to_none=True)
            disc["loss"].backward()
            optimizers[1].step()
            terms = {**terms, **{f"disc_{k}": v for k, v in disc.items()}}
        value = float(terms["loss"].detach())
        if not math.isfinite(value):
            raise PretrainError(f"the loss became {value} in epoch {epoch}: lower the learning rate")
        for key, term in terms.items():
            sums[key] = sums.get(key, 0.0) + float(term.detach()) * len(idx)
        seen.add(len(idx))
        if progress is not None:
            progress.step(value, seen.per_second)
    return {
        "epoch": epoch,
        "loss": sums["loss"] / seen.samples,
        "train": {k: v / seen.samples for k, v in sums.items()},
        "samples_per_second": seen.per_second,
        "samples": seen.samples,
    }


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled index batches; a last batch of one image joins the one before (BatchNorm needs two)."""
    order = torch.randperm(n, generator=generator)
    chunks = list(order.split(batch_size))
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        chunks[-2] = torch.cat([chunks[-2], chunks.pop()])
    return chunks


def _to_device(x: torch.Tensor, y: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return x.to(device, non_blocking=True).float().div_(255.0), y.to(device, non_blocking=True)


def _monitor_key(kind: str) -> str:
    # The VAE-GAN's loss measures reconstructions in the discriminator's features, which move as the
    # discriminator trains: epochs are compared on the pixel error instead.
    return "pixel" if kind == "vaegan" else "loss"


@torch.no_grad()
def _evaluate(
    ae: AutoEncoder, x: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device, seed: int
) -> dict[str, float]:
    """Mean loss terms over `x` in eval mode, with a private seeded RNG (VAE-GAN prior draws) that leaves the
    training RNG untouched, so a resumed run draws the same numbers as an uninterrupted one."""
    ae.eval()
    sums: dict[str, float] = {}
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for start in range(0, len(x), batch_size):
            xb, yb = _to_device(x[start : start + batch_size], y[start : start + batch_size], device)
            terms = ae.loss(xb, yb if ae.conditional else None)
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + float(value) * len(xb)
    ae.train()
    return {key: value / len(x) for key, value in sums.items()}


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# Images shown in the pictures: the latent scatter uses up to this many; the grids a handful.
_PICTURE_IMAGES = 2000


def _write_pictures(out: Path, data: PretrainData, device: torch.device, seed: int) -> list[Path]:
    """The best checkpoint's pictures for its kind, drawn on validation images (training images without them)."""
    from simsearch.ae_pictures import write_pictures

    if data.val_x is not None and data.val_y is not None:
        x, y, classes = data.val_x, data.val_y, data.val_classes
    else:
        x, y, classes = data.train_x, data.train_y, data.classes
    if len(x) > _PICTURE_IMAGES:
        keep = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(len(x), _PICTURE_IMAGES, replace=False)))
        x, y = x[keep], y[keep]
    ae = load_autoencoder(out, device=device)
    try:
        return write_pictures(ae, x.float() / 255.0, y.numpy(), out / PICTURES_DIR, classes=classes or None, seed=seed)
    except Exception:  # noqa: BLE001 - a picture that fails must not lose a finished run
        logger.warning("could not draw the pictures of %s", out, exc_info=True)
        return []
