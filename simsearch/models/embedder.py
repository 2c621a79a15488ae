"""The Embedder module: a timm backbone's pooled features, an optional linear projection, L2 normalisation.

Also owns the eval-time image transform, which is always derived from the model's own data config.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import timm
import timm.data
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from simsearch.errors import ModelError

logger = logging.getLogger(__name__)

TTA_MODES = ("hflip",)
"""Test-time augmentations an Embedder can apply (see `Embedder.set_tta`)."""


def check_tta(mode: str | None) -> None:
    """Refuse an unknown test-time augmentation before any model is loaded or any collection touched."""
    if mode is not None and mode not in TTA_MODES:
        raise ModelError(f"unknown test-time augmentation {mode!r}: choose from {', '.join(TTA_MODES)}")


def _normalise_data_config(config: dict[str, Any]) -> dict[str, Any]:
    """JSON turns tuples into lists; timm and equality checks want tuples back."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}


def data_config_differences(built: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """How the preprocessing of two data configs differs, e.g. ["crop_pct 0.95 not 0.875"]; [] when it is the same.

    A manifest keeps a data config through JSON, so lists and tuples, ints and floats and last-digit float noise
    compare equal; a missing or null key counts as the default that `timm.data.create_transform` applies.
    """
    from timm.data.constants import DEFAULT_CROP_PCT, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    defaults: dict[str, Any] = {
        "input_size": (3, 224, 224),
        "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "crop_pct": DEFAULT_CROP_PCT,
        "crop_mode": "center",
    }

    def value(config: Mapping[str, Any], key: str) -> Any:
        v = config.get(key)
        return defaults.get(key) if v is None else v

    differences = []
    for key in [*defaults, *sorted((set(built) | set(now)) - set(defaults))]:
        a, b = value(built, key), value(now, key)
        if not _same_config_value(a, b):
            differences.append(f"{key} {_show_config_value(a)} not {_show_config_value(b)}")
    return differences


def _same_config_value(a: Any, b: Any) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same_config_value(x, y) for x, y in zip(a, b, strict=True))
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return bool(a == b)


def _show_config_value(v: Any) -> str:
    return repr(tuple(v)) if isinstance(v, list) else repr(v)


def channel_data_config(data_config: dict[str, Any], in_chans: int | None) -> dict[str, Any]:
    """`data_config` for a backbone of `in_chans` input channels (None: leave as is).

    timm resolves a model's data config from its pretrained config, which says (3, H, W) and three means even for a
    model built with `in_chans=1`: its transforms would then give 3-channel tensors. The channel count of
    input_size follows the backbone; one channel averages the means and stds, matching how timm folds the RGB
    filters of a pretrained stem into one.
    """
    config = dict(data_config)
    size = tuple(config.get("input_size", (3, 224, 224)))
    if in_chans is None or (size[0] == in_chans and len(config.get("mean", (0,) * in_chans)) == in_chans):
        return config
    config["input_size"] = (int(in_chans), *size[1:])
    for key in ("mean", "std"):
        if key in config:
            values = tuple(float(v) for v in config[key])
            config[key] = (sum(values) / len(values),) if in_chans == 1 else (values * in_chans)[:in_chans]
    return config


class Embedder(nn.Module):
    """Backbone (timm, num_classes=0, global-pooled features) + optional linear projection + L2 normalisation.

    Attributes:
        model_id: Stable identity stored in a collection's manifest, e.g. "default:tf_efficientnet_lite0"; a
            checkpoint's names its folder, which a collection does not hold it to (it may move).
        weights_sha256: sha256 of the weights actually loaded.
        data_config: The backbone's preprocessing (input_size, interpolation, mean, std, crop_pct, crop_mode).
        embed_dim: Output dimension.
        spec: JSON-able description to rebuild it: {"kind", "name", "path"}.
        arch: timm architecture name of the backbone (what a checkpoint's config.json calls "backbone").
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        arch: str,
        embed_dim: int | None = None,
        model_id: str | None = None,
        weights_sha256: str = "",
        spec: dict[str, Any] | None = None,
        data_config: dict[str, Any] | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """Wrap `backbone`; `embed_dim` adds a fresh (randomly initialised) projection head of that size."""
        super().__init__()
        self.backbone = backbone
        num_features = int(getattr(backbone, "num_features", 0) or 0)
        if num_features <= 0:
            raise ModelError(f"backbone {arch} does not report num_features: not a timm feature extractor")
        self.head: nn.Module = nn.Linear(num_features, embed_dim) if embed_dim else nn.Identity()
        self.arch = arch
        self.projection_dim = embed_dim or None
        self.embed_dim = int(embed_dim or num_features)
        self.model_id = model_id or f"custom:{arch}"
        self.weights_sha256 = weights_sha256
        self.spec = dict(spec) if spec else {"kind": "custom", "name": arch, "path": None}
        self.backbone_kwargs = dict(backbone_kwargs or {})
        if data_config is None:
            data_config = timm.data.resolve_data_config(model=backbone)
        # A given config is held to the stem's channels too, so every transform built from it fits the backbone.
        in_chans = self.backbone_kwargs.get("in_chans")
        self.data_config = _normalise_data_config(channel_data_config(data_config, in_chans))
        self._channels_last = False
        self.tta: str | None = None

    def set_tta(self, mode: str | None) -> Embedder:
        """Embed each image together with its mirror image and average the two ("hflip"; None: off).

        Retrieval nets are mostly trained with random flips, so the mirror is as good a view as the image and the
        average is a steadier vector, for twice the forward cost. The raw vectors are averaged before the L2
        norm, i.e. the head sees the mean pooled feature (the head is linear). The mode becomes part of the model's
        identity (model_id gets "+hflip", spec gets "tta"), so a collection never mixes vectors made with and without
        it. Training ignores it (it applies in eval mode only) and checkpoints do not keep it: it is chosen where the
        model is used.
        """
        check_tta(mode)
        base = self.model_id.removesuffix(f"+{self.tta}") if self.tta else self.model_id
        self.model_id = f"{base}+{mode}" if mode else base
        self.spec.pop("tta", None)
        if mode:
            self.spec["tta"] = mode
        self.tta = mode
        return self

    def use_channels_last(self, enabled: bool = True) -> Embedder:
        """NHWC weights and inputs: measured 1.6-1.9x faster convolutions on CPU (see PERFORMANCE.md)."""
        self._channels_last = enabled
        self.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)
        return self

    def forward(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Embed a batch of images.

        Args:
            x: (N, 3, H, W) images, already transformed with `create_transform(self)`.
            normalize: False gives the raw projection, for losses that need unnormalised features.

        Returns:
            (N, D) float32, rows of unit L2 norm when `normalize`.
        """
        if self._channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        z = self.head(self.backbone(x)).float()
        if self.tta == "hflip" and not self.training:
            z = (z + self.head(self.backbone(x.flip(-1))).float()) / 2
        return F.normalize(z, dim=1) if normalize else z

    def embed(self, images: Any, *, batch_size: int = 64) -> np.ndarray:
        """Embed images: paths, encoded bytes or PIL images (one alone counts as a list of one).

        Each goes through the model's own eval transform, in eval mode, on the model's device, as a collection
        embeds it. Without a collection or a labelled folder: `load_embedder("runs/products").embed(["a.jpg"])`.

        Returns:
            `(N, D) float32`, rows of unit L2 norm.

        Raises:
            ImageError: an input that is not a path, bytes or a PIL image (an int, an array), or an image that
                cannot be read.
        """
        from simsearch.models.inputs import embed_images

        return embed_images(self, images, batch_size=batch_size)

    def extra_repr(self) -> str:
        tta = f", tta={self.tta!r}" if self.tta else ""
        return f"model_id={self.model_id!r}, embed_dim={self.embed_dim}{tta}"


class _ModeTransform:
    """Converts the image mode first: grey, palette, CMYK and RGBA images would otherwise give the wrong channels."""

    def __init__(self, transform: Callable[[Image.Image], torch.Tensor], mode: str) -> None:
        self.transform = transform
        self.mode = mode

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if image.mode != self.mode:
            image = image.convert(self.mode)
        return self.transform(image)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mode={self.mode!r}, {self.transform!r})"


def create_transform(embedder: Embedder) -> Callable[[Image.Image], torch.Tensor]:
    """Eval transform (to RGB, resize, centre crop, normalise) built from the embedder's own data config.

    Returns:
        PIL image -> (C, H, W) float32 tensor, C = 3 (or 1 for a backbone built with in_chans=1).
    """
    channels = embedder.data_config.get("input_size", (3,))[0]
    transform = timm.data.create_transform(**embedder.data_config, is_training=False)
    return _ModeTransform(transform, "L" if channels == 1 else "RGB")
