"""The dedup model: a copy-detection descriptor made for near duplicates, from the bundled backbone (offline).

A classification embedding (the default model) is semantic: it centre-crops the image, averages the last feature
map, and two different photos of a stop sign drawn alike score about as high as a photo and its resized copy. This
descriptor keeps more of the instance, on the same ImageNet EfficientNet-Lite0 weights:

- the whole image is squashed to 224 x 224 (no centre crop), so a cropped or re-framed copy keeps what it kept;
- the last feature map is GeM-pooled (p = 3, Radenović et al. 2018) instead of averaged: the strongest local
  responses (this photo's details) weigh more than the mean (its class);
- the vector is the mean of the image's and its mirror image's pooled features, so a mirrored copy scores as the
  original does.

Chosen by the near-duplicate benchmark (benchmarks/results/dedup.md): on the calibration half, the best pairwise
F1 went from 0.914 (the default model) to 0.950 with all three. Heads learned on top of it from augmented views of
the calibration half's photos (an MLP trained with InfoNCE, SSCD's recipe, or a PCA whitening) reached 0.96-0.97
on the calibration half's classes but did not carry to unseen classes (F1 0.88-0.94 there at the calibrated
line), so none is part of it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from torch import nn

__all__ = ["DEDUP_CONFIG", "DEDUP_MODEL", "FlipAveraged", "dedup_data_config", "dedup_identity"]

#: The model name that selects this descriptor (`--model dedup`).
DEDUP_MODEL = "dedup"
#: What the descriptor is; its hash is part of the model's identity, so changing any of it makes another model.
DEDUP_CONFIG: dict[str, Any] = {"pooling": "gem", "gem_p": 3.0, "flip": "mean", "resize": "squash", "size": 224}


def dedup_data_config(size: int = int(DEDUP_CONFIG["size"])) -> dict[str, Any]:
    """The whole image squashed to size x size (timm's "squash" crop mode with crop_pct 1: nothing is cut off),
    normalised with ImageNet's mean and std, as the benchmark measured it."""
    return {
        "input_size": (3, size, size),
        "interpolation": "bilinear",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "crop_pct": 1.0,
        "crop_mode": "squash",
    }


class FlipAveraged(nn.Module):
    """A pooled-feature backbone whose output is the mean of an image's and its mirror image's features."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_features: int = backbone.num_features  # type: ignore[assignment]
        self.pretrained_cfg = getattr(backbone, "pretrained_cfg", {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.backbone(x) + self.backbone(x.flip(-1))) / 2


def dedup_identity(backbone_sha256: str) -> str:
    """The model's weights identity: the backbone's weights and the descriptor's config, hashed together."""
    text = backbone_sha256 + json.dumps(DEDUP_CONFIG, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
