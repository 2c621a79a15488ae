"""Autoencoders (linear, MLP, conv, denoising, sparse, VAE, CVAE, VAE-GAN) whose encoders serve as backbones.

`build_autoencoder(kind, input_shape, code_dim, num_classes=..., **options)` builds any kind; a model's `kind`,
`input_shape`, `code_dim`, `num_classes` and `options` rebuild it exactly (`config()` / `autoencoder_from_config`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from simsearch.autoencoders.backbone import EncoderBackbone, encoder_backbone
from simsearch.autoencoders.base import AutoEncoder
from simsearch.autoencoders.conv import ConvAutoEncoder
from simsearch.autoencoders.denoising import DenoisingAutoEncoder, gaussian_noise, masking_noise
from simsearch.autoencoders.linear import LinearAutoEncoder
from simsearch.autoencoders.mlp import MLPAutoEncoder
from simsearch.autoencoders.sparse import SparseAutoEncoder, kl_sparsity, l1_penalty
from simsearch.autoencoders.vae import CVAE, VAE, kl_normal
from simsearch.autoencoders.vaegan import VAEGAN
from simsearch.errors import ModelError

__all__ = [
    "CVAE",
    "KINDS",
    "VAE",
    "VAEGAN",
    "AutoEncoder",
    "ConvAutoEncoder",
    "DenoisingAutoEncoder",
    "EncoderBackbone",
    "LinearAutoEncoder",
    "MLPAutoEncoder",
    "SparseAutoEncoder",
    "autoencoder_from_config",
    "build_autoencoder",
    "encoder_backbone",
    "gaussian_noise",
    "kl_normal",
    "kl_sparsity",
    "l1_penalty",
    "masking_noise",
]

KINDS = ("linear", "mlp", "conv", "denoising", "sparse", "vae", "cvae", "vaegan")

_CLASSES: dict[str, type[AutoEncoder]] = {
    "linear": LinearAutoEncoder,
    "mlp": MLPAutoEncoder,
    "conv": ConvAutoEncoder,
    "denoising": DenoisingAutoEncoder,
    "sparse": SparseAutoEncoder,
    "vae": VAE,
    "cvae": CVAE,
    "vaegan": VAEGAN,
}


def _option_names(cls: type[AutoEncoder]) -> list[str]:
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "num_classes"]


def build_autoencoder(
    kind: str, input_shape: Sequence[int], code_dim: int, *, num_classes: int | None = None, **options: Any
) -> AutoEncoder:
    """An untrained autoencoder of one of `KINDS` for `(C, H, W)` images in [0, 1].

    Options that are None are dropped, so the kind's defaults apply. `num_classes` is required by "cvae" and
    ignored by the other kinds (a training loop may pass its class count to every kind).

    Raises:
        ModelError: unknown kind, unknown option for that kind, or a bad value.
    """
    cls = _CLASSES.get(kind)
    if cls is None:
        raise ModelError(f"unknown autoencoder kind {kind!r}; known: {', '.join(KINDS)}")
    options = {name: value for name, value in options.items() if value is not None}
    accepted = _option_names(cls)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ModelError(
            f"unknown option(s) for a {kind} autoencoder: {', '.join(unknown)} "
            f"(accepted: {', '.join(accepted) or 'none'})"
        )
    if cls.conditional:
        if num_classes is None:
            raise ModelError(f"a {kind} autoencoder needs num_classes")
        return cls(input_shape, code_dim, num_classes=num_classes, **options)  # type: ignore[call-arg]
    return cls(input_shape, code_dim, **options)


def autoencoder_from_config(config: Mapping[str, Any]) -> AutoEncoder:
    """The inverse of `AutoEncoder.config()` (untrained weights; load the state dict after)."""
    try:
        kind, shape, code_dim = config["kind"], config["input_shape"], config["code_dim"]
    except KeyError as exc:
        raise ModelError(f"autoencoder config lacks {exc.args[0]!r}") from None
    return build_autoencoder(kind, shape, code_dim, num_classes=config.get("num_classes"), **config.get("options", {}))
