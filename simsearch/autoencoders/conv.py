"""Convolutional autoencoder: 3x3 convs (BatchNorm, ReLU) that halve the side to a linear code, and three decoders.

Decoder "transposed" uses ConvTranspose2d(k=4, s=2), a kernel divisible by the stride so overlaps are even;
"upsample" uses nearest-neighbour upsampling then a 3x3 conv, which avoids checkerboard artifacts altogether
(Odena et al. 2016, "Deconvolution and Checkerboard Artifacts"). Both sit behind an encoder of strided convs; each
encoder stage maps a side s to ceil(s / 2), so each decoder stage doubles it and the output is cropped back to H x W
(105 -> 7 -> 112 -> 105).

"unpool" (SegNet, Badrinarayanan et al. 2017) changes the encoder too: stride-1 convs, each followed by 2x2 max
pooling (ceil mode, so the sides shrink as above) that records where every maximum came from. The decoder's
MaxUnpool2d puts each value back at that position (zeros elsewhere) at the mirrored stage, then convolves. Those
positions pass around the code, so they are used only inside the autoencoder: the encoder alone (the backbone)
computes the code without them, and a bare code (an interpolation, a prior sample) cannot be decoded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from simsearch.autoencoders.base import (
    RECON_MODES,
    AutoEncoder,
    Encoder,
    check_choice,
    check_input_shape,
    check_int_list,
)
from simsearch.errors import ModelError

DECODERS = ("upsample", "transposed", "unpool")
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
    """The side after `stages` halvings (a conv of kernel 3, stride 2, padding 1, or a 2x2 max pool in ceil mode):
    ceil(side / 2) each."""
    return stage_sides(side, stages)[-1]


def stage_sides(side: int, stages: int) -> list[int]:
    """`[side, ceil(side / 2), ...]`: the side entering each stage, then the encoded side (`stages + 1` values)."""
    sides = [side]
    for _ in range(stages):
        sides.append((sides[-1] + 1) // 2)
    return sides


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


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """A size-keeping 3x3 conv, BatchNorm, ReLU: one stage of the "unpool" encoder and decoder."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class PooledFeatures(nn.Module):
    """Stride-1 3x3 convs (BatchNorm, ReLU), each followed by 2x2 max pooling, flattened: the "unpool" encoder.

    `forward` is the embedding path and keeps no pooling positions; `forward_with_switches` also returns them, for
    the decoder inside the autoencoder. The pooling has no weights, so both paths share one state dict.
    """

    def __init__(self, input_shape: tuple[int, int, int], channels: Sequence[int]) -> None:
        super().__init__()
        widths = [input_shape[0], *channels]
        self.stages = nn.ModuleList(_conv_block(width, out) for width, out in zip(widths[:-1], widths[1:], strict=True))
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.spatial = (encoded_side(input_shape[1], len(channels)), encoded_side(input_shape[2], len(channels)))
        self.out_features = widths[-1] * self.spatial[0] * self.spatial[1]

    def forward(self, x: Tensor) -> Tensor:
        for stage in self.stages:
            x = self.pool(stage(x))
        return x.flatten(1)

    def forward_with_switches(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The flattened features and, per stage (first to last), the flat H*W position of each pooled maximum."""
        switches = []
        for stage in self.stages:
            x, positions = F.max_pool2d(stage(x), 2, ceil_mode=True, return_indices=True)
            switches.append(positions)
        return x.flatten(1), switches


def _code_to_map(in_dim: int, width: int, h0: int, w0: int) -> nn.Sequential:
    """A linear layer from the code to the deepest feature map `(N, width, h0, w0)`."""
    return nn.Sequential(nn.Linear(in_dim, width * h0 * w0), nn.ReLU(inplace=True), nn.Unflatten(1, (width, h0, w0)))


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
        self.fc = _code_to_map(in_dim, widths[0], h0, w0)
        blocks: list[nn.Module] = []
        for width, out in zip(widths, widths[1:] + widths[-1:], strict=True):
            blocks += [_upsampler(width, out, mode), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        self.up = nn.Sequential(*blocks)
        self.head = nn.Conv2d(widths[-1], c, 3, padding=1)
        self.output_size = (h, w)

    def forward(self, z: Tensor) -> Tensor:
        h, w = self.output_size
        return self.head(self.up(self.fc(z)))[..., :h, :w]


class UnpoolDecoder(nn.Module):
    """The mirror of `PooledFeatures(output_shape, channels)`: `(N, in_dim)` and the encoder's switches ->
    `(N, C, H, W)` logits. Each stage unpools to the size its encoder stage pooled from, then convolves."""

    needs_switches = True  # the autoencoder passes the encoder's switches; a bare code cannot be decoded

    def __init__(self, output_shape: tuple[int, int, int], channels: Sequence[int], in_dim: int) -> None:
        super().__init__()
        c, h, w = output_shape
        stages = len(channels)
        heights, widths_px = stage_sides(h, stages), stage_sides(w, stages)
        # The sizes that the encoder's stages pooled from, deepest first: what each unpooling restores.
        self.sizes = list(zip(heights[:-1], widths_px[:-1], strict=True))[::-1]
        widths = list(reversed(channels))
        self.fc = _code_to_map(in_dim, widths[0], heights[-1], widths_px[-1])
        self.unpool = nn.MaxUnpool2d(2)
        self.stages = nn.ModuleList(
            _conv_block(width, out) for width, out in zip(widths, widths[1:] + widths[-1:], strict=True)
        )
        self.head = nn.Conv2d(widths[-1], c, 3, padding=1)

    def forward(self, z: Tensor, switches: Sequence[Tensor] | None = None) -> Tensor:
        if switches is None:
            raise ModelError(
                "the unpool decoder puts values back where the encoder's maxima were, so it decodes encoded images "
                "(the autoencoder's forward), not a bare code"
            )
        if len(switches) != len(self.stages):
            raise ModelError(f"the unpool decoder needs {len(self.stages)} switch tensors, got {len(switches)}")
        x = self.fc(z)
        for stage, size, positions in zip(self.stages, self.sizes, reversed(switches), strict=True):
            x = stage(self.unpool(x, positions, output_size=size))
        return self.head(x)


def conv_features(input_shape: tuple[int, int, int], options: dict[str, Any]) -> ConvFeatures | PooledFeatures:
    """The encoder body that `options["decoder"]` pairs with: pooled stages for "unpool", strided convs otherwise."""
    if options["decoder"] == "unpool":
        return PooledFeatures(input_shape, options["channels"])
    return ConvFeatures(input_shape, options["channels"])


def conv_decoder(input_shape: tuple[int, int, int], options: dict[str, Any], in_dim: int) -> nn.Module:
    """The decoder named by `options["decoder"]`, from `(N, in_dim)` codes to `(N, C, H, W)` logits."""
    if options["decoder"] == "unpool":
        return UnpoolDecoder(input_shape, options["channels"], in_dim)
    return ConvDecoder(input_shape, options["channels"], in_dim, options["decoder"])


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
        channels: encoder widths, one halving stage each (default: `default_channels(input_shape)`).
        decoder: "upsample" (nearest + 3x3 conv, no checkerboard), "transposed" (ConvTranspose2d k=4 s=2) or
            "unpool" (max-pooling encoder, MaxUnpool2d at the recorded positions + 3x3 conv).
        recon: "mse" or "bce".
        """
        options = conv_options(input_shape, channels, decoder)
        options["recon"] = check_choice("recon", recon, RECON_MODES)
        super().__init__(input_shape, code_dim, options)
        features = conv_features(self.input_shape, options)
        self.encoder = Encoder(features, features.out_features, self.code_dim)
        self.decoder = conv_decoder(self.input_shape, options, self.code_dim)


def conv_options(input_shape: Sequence[int], channels: Sequence[int] | None, decoder: str | None) -> dict[str, Any]:
    """Resolved, JSON-able `channels` and `decoder` (defaults filled in, so a rebuild does not depend on them)."""
    shape = check_input_shape(input_shape)
    return {
        "channels": default_channels(shape) if channels is None else check_int_list("channels", channels),
        "decoder": check_choice("decoder", "upsample" if decoder is None else decoder, DECODERS),
    }
