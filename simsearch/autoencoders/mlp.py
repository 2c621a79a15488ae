"""Fully connected autoencoder: flattened pixels -> hidden ReLU layers -> linear code, mirrored back to a sigmoid."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from simsearch.autoencoders.base import RECON_MODES, AutoEncoder, Encoder, check_choice, check_int_list

DEFAULT_HIDDEN = (500, 120)


class MLPFeatures(nn.Module):
    """Flatten, then `Linear + ReLU` per hidden size; `out_features` is the last hidden size (or C*H*W if none)."""

    def __init__(self, input_shape: tuple[int, int, int], hidden: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True)]
            width = size
        self.layers = nn.Sequential(*layers)
        self.out_features = width

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class MLPDecoder(nn.Module):
    """The mirror of `MLPFeatures` from an `in_dim` input to `(N, C, H, W)` logits."""

    def __init__(self, output_shape: tuple[int, int, int], hidden: Sequence[int], in_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for size in reversed(hidden):
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True)]
            width = size
        layers += [nn.Linear(width, math.prod(output_shape)), nn.Unflatten(1, output_shape)]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.layers(z)


class MLPAutoEncoder(AutoEncoder):
    """MLP autoencoder (hidden 500-120 by default, as in the seed experiments); any image size, grey or colour."""

    kind = "mlp"

    def __init__(
        self, input_shape: Sequence[int], code_dim: int, *, hidden: Sequence[int] = DEFAULT_HIDDEN, recon: str = "mse"
    ) -> None:
        """Args:
        hidden: widths of the encoder's hidden layers (the decoder mirrors them); may be empty.
        recon: "mse" (per-pixel squared error) or "bce" (Bernoulli cross-entropy).
        """
        options: dict[str, Any] = {"hidden": check_int_list("hidden", hidden, allow_empty=True), "recon": recon}
        check_choice("recon", recon, RECON_MODES)
        super().__init__(input_shape, code_dim, options)
        features = MLPFeatures(self.input_shape, options["hidden"])
        self.encoder = Encoder(features, features.out_features, self.code_dim)
        self.decoder = MLPDecoder(self.input_shape, options["hidden"], self.code_dim)
