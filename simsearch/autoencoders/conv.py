"""Convolutional autoencoder: strided 3x3 convs (BatchNorm, ReLU) to a linear code, and two decoders back.

Decoder "transposed" uses ConvTranspose2d(k=4, s=2), a kernel divisible by the stride so overlaps are even;
"upsample" uses nearest-neighbour upsampling then a 3x3 conv, which avoids checkerboard artifacts altogether
(Odena et al. 2016, "Deconvolution and Checkerboard Artifacts"). Each encoder stage maps a side s to ceil(s / 2), so
each decoder stage doubles it and the output is cropped back to H x W (105 -> 7 -> 112 -> 105).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from simsearch.autoencoders.base import (
    RECON_MODES,
    AutoEncoder,
    Encoder,
    check_choice,
    check_input_shape,
    check_int_list,
)

DECODERS = ("upsample", "transposed")
_MAX_CODE_SIDE = 8  # the default depth downsamples until the smaller side is at most this


def default_channels(input_shape: Sequence[int]) -> list[int]:
    """Widths 32, 64, ... (at most 256), with 2 to 5 stages: as many as bring the smaller side down to <= 8.

    28 -> 7 (2 stages), 64 -> 8 (3), 105 -> 7 (4), 128 -> 8 (4).
    """
    side = min(input_shape[1], input_shape[2])
    stages = 2
    while stages < 5 and math.ceil(side / 2**stages) > _MAX_CODE_SIDE:
        stages += 1
    return [min(32 * 2**i, 256) for i in range(stages)]


def encoded_side(side: int, stages: int) -> int:
    """The side after `stages` convs of kernel 3, stride 2, padding 1: ceil(side / 2) each."""
    for _ in range(stages):
        side = (side + 1) // 2
    return side


class ConvFeatures(nn.Module):
    """Strided convs, flattened: `(N, C, H, W)` -> `(N, out_features)`.

    Args:
        batch_norm: BatchNorm after each conv (off for the VAE-GAN discriminator, which sees real and fake batches
            separately).
        negative_slope: 0 for ReLU, else LeakyReLU's slope.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        channels: Sequence[int],
        *,
        batch_norm: bool = True,
        negative_slope: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = input_shape[0]
        for out in channels:
            layers.append(nn.Conv2d(width, out, 3, stride=2, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.LeakyReLU(negative_slope, inplace=True) if negative_slope else nn.ReLU(inplace=True))
            width = out
        layers.append(nn.Flatten())
        self.layers = nn.Sequential(*layers)
        self.spatial = (encoded_side(input_shape[1], len(channels)), encoded_side(input_shape[2], len(channels)))
        self.out_features = width * self.spatial[0] * self.spatial[1]

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def _upsampler(in_channels: int, out_channels: int, mode: str) -> nn.Module:
    """Doubles H and W."""
    if mode == "transposed":
        return nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False)
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    )


class ConvDecoder(nn.Module):
    """The mirror of `ConvFeatures(output_shape, channels)`: `(N, in_dim)` -> `(N, C, H, W)` logits."""

    def __init__(self, output_shape: tuple[int, int, int], channels: Sequence[int], in_dim: int, mode: str) -> None:
        super().__init__()
        c, h, w = output_shape
        stages = len(channels)
        h0, w0 = encoded_side(h, stages), encoded_side(w, stages)
        widths = list(reversed(channels))
        self.fc = nn.Sequential(
            nn.Linear(in_dim, widths[0] * h0 * w0), nn.ReLU(inplace=True), nn.Unflatten(1, (widths[0], h0, w0))
        )
        blocks: list[nn.Module] = []
        for width, out in zip(widths, widths[1:] + widths[-1:], strict=True):
            blocks += [_upsampler(width, out, mode), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        self.up = nn.Sequential(*blocks)
        self.head = nn.Conv2d(widths[-1], c, 3, padding=1)
        self.output_size = (h, w)

    def forward(self, z: Tensor) -> Tensor:
        h, w = self.output_size
        return self.head(self.up(self.fc(z)))[..., :h, :w]


class ConvAutoEncoder(AutoEncoder):
    """Convolutional autoencoder for any image size (28x28, 105x105, 64x64, ...), grey or colour."""

    kind = "conv"

    def __init__(
        self,
        input_shape: Sequence[int],
        code_dim: int,
        *,
        channels: Sequence[int] | None = None,
        decoder: str = "upsample",
        recon: str = "mse",
    ) -> None:
        """Args:
        channels: encoder widths, one stride-2 stage each (default: `default_channels(input_shape)`).
        decoder: "upsample" (nearest + 3x3 conv, no checkerboard) or "transposed" (ConvTranspose2d k=4 s=2).
        recon: "mse" or "bce".
        """
        options = conv_options(input_shape, channels, decoder)
        options["recon"] = check_choice("recon", recon, RECON_MODES)
        super().__init__(input_shape, code_dim, options)
        features = ConvFeatures(self.input_shape, options["channels"])
        self.encoder = Encoder(features, features.out_features, self.code_dim)
        self.decoder = ConvDecoder(self.input_shape, options["channels"], self.code_dim, options["decoder"])


def conv_options(input_shape: Sequence[int], channels: Sequence[int] | None, decoder: str | None) -> dict[str, Any]:
    """Resolved, JSON-able `channels` and `decoder` (defaults filled in, so a rebuild does not depend on them)."""
    shape = check_input_shape(input_shape)
    return {
        "channels": default_channels(shape) if channels is None else check_int_list("channels", channels),
        "decoder": check_choice("decoder", "upsample" if decoder is None else decoder, DECODERS),
    }
