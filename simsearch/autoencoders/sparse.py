"""Sparse autoencoder: a penalty that keeps most code units near zero (conv or MLP body).

"l1": ReLU codes, penalty = mean over the batch of the code's L1 norm. "kl": sigmoid codes, penalty =
sum over units of KL(rho || rho_hat_j), rho_hat_j the unit's mean activation over the batch (Ng, CS294A notes).
With "l1", the decoder could undo a shrinking code by growing its weights; weight decay on the decoder prevents it.
"""

from __future__ import annotations

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
    check_unused,
)

SPARSITIES = ("l1", "kl")
_EPS = 1e-6  # keeps the KL finite when a unit is always off or always on in a batch


def l1_penalty(code: Tensor) -> Tensor:
    """Mean over the batch of `sum_j |z_j|`: `(N, D)` -> scalar."""
    return code.abs().sum(dim=1).mean()


def kl_sparsity(code: Tensor, rho: float) -> Tensor:
    """`sum_j KL(Bernoulli(rho) || Bernoulli(rho_hat_j))` with `rho_hat_j` unit j's batch mean; codes in (0, 1)."""
    mean = code.mean(dim=0)
    # The clamp keeps the value finite; its gradient is let through, or a unit saturated across the batch (always
    # off or always on) would get none and stay that way.
    rho_hat = mean + (mean.clamp(_EPS, 1.0 - _EPS) - mean).detach()
    return (rho * torch.log(rho / rho_hat) + (1.0 - rho) * torch.log((1.0 - rho) / (1.0 - rho_hat))).sum()


class SparseAutoEncoder(AutoEncoder):
    """An autoencoder whose loss adds `weight * sparsity penalty` to the reconstruction error."""

    kind = "sparse"

    def __init__(
        self,
        input_shape: Sequence[int],
        code_dim: int,
        *,
        arch: str = "conv",
        hidden: Sequence[int] | None = None,
        channels: Sequence[int] | None = None,
        decoder: str | None = None,
        sparsity: str = "l1",
        weight: float = 1e-3,
        rho: float | None = None,
        recon: str = "mse",
    ) -> None:
        """Args:
        arch: "conv" (options `channels`, `decoder`) or "mlp" (option `hidden`).
        sparsity: "l1" (ReLU codes) or "kl" (sigmoid codes, target mean activation `rho`).
        weight: the penalty's weight against the per-pixel reconstruction error.
        rho: target mean activation for "kl" (default 0.05).
        recon: "mse" or "bce".
        """
        options = arch_options(self.kind, input_shape, arch, hidden, channels, decoder)
        options["sparsity"] = check_choice("sparsity", sparsity, SPARSITIES)
        options["weight"] = check_number("weight", weight)
        if sparsity == "kl":
            options["rho"] = check_number("rho", 0.05 if rho is None else rho, high=1.0 - _EPS, open_low=True)
        else:
            check_unused(self.kind, rho=rho)
        options["recon"] = check_choice("recon", recon, RECON_MODES)
        super().__init__(input_shape, code_dim, options)
        features, width = build_body(self.input_shape, options)
        activation = "sigmoid" if sparsity == "kl" else "relu"
        self.encoder = Encoder(features, width, self.code_dim, activation=activation)
        self.decoder = build_decoder(self.input_shape, options, self.code_dim)

    def penalty(self, code: Tensor) -> Tensor:
        if self.options["sparsity"] == "kl":
            return kl_sparsity(code, self.options["rho"])
        return l1_penalty(code)

    def loss(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """`recon + weight * sparsity`, with both terms reported unweighted."""
        out = self.forward(x, y)
        recon = self.reconstruction_error(out["logits"], x)
        sparsity = self.penalty(out["code"])
        loss = recon + self.options["weight"] * sparsity
        return {"loss": loss, "recon": recon.detach(), "sparsity": sparsity.detach()}
