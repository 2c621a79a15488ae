"""The autoencoder pretraining recipe (`PretrainConfig`), checked before any work, and what a run produced."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simsearch.autoencoders import KINDS
from simsearch.errors import PretrainError

__all__ = ["RESUMABLE_FIELDS", "PretrainConfig", "PretrainError", "PretrainResult"]

# Fields that may change between an interrupted run and its resumption without changing what is trained.
RESUMABLE_FIELDS = frozenset({"epochs", "device", "workers"})


@dataclass
class PretrainConfig:
    """An autoencoder pretraining recipe; JSON-able (`dataclasses.asdict`), stored in the checkpoint as "recipe".

    Attributes:
        kind: one of `simsearch.autoencoders.KINDS`.
        code_dim: size of the code, which is the embedding dimension of the checkpoint.
        image_size: square side the images are resized (shorter side) and centre-cropped to; None = the first
            image's shorter side (64 when that exceeds 128).
        channels: 1 (grey) or 3 (RGB); None = the first image's (grey modes give 1).
        epochs, batch_size, lr: Adam on every parameter (the VAE-GAN's discriminator has its own Adam, `disc_lr`).
        disc_lr: the VAE-GAN discriminator's learning rate; None = `lr`.
        decoder_weight_decay: L2 on the decoder's parameters; None = 1e-4 for an L1 sparse model, else 0.
        seed: model initialisation, batch order, noise and the validation split.
        val_fraction: share of the images held out for the validation loss when no `val_data` is given.
        max_images: train on a seeded random subset of this many images (before the validation split).
        device: "auto", "cpu", "cuda"...
        workers: decoding processes used once, when the images are read into memory.
        options: the kind's own options (`build_autoencoder`): arch, channels, hidden, decoder, noise, noise_level,
            block, beta, sparsity, weight, rho, recon, gan_weight, pixel_weight.
    """

    kind: str = "conv"
    code_dim: int = 32
    image_size: int | None = None
    channels: int | None = None
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    disc_lr: float | None = None
    decoder_weight_decay: float | None = None
    seed: int = 0
    val_fraction: float = 0.1
    max_images: int | None = None
    device: str = "auto"
    workers: int = 0
    options: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Raise PretrainError for a recipe that cannot run."""
        if self.kind not in KINDS:
            raise PretrainError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        for name in ("code_dim", "epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PretrainError(f"{name} must be a positive integer, got {value!r}")
        if self.batch_size < 2:
            raise PretrainError("batch_size must be >= 2 (BatchNorm needs two images per batch)")
        if self.image_size is not None and (not isinstance(self.image_size, int) or self.image_size < 4):
            raise PretrainError(f"image_size must be an integer >= 4, got {self.image_size!r}")
        if self.channels not in (None, 1, 3):
            raise PretrainError(f"channels must be 1 (grey) or 3 (RGB), got {self.channels!r}")
        if not self.lr > 0 or (self.disc_lr is not None and not self.disc_lr > 0):
            raise PretrainError("lr and disc_lr must be > 0")
        if self.decoder_weight_decay is not None and self.decoder_weight_decay < 0:
            raise PretrainError(f"decoder_weight_decay must be >= 0, got {self.decoder_weight_decay}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise PretrainError(f"seed must be an integer >= 0, got {self.seed!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise PretrainError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.max_images is not None and self.max_images < 2:
            raise PretrainError(f"max_images must be >= 2, got {self.max_images}")
        if self.workers < 0:
            raise PretrainError(f"workers must be >= 0, got {self.workers}")
        if not isinstance(self.options, dict):
            raise PretrainError(f"options must be a dict, got {type(self.options).__name__}")


@dataclass
class PretrainResult:
    """What a run produced. `checkpoint` is `out_dir`: the best epoch's model, loadable by `load_embedder`.

    `monitor` names the number that chose the best epoch (`best_value`, lower is better).
    """

    checkpoint: Path
    best_epoch: int
    monitor: str
    best_value: float
    epochs_run: int
    history: list[dict[str, Any]]
    seconds: float
    samples_per_second: float
    pictures: list[Path] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["checkpoint"] = str(self.checkpoint)
        out["pictures"] = [str(p) for p in self.pictures]
        return out
