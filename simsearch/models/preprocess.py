"""The eval transform of a model in numpy and Pillow alone, for inference that runs without torch.

It takes the same steps as the transform timm builds from a data config for evaluation in its default "center" crop
mode (shorter side resized with Pillow to input / crop_pct, centre crop, scale to [0, 1], normalise), with the same
rounding, as numpy. One step is cheaper: only the pixels the crop keeps are resampled (half the work or less), one
axis at a time in the order Pillow's whole-image resize takes, so the tensor is timm's to within two 8-bit levels on
a few values in a thousand on photos (Pillow takes a resize box in single precision), and the vectors agree to a
cosine of 0.99999. Data configs of other modes have no such form here: `numpy_transform` answers None for them and
their models keep the torch transform.
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
    for a mode this module does not reproduce (then only the torch transform gives timm's tensor)."""
    channels, height, width = (int(v) for v in data_config.get("input_size") or (3, 224, 224))
    crop_pct = float(data_config.get("crop_pct") or _DEFAULT_CROP_PCT)
    mode = data_config.get("crop_mode") or "center"
    resample = _RESAMPLE.get(str(data_config.get("interpolation") or "bilinear"))
    scale = (math.floor(height / crop_pct), math.floor(width / crop_pct))
    # timm resizes a non-square target with its own keep-ratio resize, and crops other modes otherwise.
    if mode != "center" or resample is None or scale[0] != scale[1] or channels not in (1, 3):
        return None
    mean = np.asarray(data_config.get("mean") or _IMAGENET_MEAN, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(data_config.get("std") or _IMAGENET_STD, dtype=np.float32).reshape(-1, 1, 1)
    if len(mean) != channels or len(std) != channels:
        return None
    pil_mode = "L" if channels == 1 else "RGB"
    scale255 = np.float32(255)

    def transform(image: Image.Image) -> np.ndarray:
        if image.mode != pil_mode:
            image = image.convert(pil_mode)
        image = _resize_and_crop(image, scale[0], height, width, resample)
        pixels = np.asarray(image, dtype=np.uint8).reshape(height, width, channels)
        # The very float32 operations torchvision's ToTensor and Normalize apply, in their order: the same floats.
        out = np.empty((channels, height, width), dtype=np.float32)
        np.copyto(out, pixels.transpose(2, 0, 1), casting="unsafe")
        out /= scale255
        out -= mean
        out /= std
        return out

    return transform


def _shorter_to(size: tuple[int, int], short_side: int) -> tuple[int, int]:
    """The size with the shorter side at `short_side`, the longer in proportion (truncated), as torchvision's
    Resize(int) computes it."""
    w, h = size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = short_side, int(short_side * long / short)
    return (new_short, new_long) if w <= h else (new_long, new_short)


def _resize_and_crop(
    image: Image.Image, short_side: int, height: int, width: int, resample: Image.Resampling
) -> Image.Image:
    """The centre `width` x `height` of `image` resized to `short_side`, resampling only the kept pixels.

    Each axis is its own Pillow call with a box (the crop's span in source pixels), in the order Pillow gives a
    whole-image resize of this size: it rounds to 8 bits between the two passes, so the order decides the pixels.
    """
    w, h = image.size
    new_w, new_h = _shorter_to((w, h), short_side)
    if width > new_w or height > new_h:  # a crop wider than the resized image: padding, done on the whole image
        return _crop(image.resize((new_w, new_h), resample) if (new_w, new_h) != (w, h) else image, height, width)
    top = int(round((new_h - height) / 2.0))
    left = int(round((new_w - width) / 2.0))

    def across(im: Image.Image) -> Image.Image:
        if new_w == w:
            return im.crop((left, 0, left + width, im.height))
        span = (left * w / new_w, 0.0, min((left + width) * w / new_w, float(w)), float(im.height))
        return im.resize((width, im.height), resample, box=span)

    def down(im: Image.Image) -> Image.Image:
        if new_h == h:
            return im.crop((0, top, im.width, top + height))
        span = (0.0, top * h / new_h, float(im.width), min((top + height) * h / new_h, float(h)))
        return im.resize((im.width, height), resample, box=span)

    # Pillow (Resample.c) resizes vertically first only when the height shrinks by more than twice the width.
    vertical_first = h - new_h > 0 and h - new_h > (w - new_w) * 2
    return across(down(image)) if vertical_first else down(across(image))


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
