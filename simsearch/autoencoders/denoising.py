"""Denoising autoencoder (Vincent et al. 2008): reconstruct the clean image from a corrupted copy.

Noise: additive Gaussian (clipped to [0, 1]) or masking (pixels, or blocks of pixels, set to 0). The corruption
happens inside `loss` while training only; `encode`, `forward` and evaluation see clean images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from simsearch.autoencoders.arch import arch_options, build_body, build_decoder
from simsearch.autoencoders.base import (
    RECON_MODES,
    AutoEncoder,
    Encoder,
    check_choice,
    check_number,
    check_positive_int,
    check_unused,
)
from simsearch.errors import ModelError

NOISES = ("gaussian", "mask")
DEFAULT_NOISE_LEVEL = {"gaussian": 0.3, "mask": 0.25}


def gaussian_noise(x: Tensor, sigma: float) -> Tensor:
    """`x + sigma * N(0, 1)`, clipped back to [0, 1]."""
    check_number("sigma", sigma)
    return (x + sigma * torch.randn_like(x)).clamp_(0.0, 1.0)


def masking_noise(x: Tensor, p: float, block: int = 1) -> Tensor:
    """Zero a fraction `p` of the pixels of each image, all channels of a pixel together.

    With `block > 1` the image is tiled in `block x block` cells (edge cells may be cut) and whole cells are dropped,
    which hides strokes and parts rather than single pixels. Exactly `round(p * cells)` cells go per image, so the
    dropped fraction is exact, not only expected, when `block` divides H and W.

    Args:
        x: `(N, C, H, W)` images.
        p: fraction in [0, 1] to drop.
        block: side of the dropped cells in pixels.
    """
    check_number("p", p, high=1.0)
    check_positive_int("block", block)
    if x.ndim != 4:
        raise ModelError(f"masking_noise expects (N, C, H, W) images, got shape {tuple(x.shape)}")
    n, _, h, w = x.shape
    rows, cols = math.ceil(h / block), math.ceil(w / block)
    dropped = round(p * rows * cols)
    order = torch.rand(n, rows * cols, device=x.device).argsort(dim=1)[:, :dropped]
    keep = torch.ones(n, rows * cols, device=x.device, dtype=x.dtype).scatter_(1, order, 0.0)
    keep = keep.view(n, 1, rows, cols)
    if block > 1:
        keep = keep.repeat_interleave(block, dim=2).repeat_interleave(block, dim=3)[..., :h, :w]
    return x * keep


class DenoisingAutoEncoder(AutoEncoder):
    """A conv or MLP autoencoder trained to undo Gaussian or masking noise."""

    kind = "denoising"

    def __init__(
        self,
        input_shape: Sequence[int],
        code_dim: int,
        *,
        arch: str = "conv",
        hidden: Sequence[int] | None = None,
        channels: Sequence[int] | None = None,
        decoder: str | None = None,
        noise: str = "gaussian",
        noise_level: float | None = None,
        block: int | None = None,
        recon: str = "mse",
    ) -> None:
        """Args:
        arch: "conv" (options `channels`, `decoder` as in `ConvAutoEncoder`) or "mlp" (option `hidden`).
        noise: "gaussian" or "mask".
        noise_level: sigma of the Gaussian (default 0.3) or the dropped fraction (default 0.25).
        block: side of the masked cells, mask noise only (default 1: single pixels).
        recon: "mse" or "bce".
        """
        options = arch_options(self.kind, input_shape, arch, hidden, channels, decoder)
        options["noise"] = check_choice("noise", noise, NOISES)
        level = DEFAULT_NOISE_LEVEL[noise] if noise_level is None else noise_level
        options["noise_level"] = check_number("noise_level", level, high=1.0 if noise == "mask" else math.inf)
        if noise == "mask":
            options["block"] = check_positive_int("block", 1 if block is None else block)
        else:
            check_unused(self.kind, block=block)
        options["recon"] = check_choice("recon", recon, RECON_MODES)
        super().__init__(input_shape, code_dim, options)
        features, width = build_body(self.input_shape, options)
        self.encoder = Encoder(features, width, self.code_dim)
        self.decoder = build_decoder(self.input_shape, options, self.code_dim)

    def corrupt(self, x: Tensor) -> Tensor:
        """A noisy copy of `x` with this model's noise."""
        if self.options["noise"] == "mask":
            return masking_noise(x, self.options["noise_level"], self.options["block"])
        return gaussian_noise(x, self.options["noise_level"])

    def loss(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """Reconstruction of the clean `x` from a corrupted copy (from `x` itself in eval mode)."""
        out = self.forward(self.corrupt(x) if self.training else x, y)
        recon = self.reconstruction_error(out["logits"], x)
        return {"loss": recon, "recon": recon.detach()}
