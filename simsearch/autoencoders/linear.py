"""One-layer linear autoencoder: the PCA baseline (Baldi & Hornik 1989: its optimum spans the principal subspace).

encode = W x + b on the flattened pixels, decode = V z + c, with no nonlinearity and no sigmoid. The input is not
mean-centred: the two biases can absorb the mean (b = -W mean, c = mean), so at the optimum the reconstruction
error equals PCA's at the same code size. `decode` can therefore leave [0, 1] slightly.

The weights start as a random orthonormal projection and its transpose (decoder = encoder^T, the form of PCA's
solution): from PyTorch's small default init, gradient descent lingers near the saddle at zero (Saxe et al. 2014),
and on 2,000 Fashion-MNIST images (code 16) LBFGS was still 37% above PCA's error after 500 steps from it, but
within 1% after 300 steps from this init.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from simsearch.autoencoders.base import AutoEncoder, Encoder, check_choice


class LinearAutoEncoder(AutoEncoder):
    """Linear autoencoder trained on per-pixel squared error (its only reconstruction loss)."""

    kind = "linear"
    encoder: Encoder
    decoder: nn.Sequential

    def __init__(self, input_shape: Sequence[int], code_dim: int, *, recon: str = "mse") -> None:
        """Args:
        recon: "mse" only (accepted so that a caller can pass the same option to every kind); an unbounded output
            has no Bernoulli cross-entropy.
        """
        super().__init__(input_shape, code_dim, {"recon": check_choice("recon", recon, ("mse",))})
        pixels = math.prod(self.input_shape)
        self.encoder = Encoder(nn.Flatten(), pixels, self.code_dim)
        self.decoder = nn.Sequential(nn.Linear(self.code_dim, pixels), nn.Unflatten(1, self.input_shape))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Encoder W: orthonormal rows (a random projection); decoder V = W^T; both biases 0."""
        weight = self.encoder.code.weight
        nn.init.orthogonal_(weight)
        out = cast(nn.Linear, self.decoder[0])
        out.weight.copy_(weight.T)
        self.encoder.code.bias.zero_()
        out.bias.zero_()

    def output(self, logits: Tensor) -> Tensor:
        return logits
