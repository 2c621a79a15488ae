"""The autoencoder contract (encode, decode, forward, loss, encoder_modules) shared by every kind, and option checks.

Every model takes float images in [0, 1] of shape `(N, C, H, W)`; its encoder lives in the submodule `encoder`, so
an `EncoderBackbone` holding that submodule has the same state-dict keys as the autoencoder's encoder part.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simsearch.errors import ModelError

RECON_MODES = ("mse", "bce")


def check_input_shape(input_shape: Iterable[int]) -> tuple[int, int, int]:
    """`(C, H, W)` as a tuple of positive ints, or ModelError."""
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise ModelError(f"input_shape must be (C, H, W) positive integers, got {input_shape!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ModelError(f"input_shape must be (C, H, W) positive integers, got {input_shape!r}")
    return shape  # type: ignore[return-value]


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_int_list(name: str, value: Any, *, allow_empty: bool = False) -> list[int]:
    """A JSON-friendly list of positive ints (tuples become lists so `options` survive a JSON round trip)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ModelError(f"{name} must be a list of positive integers, got {value!r}")
    items = list(value)
    if (not items and not allow_empty) or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in items):
        what = "list" if allow_empty else "non-empty list"
        raise ModelError(f"{name} must be a {what} of positive integers, got {value!r}")
    return items


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ModelError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def check_number(name: str, value: Any, *, low: float = 0.0, high: float = math.inf, open_low: bool = False) -> float:
    """A finite float in `[low, high]` (or `(low, high]` with `open_low`)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ModelError(f"{name} must be a number, got {value!r}")
    if value < low or value > high or (open_low and value == low):
        bounds = f"{'(' if open_low else '['}{low}, {high}]"
        raise ModelError(f"{name} must lie in {bounds}, got {value!r}")
    return float(value)


def check_unused(kind: str, **given: Any) -> None:
    """Refuse options that the chosen variant would silently ignore (e.g. `hidden` for a conv model)."""
    unused = sorted(name for name, value in given.items() if value is not None)
    if unused:
        raise ModelError(f"{kind}: option(s) {', '.join(unused)} do not apply to this configuration")


class Encoder(nn.Module):
    """Feature layers, then a linear code layer, optionally squashed (ReLU or sigmoid codes for sparse models)."""

    def __init__(self, features: nn.Module, features_dim: int, code_dim: int, activation: str | None = None) -> None:
        super().__init__()
        self.features = features
        self.code = nn.Linear(features_dim, code_dim)
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        """`(N, C, H, W)` in [0, 1] -> `(N, code_dim)`."""
        return self._code(self.features(x))

    def forward_with_switches(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The code and the max-pooling positions of feature layers that record them (`PooledFeatures`), for an
        unpooling decoder; the code is the one `forward` gives."""
        features, switches = self.features.forward_with_switches(x)  # type: ignore[operator]
        return self._code(features), switches

    def _code(self, features: Tensor) -> Tensor:
        z = self.code(features)
        if self.activation == "relu":
            return F.relu(z)
        if self.activation == "sigmoid":
            return torch.sigmoid(z)
        return z


class AutoEncoder(nn.Module):
    """Base of every kind: subclasses set `encoder` and `decoder` (the decoder gives logits) and may extend `loss`.

    Attributes:
        kind: the name `build_autoencoder` knows this model by.
        input_shape: `(C, H, W)` of the images it takes.
        code_dim: size of the code that `encode` returns.
        options: JSON-able options; `build_autoencoder(kind, input_shape, code_dim, num_classes=num_classes,
            **options)` rebuilds the same architecture.
        num_classes: class count of conditional kinds (CVAE), else None; kept out of `options` so that it can be
            passed beside them.
    """

    kind: str = "autoencoder"
    conditional: bool = False
    encoder: nn.Module
    decoder: nn.Module

    def __init__(
        self, input_shape: Iterable[int], code_dim: int, options: dict[str, Any], num_classes: int | None = None
    ) -> None:
        super().__init__()
        self.input_shape = check_input_shape(input_shape)
        self.code_dim = check_positive_int("code_dim", code_dim)
        self.options = dict(options)
        self.num_classes = num_classes

    @property
    def num_pixels(self) -> int:
        """C * H * W: per-image sums divided by this are on the per-pixel scale of the reconstruction error."""
        c, h, w = self.input_shape
        return c * h * w

    def check_images(self, x: Tensor) -> None:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ModelError(
                f"{self.kind} autoencoder expects images of shape (N, {', '.join(map(str, self.input_shape))}), "
                f"got {tuple(x.shape)}"
            )

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Deterministic code `(N, code_dim)` of images `(N, C, H, W)` in [0, 1]."""
        self.check_images(x)
        return self.encoder(x)

    def decode_logits(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """`(N, code_dim)` -> `(N, C, H, W)` before the output squashing."""
        return self.decoder(z)

    def output(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Images `(N, C, H, W)` in [0, 1] from codes `(N, code_dim)`."""
        return self.output(self.decode_logits(z, y))

    @property
    def decodes_codes(self) -> bool:
        """Whether `decode` takes a bare code. An unpooling decoder also needs the encoder's max-pooling positions,
        so it reconstructs only through `forward` (no interpolations or prior samples)."""
        return not getattr(self.decoder, "needs_switches", False)

    def forward(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """`recon` `(N, C, H, W)`, `code` `(N, code_dim)` and the decoder's `logits`."""
        if self.decodes_codes:
            code = self.encode(x, y)
            logits = self.decode_logits(code, y)
        else:
            self.check_images(x)
            code, switches = self.encoder.forward_with_switches(x)  # type: ignore[operator]
            logits = self.decoder(code, switches)
        return {"recon": self.output(logits), "code": code, "logits": logits}

    def reconstruction_error(self, logits: Tensor, x: Tensor) -> Tensor:
        """Mean over pixels and batch: squared error of the output, or Bernoulli cross-entropy on the logits."""
        if self.options.get("recon", "mse") == "bce":
            return F.binary_cross_entropy_with_logits(logits, x)
        return F.mse_loss(self.output(logits), x)

    def loss(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """`loss` to minimise and its terms (detached)."""
        out = self.forward(x, y)
        recon = self.reconstruction_error(out["logits"], x)
        return {"loss": recon, "recon": recon.detach()}

    def encoder_modules(self) -> nn.Module:
        """The encoder alone (what becomes a backbone); its state-dict prefix in this model is `encoder.`."""
        return self.encoder

    def config(self) -> dict[str, Any]:
        """JSON-able description for `autoencoder_from_config`."""
        return {
            "kind": self.kind,
            "input_shape": list(self.input_shape),
            "code_dim": self.code_dim,
            "num_classes": self.num_classes,
            "options": dict(self.options),
        }

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, input_shape={self.input_shape}, code_dim={self.code_dim}"
