"""The encoder body and decoder that denoising, sparse and variational kinds put around their own code layer.

`arch="conv"` (default) reuses conv.py's stages, `arch="mlp"` mlp.py's layers; the options of the other
architecture are refused rather than ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from simsearch.autoencoders.base import check_choice, check_input_shape, check_int_list, check_unused
from simsearch.autoencoders.conv import conv_decoder, conv_features, conv_options
from simsearch.autoencoders.mlp import DEFAULT_HIDDEN, MLPDecoder, MLPFeatures

ARCHS = ("conv", "mlp")


def arch_options(
    kind: str,
    input_shape: Sequence[int],
    arch: str,
    hidden: Sequence[int] | None,
    channels: Sequence[int] | None,
    decoder: str | None,
) -> dict[str, Any]:
    """Resolved options of the chosen architecture: `{"arch", "hidden"}` or `{"arch", "channels", "decoder"}`."""
    check_choice("arch", arch, ARCHS)
    if arch == "mlp":
        check_unused(kind, channels=channels, decoder=decoder)
        resolved = DEFAULT_HIDDEN if hidden is None else hidden
        return {"arch": "mlp", "hidden": check_int_list("hidden", resolved, allow_empty=True)}
    check_unused(kind, hidden=hidden)
    return {"arch": "conv", **conv_options(input_shape, channels, decoder)}


def build_body(input_shape: Sequence[int], options: dict[str, Any]) -> tuple[nn.Module, int]:
    """The encoder's feature layers and their output width."""
    shape = check_input_shape(input_shape)
    features = MLPFeatures(shape, options["hidden"]) if options["arch"] == "mlp" else conv_features(shape, options)
    return features, features.out_features


def build_decoder(input_shape: Sequence[int], options: dict[str, Any], in_dim: int) -> nn.Module:
    """A decoder from `(N, in_dim)` to `(N, C, H, W)` logits."""
    shape = check_input_shape(input_shape)
    if options["arch"] == "mlp":
        return MLPDecoder(shape, options["hidden"], in_dim)
    return conv_decoder(shape, options, in_dim)
