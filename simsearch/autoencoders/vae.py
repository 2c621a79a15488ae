"""Variational autoencoder (Kingma & Welling 2014) and its conditional form (CVAE, Sohn et al. 2015).

The loss is the negative ELBO divided by C*H*W, so that it sits on the per-pixel scale of the other kinds:
`recon + beta * kl / (C*H*W)`, with `recon` the per-pixel error ("bce" is the Bernoulli likelihood, "mse" a
Gaussian one) and `kl` the closed-form KL(q(z|x) || N(0, I)) per image. `beta` > 1 is beta-VAE (Higgins et al. 2017).
The code of an image is the posterior mean mu.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simsearch.autoencoders.arch import arch_options, build_body, build_decoder
from simsearch.autoencoders.base import (
    RECON_MODES,
    AutoEncoder,
    check_choice,
    check_number,
    check_positive_int,
)
from simsearch.errors import ModelError

LOGVAR_LIMIT = 10.0  # exp(+-10) bounds the variance, so an early large step cannot overflow exp(logvar)


def kl_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per row: `(N, D)`, `(N, D)` -> `(N,)`."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


def reparameterize(mu: Tensor, logvar: Tensor) -> Tensor:
    """A sample `mu + sigma * eps` through which gradients reach mu and logvar."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def vae_options(
    kind: str,
    input_shape: Sequence[int],
    arch: str,
    hidden: Sequence[int] | None,
    channels: Sequence[int] | None,
    decoder: str | None,
    beta: float,
    recon: str,
) -> dict[str, Any]:
    """Resolved options shared by the VAE and the CVAE."""
    options = arch_options(kind, input_shape, arch, hidden, channels, decoder)
    if options.get("decoder") == "unpool":
        raise ModelError(
            f"{kind}: decoder 'unpool' needs the max-pooling positions of an encoded image, so it cannot decode "
            "prior samples; use upsample or transposed"
        )
    options["beta"] = check_number("beta", beta)
    options["recon"] = check_choice("recon", recon, RECON_MODES)
    return options


class GaussianEncoder(nn.Module):
    """Feature layers, then two linear heads for mu and log-variance; `cond_dim` extra inputs (one-hot labels)
    join the features before the heads. `forward` gives mu, the deterministic code."""

    def __init__(self, features: nn.Module, features_dim: int, code_dim: int, cond_dim: int = 0) -> None:
        super().__init__()
        self.features = features
        self.mu = nn.Linear(features_dim + cond_dim, code_dim)
        self.logvar = nn.Linear(features_dim + cond_dim, code_dim)
        self.cond_dim = cond_dim

    def stats(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """`(mu, logvar)`, each `(N, code_dim)`; a missing `cond` counts as all zeros (label unknown)."""
        h = self.features(x)
        if self.cond_dim:
            if cond is None:
                cond = h.new_zeros(h.shape[0], self.cond_dim)
            h = torch.cat([h, cond.to(h.dtype)], dim=1)
        return self.mu(h), self.logvar(h).clamp(-LOGVAR_LIMIT, LOGVAR_LIMIT)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.stats(x, cond)[0]


class VAE(AutoEncoder):
    """VAE with a conv (default) or MLP encoder/decoder; `forward` samples z while training and uses mu in eval."""

    kind = "vae"
    encoder: GaussianEncoder

    def __init__(
        self,
        input_shape: Sequence[int],
        code_dim: int,
        *,
        arch: str = "conv",
        hidden: Sequence[int] | None = None,
        channels: Sequence[int] | None = None,
        decoder: str | None = None,
        beta: float = 1.0,
        recon: str = "mse",
    ) -> None:
        """Args:
        arch: "conv" (options `channels`, `decoder`) or "mlp" (option `hidden`).
        beta: weight of the KL term (1 = the ELBO).
        recon: "mse" or "bce".
        """
        options = vae_options(self.kind, input_shape, arch, hidden, channels, decoder, beta, recon)
        self._setup(input_shape, code_dim, options, None)

    def _setup(
        self, input_shape: Sequence[int], code_dim: int, options: dict[str, Any], num_classes: int | None
    ) -> None:
        """Build the modules; shared by `VAE` and `CVAE` so that only the CVAE takes `num_classes`."""
        super().__init__(input_shape, code_dim, options, num_classes)
        cond_dim = num_classes or 0
        features, width = build_body(self.input_shape, options)
        self.encoder = GaussianEncoder(features, width, self.code_dim, cond_dim)
        self.decoder = build_decoder(self.input_shape, options, self.code_dim + cond_dim)

    def condition(self, y: Tensor | None, n: int, like: Tensor) -> Tensor | None:
        """One-hot `(n, num_classes)` labels for a conditional model (zeros when `y` is None), else None."""
        if not self.num_classes:
            return None
        if y is None:
            return like.new_zeros(n, self.num_classes)
        y = torch.as_tensor(y, device=like.device)
        if y.shape != (n,) or y.is_floating_point():
            raise ModelError(f"labels must be ({n},) integers, got shape {tuple(y.shape)} of {y.dtype}")
        if n and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ModelError(f"labels must lie in 0..{self.num_classes - 1}, got {int(y.min())}..{int(y.max())}")
        return F.one_hot(y.long(), self.num_classes).to(like.dtype)

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The posterior mean mu `(N, code_dim)`."""
        self.check_images(x)
        return self.encoder(x, self.condition(y, x.shape[0], x))

    def decode_logits(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        cond = self.condition(y, z.shape[0], z)
        return self.decoder(z if cond is None else torch.cat([z, cond], dim=1))

    def forward(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """`recon`, `code` (= `mu`), `mu`, `logvar`, the `z` decoded and the decoder's `logits`."""
        self.check_images(x)
        mu, logvar = self.encoder.stats(x, self.condition(y, x.shape[0], x))
        z = reparameterize(mu, logvar) if self.training else mu
        logits = self.decode_logits(z, y)
        return {"recon": self.output(logits), "code": mu, "mu": mu, "logvar": logvar, "z": z, "logits": logits}

    def loss(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """`recon + beta * kl / (C*H*W)`; `kl` is reported per image (nats), `recon` per pixel."""
        out = self.forward(x, y)
        recon = self.reconstruction_error(out["logits"], x)
        kl = kl_normal(out["mu"], out["logvar"]).mean()
        loss = recon + self.options["beta"] * kl / self.num_pixels
        return {"loss": loss, "recon": recon.detach(), "kl": kl.detach()}

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        """`n` images `(n, C, H, W)` decoded from prior draws z ~ N(0, I)."""
        check_positive_int("n", n)
        z = torch.randn(n, self.code_dim, device=next(self.parameters()).device)
        return self.decode(z, y)


class CVAE(VAE):
    """Conditional VAE: the one-hot label joins the encoder's features and the decoder's input.

    The loss needs labels. `encode` and `decode` accept `y=None` (an all-zero label: "class unknown"), which is
    what a backbone sees on unseen classes; since the label carries the class, the code carries mostly style.
    """

    kind = "cvae"
    conditional = True

    def __init__(
        self,
        input_shape: Sequence[int],
        code_dim: int,
        *,
        num_classes: int,
        arch: str = "conv",
        hidden: Sequence[int] | None = None,
        channels: Sequence[int] | None = None,
        decoder: str | None = None,
        beta: float = 1.0,
        recon: str = "mse",
    ) -> None:
        options = vae_options(self.kind, input_shape, arch, hidden, channels, decoder, beta, recon)
        self._setup(input_shape, code_dim, options, check_positive_int("num_classes", num_classes))

    def loss(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        if y is None:
            raise ModelError("a cvae needs the class labels y to compute its loss")
        return super().loss(x, y)

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        """`n` images for labels `y` `(n,)`; without `y`, the classes in turn (0, 1, ..., num_classes - 1, 0, ...)."""
        check_positive_int("n", n)
        device = next(self.parameters()).device
        if y is None:
            y = torch.arange(n, device=device) % int(self.num_classes or 1)
        return super().sample(n, y)
