"""Images as a model takes them: the inputs accepted (paths, encoded bytes, PIL images), how far a JPEG is decoded,
the model's eval transform (built once per model) and the forward pass that crosses to numpy.

`Embedder.embed` and a collection's queries and indexing (`simsearch.embedding`) all go through these, so an image
gives the same vector whichever way it is embedded.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import PIL.Image
import torch

from simsearch.images import DEFAULT_MAX_PIXELS, load_image
from simsearch.models.embedder import create_transform
from simsearch.models.preprocess import ImageInput, NumpyTransform, as_image_list, decode_min_side, numpy_transform

if TYPE_CHECKING:
    from simsearch.models.embedder import Embedder

__all__ = ["ImageInput", "as_image_list", "decode_min_side", "embed_images", "forward", "transform_for"]

Transform = Callable[[PIL.Image.Image], torch.Tensor]
_transforms: weakref.WeakKeyDictionary[Embedder, Transform] = weakref.WeakKeyDictionary()


def transform_for(embedder: Embedder) -> Transform:
    """The model's eval transform, built once per model: queries should not pay for timm's transform factory.

    Where `numpy_transform` reproduces timm's (the usual centre-crop configs), it is used instead: timm's tensor to
    within a level or two on a few pixels, for half the time (it resamples only the crop it keeps), which indexing
    pays for every file."""
    if embedder not in _transforms:
        fast = numpy_transform(embedder.data_config)
        _transforms[embedder] = create_transform(embedder) if fast is None else _TorchOf(fast)
    return _transforms[embedder]


class _TorchOf:
    """A numpy transform giving torch tensors (sharing the array's memory)."""

    def __init__(self, transform: NumpyTransform) -> None:
        self.transform = transform

    def __call__(self, image: PIL.Image.Image) -> torch.Tensor:
        return torch.from_numpy(self.transform(image))


def forward(embedder: Embedder, batch: torch.Tensor) -> np.ndarray:
    """Run the model on a ready batch ``(N, 3, H, W)`` and cross to numpy: ``(N, D) float32`` C-contiguous."""
    device = next(embedder.parameters()).device
    batch = batch.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        out = embedder(batch)
    return np.ascontiguousarray(out.float().cpu().numpy(), dtype=np.float32)


def embed_images(
    embedder: Embedder, images: Any, *, batch_size: int = 64, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """`(N, D) float32` L2-normalised vectors of images (paths, bytes, PIL images; one alone counts as a list),
    decoded in this process, `batch_size` at a time through the model in eval mode.

    Raises:
        ImageError: an input of another type, or an image that cannot be read.
    """
    listed = as_image_list(images)
    transform = transform_for(embedder)
    min_side = decode_min_side(embedder.data_config)
    chunks: list[np.ndarray] = []
    was_training = embedder.training
    embedder.eval()
    try:
        for start in range(0, len(listed), batch_size):
            batch = listed[start : start + batch_size]
            tensors = [transform(load_image(image, max_pixels=max_pixels, min_side=min_side)) for image in batch]
            chunks.append(forward(embedder, torch.stack(tensors)))
    finally:
        embedder.train(was_training)
    if not chunks:
        return np.empty((0, embedder.embed_dim), dtype=np.float32)
    return chunks[0] if len(chunks) == 1 else np.ascontiguousarray(np.concatenate(chunks))
