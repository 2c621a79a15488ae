"""A pretraining run's images: any labelled image dataset decoded once into memory as uint8 `(N, C, S, S)`, through the
checkpoint's own eval transform, split for validation, and summarised so that a resumed run sees the same data."""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import timm.data
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from simsearch.models.backbones import ae_data_config
from simsearch.pretraining.recipe import PretrainConfig, PretrainError

__all__ = ["PretrainData", "data_summary", "images_to_tensor", "load_data"]

logger = logging.getLogger(__name__)

# Without an image_size, images larger than this train at _LARGE_IMAGE_SIDE (photos would otherwise train at
# thousands of pixels a side).
_MAX_DEFAULT_SIDE = 128
_LARGE_IMAGE_SIDE = 64
# The decoded training set lives in memory as uint8; beyond this the run is refused with a hint instead of swapping.
_MAX_MEMORY_BYTES = 4 << 30


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
class PretrainData:
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


def load_data(config: PretrainConfig, train_data: Any, val_data: Any | None) -> PretrainData:
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
    return PretrainData(
        train_x, torch.from_numpy(labels[indices]), val_x, val_y, classes, max(num_classes, 1), val_classes
    )


def _fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    """A digest of every pixel and label: hashing is about 1 GB/s, little next to decoding the images."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(x.contiguous().numpy().data)
    digest.update(y.to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()


def data_summary(data: PretrainData) -> dict[str, Any]:
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
