"""The eval transform of a model in numpy and Pillow alone, for inference that runs without torch.

It takes the same steps as the transform timm builds from a data config for evaluation in its default "center" crop
mode (shorter side resized with Pillow to input / crop_pct, centre crop, scale to [0, 1], normalise), with the same
rounding, so it gives the same tensor, as numpy. Data configs of other modes have no such form here:
`numpy_transform` answers None for them and their models keep the torch transform.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from PIL import Image

from simsearch.errors import ImageError
from simsearch.images import THUMBNAIL_SIZE

__all__ = ["ImageInput", "NumpyTransform", "as_image_list", "decode_min_side", "numpy_transform"]

ImageInput = str | os.PathLike[str] | bytes | Image.Image
"""One image as `Embedder.embed` and a collection's search take it: a path, the file's bytes, or a PIL image."""

NumpyTransform = Callable[[Image.Image], np.ndarray]

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}
_DEFAULT_CROP_PCT = 0.875  # what timm assumes when a config gives none
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def decode_min_side(data_config: Mapping[str, Any]) -> int:
    """The shortest side a decoded image needs, so JPEG draft mode never decodes smaller than the transform reads
    (nor than a thumbnail, so that indexing and a query decode a file alike)."""
    _, height, width = data_config["input_size"]
    crop_pct = float(data_config.get("crop_pct") or 1.0)
    return max(math.ceil(min(height, width) / crop_pct), THUMBNAIL_SIZE)


def as_image_list(images: Any) -> list[ImageInput]:
    """`images` as a list of inputs: one image alone counts as a list of one.

    Raises:
        ImageError: anything but a path, bytes or a PIL image, or a sequence of them, naming the first that is not
            (an int would otherwise be opened as a file descriptor).
    """
    single = (str, os.PathLike, bytes, bytearray, memoryview, Image.Image)
    accepted = "a file path, encoded bytes or a PIL image"
    if not isinstance(images, single) and not isinstance(images, Iterable):
        raise ImageError(f"{type(images).__name__} is not {accepted} (or a list of them)")
    listed = [images] if isinstance(images, single) else list(images)
    for position, item in enumerate(listed):
        if not isinstance(item, single):
            raise ImageError(f"image {position} is {type(item).__name__}, not {accepted}")
    return listed  # type: ignore[return-value]


def numpy_transform(data_config: Mapping[str, Any]) -> NumpyTransform | None:
    """PIL image -> `(C, H, W) float32` array, as the model's eval transform gives it; None when the data config asks
    for a mode this module does not reproduce (then only the torch transform is exact)."""
    channels, height, width = (int(v) for v in data_config.get("input_size") or (3, 224, 224))
    crop_pct = float(data_config.get("crop_pct") or _DEFAULT_CROP_PCT)
    mode = data_config.get("crop_mode") or "center"
    resample = _RESAMPLE.get(str(data_config.get("interpolation") or "bilinear"))
    scale = (math.floor(height / crop_pct), math.floor(width / crop_pct))
    # timm resizes a non-square target with its own keep-ratio resize, and crops other modes otherwise.
    if mode != "center" or resample is None or scale[0] != scale[1] or channels not in (1, 3):
        return None
    mean = [np.float32(m) for m in data_config.get("mean") or _IMAGENET_MEAN]
    std = [np.float32(s) for s in data_config.get("std") or _IMAGENET_STD]
    if len(mean) != channels or len(std) != channels:
        return None
    pil_mode = "L" if channels == 1 else "RGB"

    def transform(image: Image.Image) -> np.ndarray:
        if image.mode != pil_mode:
            image = image.convert(pil_mode)
        image = _crop(_resize_shorter(image, scale[0], resample), height, width)
        pixels = np.asarray(image, dtype=np.uint8).reshape(height, width, channels)
        array = pixels.transpose(2, 0, 1).astype(np.float32, order="C")  # a new (C, H, W) array, changed in place
        # the same float32 steps as torchvision's ToTensor and Normalize, one channel plane at a time: a broadcast
        # of (C, 1, 1) means over the whole array took twice as long on a server's upload path
        array /= np.float32(255)
        for channel in range(channels):
            array[channel] -= mean[channel]
            array[channel] /= std[channel]
        return array

    return transform


def _resize_shorter(image: Image.Image, size: int, resample: Image.Resampling) -> Image.Image:
    """The shorter side to `size`, the longer in proportion (truncated), as torchvision's Resize(int) does."""
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) == (w, h):
        return image
    return image.resize((new_w, new_h), resample)


def _crop(image: Image.Image, height: int, width: int) -> Image.Image:
    """Centre crop, zero-padded first where the image is smaller, with torchvision's CenterCrop offsets."""
    w, h = image.size
    if width > w or height > h:
        left = (width - w) // 2 if width > w else 0
        top = (height - h) // 2 if height > h else 0
        padded = Image.new(image.mode, (w + max(width - w, 0), h + max(height - h, 0)))
        padded.paste(image, (left, top))
        image, (w, h) = padded, padded.size
        if (w, h) == (width, height):
            return image
    top = int(round((h - height) / 2.0))
    left = int(round((w - width) / 2.0))
    return image.crop((left, top, left + width, top + height))
