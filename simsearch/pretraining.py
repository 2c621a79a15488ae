"""Autoencoder pretraining: a recipe (`PretrainConfig`), the loop that trains any `simsearch.autoencoders` kind on
unlabelled images (labels only feed the CVAE), per-epoch validation loss, the best checkpoint, a resumable `last/`
state, and the pictures. The checkpoint is also an embedding model: `load_embedder(folder)` gives its encoder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import timm.data
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from simsearch.autoencoders import KINDS, AutoEncoder, autoencoder_from_config, build_autoencoder, encoder_backbone
from simsearch.errors import ModelError, PretrainError
from simsearch.models import Embedder, resolve_device, save_checkpoint
from simsearch.models.registry import AE_BACKBONE_PREFIX, CHECKPOINT_CONFIG, ae_data_config
from simsearch.runs import HISTORY_FILE, LAST_DIR, STATE_FILE, forget_run, save_state, seed_everything, write_json
from simsearch.training import TrainProgress

__all__ = [
    "AE_WEIGHTS",
    "PICTURES_DIR",
    "PretrainConfig",
    "PretrainError",
    "PretrainResult",
    "images_to_tensor",
    "load_autoencoder",
    "pretrain",
]

logger = logging.getLogger(__name__)

# The full autoencoder (decoder and discriminator too) beside the checkpoint's encoder-only model.safetensors.
AE_WEIGHTS = "autoencoder.safetensors"
PICTURES_DIR = "pictures"
# Fields that may change between an interrupted run and its resumption without changing what is trained.
_RESUMABLE_CHANGES = frozenset({"epochs", "device", "workers"})
# Without an image_size, images larger than this train at _LARGE_IMAGE_SIDE (photos would otherwise train at
# thousands of pixels a side).
_MAX_DEFAULT_SIDE = 128
_LARGE_IMAGE_SIDE = 64
# The decoded training set lives in memory as uint8; beyond this the run is refused with a hint instead of swapping.
_MAX_MEMORY_BYTES = 4 << 30
# The L1 sparse code can shrink while the decoder's weights grow to undo it; a little weight decay there stops it.
_SPARSE_DECODER_WEIGHT_DECAY = 1e-4


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


# --------------------------------------------------------------------------------------------------------------------
# Data: any labelled image dataset -> uint8 (N, C, S, S) in memory
# --------------------------------------------------------------------------------------------------------------------


def _as_pil(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, np.ndarray) and image.dtype == np.uint8:
        return Image.fromarray(image)
    raise PretrainError(f"datasets must yield PIL images or uint8 arrays, got {type(image).__name__}")


def _default_shape(dataset: Any, config: PretrainConfig) -> tuple[int, int, int]:
    """`(C, S, S)` from the config, else from the first image."""
    channels, size = config.channels, config.image_size
    if channels is None or size is None:
        first = _as_pil(dataset[0][0])
        if channels is None:
            channels = 1 if first.mode in ("1", "L", "LA", "I", "I;16", "F") else 3
        if size is None:
            size = min(first.size)
            if size > _MAX_DEFAULT_SIDE:
                logger.info("images of %d px train at %d px (set image_size to choose)", size, _LARGE_IMAGE_SIDE)
                size = _LARGE_IMAGE_SIDE
    return int(channels), int(size), int(size)


class _Uint8Images(Dataset):
    """Items of `dataset` through the checkpoint's own eval transform, as uint8 `(C, S, S)` tensors.

    The embedding path (`create_transform` of the saved data config) is the same transform, so what the encoder
    sees at search time matches what it was trained on, pixel for pixel.
    """

    def __init__(self, dataset: Any, indices: np.ndarray, shape: tuple[int, int, int]) -> None:
        self.dataset = dataset
        self.indices = indices
        self.mode = "L" if shape[0] == 1 else "RGB"
        self.transform = timm.data.create_transform(**ae_data_config(shape), is_training=False)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = _as_pil(self.dataset[int(self.indices[index])][0])
        if image.mode != self.mode:
            image = image.convert(self.mode)
        # ToTensor gives k / 255 exactly, so the round trip to uint8 loses nothing.
        return (self.transform(image) * 255.0).round_().to(torch.uint8)


def images_to_tensor(
    dataset: Any, shape: tuple[int, int, int], *, indices: np.ndarray | None = None, workers: int = 0
) -> torch.Tensor:
    """Decode `dataset` (items `(PIL image or uint8 array, label)`) into memory.

    Returns:
        `(N, C, S, S) uint8`, in `indices` order (default: all).
    """
    idx = np.arange(len(dataset)) if indices is None else np.asarray(indices)
    need = len(idx) * math.prod(shape)
    if need > _MAX_MEMORY_BYTES:
        raise PretrainError(
            f"{len(idx)} images of {'x'.join(map(str, shape))} need {need / 2**30:.1f} GiB in memory: "
            "use a smaller image_size or max_images"
        )
    out = torch.empty((len(idx), *shape), dtype=torch.uint8)
    loader = DataLoader(_Uint8Images(dataset, idx, shape), batch_size=256, num_workers=workers)
    start = 0
    for batch in loader:
        out[start : start + len(batch)] = batch
        start += len(batch)
    return out


def _labels(dataset: Any) -> np.ndarray:
    labels = getattr(dataset, "labels", None)
    if labels is None:
        return np.asarray([int(dataset[i][1]) for i in range(len(dataset))], dtype=np.int64)
    return np.asarray(labels, dtype=np.int64)


@dataclass
class _Data:
    """The run's images in memory: uint8 `(N, C, S, S)` and int64 `(N,)` labels for training and validation.

    `classes` names the training labels (and the CVAE's conditions); `val_classes` the validation labels, which
    index another class list when `val_data` has its own (empty: unnamed).
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor | None
    val_y: torch.Tensor | None
    classes: list[str]
    num_classes: int
    val_classes: list[str]


def _load_data(config: PretrainConfig, train_data: Any, val_data: Any | None) -> _Data:
    if len(train_data) < 2:
        raise PretrainError(f"pretraining needs at least two images, got {len(train_data)}")
    shape = _default_shape(train_data, config)
    labels = _labels(train_data)
    rng = np.random.default_rng(config.seed)
    indices = np.arange(len(train_data))
    if config.max_images is not None and config.max_images < len(indices):
        indices = np.sort(rng.choice(len(indices), size=config.max_images, replace=False))
    val_idx = np.empty(0, dtype=np.int64)
    if val_data is None and config.val_fraction > 0:
        order = rng.permutation(len(indices))
        n_val = max(1, round(len(indices) * config.val_fraction))
        if len(indices) - n_val < 2:
            raise PretrainError(f"{len(indices)} images are too few to hold {n_val} out for validation")
        val_idx, indices = np.sort(indices[order[:n_val]]), np.sort(indices[order[n_val:]])
    logger.info("reading %d images as %s", len(indices) + len(val_idx), "x".join(map(str, shape)))
    train_x = images_to_tensor(train_data, shape, indices=indices, workers=config.workers)
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    if val_data is not None:
        if len(val_data) < 1:
            raise PretrainError("the validation set is empty")
        val_x = images_to_tensor(val_data, shape, workers=config.workers)
        val_y = torch.from_numpy(_labels(val_data))
    elif len(val_idx):
        val_x = images_to_tensor(train_data, shape, indices=val_idx, workers=config.workers)
        val_y = torch.from_numpy(labels[val_idx])
    classes = [str(c) for c in getattr(train_data, "classes", [])]
    num_classes = max(len(classes), int(labels.max()) + 1 if len(labels) else 0)
    val_classes = classes
    if val_data is not None:
        val_names = getattr(val_data, "classes", None)
        if val_names is not None:
            val_classes = [str(c) for c in val_names]
        elif config.kind != "cvae":
            val_classes = []  # unnamed labels: the training names could be anybody's
    if config.kind == "cvae" and val_y is not None:
        # The CVAE is conditioned on a training label: validating it on another class list's labels is meaningless.
        if classes and val_classes and val_classes != classes:
            raise PretrainError(
                "a cvae validates on the training classes, and the validation set has other ones: "
                "give it the training set's class list"
            )
        if len(val_y) and int(val_y.max()) >= num_classes:
            raise PretrainError("a cvae validates on the training classes: the validation set has other labels")
    return _Data(train_x, torch.from_numpy(labels[indices]), val_x, val_y, classes, max(num_classes, 1), val_classes)


def _fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    """A digest of every pixel and label: hashing is about 1 GB/s, little next to decoding the images."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(x.contiguous().numpy().data)
    digest.update(y.to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _data_summary(data: _Data) -> dict[str, Any]:
    """What a run trains and validates on, kept in `last/state.pt`: a resumed run must see the same images, or its
    epochs would mix two data sets under one history."""

    def part(x: torch.Tensor | None, y: torch.Tensor | None, classes: list[str]) -> dict[str, Any]:
        if x is None or y is None:
            return {"images": 0, "shape": [], "classes": [], "content": ""}
        return {"images": len(x), "shape": list(x.shape[1:]), "classes": classes, "content": _fingerprint(x, y)}

    return {
        "train": part(data.train_x, data.train_y, data.classes),
        "val": part(data.val_x, data.val_y, data.val_classes),
    }


# --------------------------------------------------------------------------------------------------------------------
# Model, checkpoint
# --------------------------------------------------------------------------------------------------------------------


def _build(config: PretrainConfig, shape: tuple[int, int, int], num_classes: int) -> AutoEncoder:
    try:
        return build_autoencoder(config.kind, shape, config.code_dim, num_classes=num_classes, **config.options)
    except ModelError as exc:
        raise PretrainError(str(exc)) from None
    except TypeError as exc:  # a value of the wrong type that the model's own checks did not catch
        raise PretrainError(f"bad option for a {config.kind} autoencoder: {exc}") from None


def _optimizers(ae: AutoEncoder, config: PretrainConfig) -> list[torch.optim.Optimizer]:
    """Adam over the model; a VAE-GAN gets a second Adam over its discriminator (`discriminator_loss`)."""
    decay = config.decoder_weight_decay
    if decay is None:
        sparse_l1 = ae.kind == "sparse" and ae.options.get("sparsity") == "l1"
        decay = _SPARSE_DECODER_WEIGHT_DECAY if sparse_l1 else 0.0
    decoder_ids = {id(p) for p in ae.decoder.parameters()}
    if ae.kind == "vaegan":
        params = list(ae.generator_parameters())  # type: ignore[operator]
    else:
        params = list(ae.parameters())
    groups = [
        {"params": [p for p in params if id(p) not in decoder_ids], "weight_decay": 0.0},
        {"params": [p for p in params if id(p) in decoder_ids], "weight_decay": decay},
    ]
    optimizers: list[torch.optim.Optimizer] = [torch.optim.Adam([g for g in groups if g["params"]], lr=config.lr)]
    if ae.kind == "vaegan":
        disc = list(ae.discriminator_parameters())  # type: ignore[operator]
        optimizers.append(torch.optim.Adam(disc, lr=config.disc_lr or config.lr, betas=(0.5, 0.999)))
    return optimizers


def _embedder(ae: AutoEncoder) -> Embedder:
    """The checkpoint's embedding model: the encoder (shared with `ae`), no head, L2 norm."""
    ae_config = ae.config()
    return Embedder(
        encoder_backbone(ae),
        arch=f"{AE_BACKBONE_PREFIX}{ae.kind}",
        embed_dim=None,
        spec={"kind": "trained", "name": f"{AE_BACKBONE_PREFIX}{ae.kind}", "path": None},
        data_config=ae_data_config(ae.input_shape),
        backbone_kwargs={k: ae_config[k] for k in ("input_shape", "code_dim", "num_classes", "options")},
    )


def _save_safetensors(state: dict[str, torch.Tensor], path: Path) -> None:
    import safetensors.torch

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    tmp = path.with_name(path.name + ".tmp")
    safetensors.torch.save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)


def _save_checkpoint(ae: AutoEncoder, out: Path, extra: dict[str, Any]) -> None:
    """The full autoencoder first, then the embedding checkpoint (each written then renamed)."""
    out.mkdir(parents=True, exist_ok=True)
    _save_safetensors(ae.state_dict(), out / AE_WEIGHTS)
    save_checkpoint(_embedder(ae), out, extra_config={"autoencoder": ae.config(), **extra})


def load_autoencoder(folder: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> AutoEncoder:
    """The full autoencoder of a pretraining checkpoint (eval mode), for pictures or more training.

    Raises:
        PretrainError: not a pretraining checkpoint, or its weights do not fit its config.
    """
    import safetensors.torch

    path = Path(folder).expanduser()
    config_path, weights = path / CHECKPOINT_CONFIG, path / AE_WEIGHTS
    if not config_path.is_file() or not weights.is_file():
        raise PretrainError(f"{path} is not an autoencoder checkpoint (needs {CHECKPOINT_CONFIG} and {AE_WEIGHTS})")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        ae = autoencoder_from_config(config["autoencoder"])
        ae.load_state_dict(safetensors.torch.load_file(str(weights)))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, ModelError) as exc:
        raise PretrainError(f"cannot load the autoencoder of {path}: {exc}".splitlines()[0]) from None
    return ae.to(resolve_device(device)).eval()


def _recipe_dict(config: PretrainConfig) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config)))  # type: ignore[no-any-return]


def _load_state(path: Path, recipe: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    # weights_only: tensors, numbers, strings and containers, never arbitrary pickled objects.
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for a damaged file
        raise PretrainError(f"cannot resume from {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    saved = {**_recipe_dict(PretrainConfig()), **json.loads(state.get("recipe", "{}"))}
    changed = sorted(
        k for k in set(saved) | set(recipe) if saved.get(k) != recipe.get(k) and k not in _RESUMABLE_CHANGES
    )
    if changed:
        raise PretrainError(
            f"{path.parent} holds a run with another recipe ({', '.join(changed)} differ): "
            "use another output folder, or restart to start over"
        )
    saved_data = json.loads(state.get("data", "null"))  # absent in states written before it was kept
    if saved_data is not None and saved_data != data:
        differ = [
            f"{part} {key}"
            for part in ("train", "val")
            for key in ("images", "shape", "classes", "content")
            if saved_data.get(part, {}).get(key) != data[part][key]
        ]
        raise PretrainError(
            f"{path.parent} holds a run on other data ({', '.join(differ)} differ): "
            "use another output folder, or restart to start over"
        )
    return state  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------------------------


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


def pretrain(
    config: PretrainConfig,
    train_data: Any,
    out_dir: str | os.PathLike[str],
    *,
    progress: TrainProgress | None = None,
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
    data = _load_data(config, train_data, val_data)
    shape = tuple(data.train_x.shape[1:])
    ae = _build(config, shape, data.num_classes)  # type: ignore[arg-type]
    ae.to(device)
    optimizers = _optimizers(ae, config)
    monitor = _monitor_key(ae.kind)
    recipe = _recipe_dict(config)
    data_summary = _data_summary(data)

    start_epoch, best_epoch, best_value = 0, 0, math.inf
    history: list[dict[str, Any]] = []
    state_path = out / LAST_DIR / STATE_FILE
    if not resume:
        forget_run(out)
        # The old run's pictures show its model: a restart (maybe of another kind) must not leave them beside new ones.
        for old in (out / PICTURES_DIR).glob("*.png"):
            old.unlink(missing_ok=True)
    if resume and state_path.is_file():
        state = _load_state(state_path, recipe, data_summary)
        try:
            ae.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise PretrainError(f"{state_path} does not fit this model: {str(exc).splitlines()[0]}") from None
        for optimizer, saved in zip(optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)
        _set_rng_state(state["rng"], device)
        start_epoch, best_epoch, best_value = int(state["epoch"]), int(state["best_epoch"]), float(state["best_value"])
        if (out / HISTORY_FILE).is_file():
            history = [h for h in json.loads((out / HISTORY_FILE).read_text()) if h["epoch"] <= start_epoch]
        logger.info("resuming %s after epoch %d", out, start_epoch)

    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    samples_seen = 0
    n_train = len(data.train_x)
    ae.train()
    for epoch in range(start_epoch + 1, config.epochs + 1):
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
        batches = _batches(n_train, config.batch_size, generator)
        if progress is not None:
            progress.start_epoch(epoch, config.epochs, len(batches))
        sums: dict[str, float] = {}
        epoch_start = time.perf_counter()
        seen = 0
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
            seen += len(idx)
            if progress is not None:
                progress.step(value, seen / max(time.perf_counter() - epoch_start, 1e-9))
        samples_seen += seen
        record: dict[str, Any] = {
            "epoch": epoch,
            "loss": sums["loss"] / seen,
            "train": {k: v / seen for k, v in sums.items()},
            "samples_per_second": seen / max(time.perf_counter() - epoch_start, 1e-9),
        }
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
        history.append(record)
        improved = current < best_value
        if improved:
            best_value, best_epoch = current, epoch
            _save_checkpoint(
                ae,
                out,
                {
                    "recipe": recipe,
                    "metrics": {"epoch": epoch, "monitor": monitor, "value": current, **record.get("val", {})},
                    "classes": data.classes,
                },
            )
        logger.info(
            "epoch %d/%d: loss %.5f%s%s",
            epoch,
            config.epochs,
            record["loss"],
            f", val loss {record['val_loss']:.5f}" if "val_loss" in record else "",
            " (best)" if improved else "",
        )
        # History first: a state never names an epoch that history.json lacks (resuming truncates the rest).
        write_json(out / HISTORY_FILE, history)
        save_state(
            state_path,
            {
                "model": ae.state_dict(),
                "optimizers": [o.state_dict() for o in optimizers],
                "rng": _rng_state(device),
                "epoch": epoch,
                "best_epoch": best_epoch,
                "best_value": best_value,
                "recipe": json.dumps(recipe, sort_keys=True),
                "data": json.dumps(data_summary, sort_keys=True),
            },
        )
        if progress is not None:
            progress.end_epoch(epoch, record)
    seconds = time.perf_counter() - started
    written: list[Path] = []
    if pictures and best_epoch:
        written = _write_pictures(out, data, device, config.seed)
    return PretrainResult(
        checkpoint=out,
        best_epoch=best_epoch,
        monitor=f"{'val' if data.val_x is not None else 'train'} {monitor}",
        best_value=best_value,
        epochs_run=len(history),
        history=history,
        seconds=seconds,
        samples_per_second=samples_seen / max(seconds, 1e-9),
        pictures=written,
    )


# Images shown in the pictures: the latent scatter uses up to this many; the grids a handful.
_PICTURE_IMAGES = 2000


def _write_pictures(out: Path, data: _Data, device: torch.device, seed: int) -> list[Path]:
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
