"""VAE-GAN (Larsen et al. 2016, "Autoencoding beyond pixels using a learned similarity metric").

A conv VAE whose decoder doubles as a GAN generator. The reconstruction error is measured between the
discriminator's last conv features of x and of its reconstruction (the learned similarity) instead of pixels,
relative to the energy of the features of x (`feature_error`).
Two optimisers: one over `generator_parameters()` (encoder + decoder) minimising `loss`, one over
`discriminator_parameters()` minimising `discriminator_loss`:

    gen:  recon_features + pixel_weight * pixel_mse + beta * kl / (C*H*W) + gan_weight * gan
    disc: BCE(D(x), real) + (BCE(D(x_rec), fake) + BCE(D(x_prior), fake)) / 2

Simplification of the paper: the encoder and decoder share one objective (the paper keeps the GAN term away from
the encoder); `gan` is the non-saturating generator loss on reconstructions and on prior samples.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import chain

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simsearch.autoencoders.base import check_number
from simsearch.autoencoders.conv import ConvFeatures
from simsearch.autoencoders.vae import VAE, kl_normal, reparameterize

_LEAKY_SLOPE = 0.2


class Discriminator(nn.Module):
    """Strided LeakyReLU convs without BatchNorm (real and fake batches pass separately), then one logit."""

    def __init__(self, input_shape: tuple[int, int, int], channels: Sequence[int]) -> None:
        super().__init__()
        self.features = ConvFeatures(input_shape, channels, batch_norm=False, negative_slope=_LEAKY_SLOPE)
        self.logit = nn.Linear(self.features.out_features, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """`(logits (N,), features (N, F))`: the features are the layer the reconstruction is measured on."""
        features = self.features(x)
        return self.logit(features).squeeze(1), features


@contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """No gradients into `module`'s parameters (they still flow through it to the inputs)."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def feature_error(fake: Tensor, real: Tensor) -> Tensor:
    """Squared feature distance relative to the real features' energy: `sum ||f~ - f||^2 / sum ||f||^2`.

    Relative, so that the term keeps its scale while the discriminator's activations grow or shrink in training
    (at initialisation they are tiny, and a plain mean squared error would leave only the GAN term).
    """
    return (fake - real).pow(2).sum() / real.pow(2).sum().clamp_min(1e-12)


def _bce(logits: Tensor, target: float) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


class VAEGAN(VAE):
    """VAE-GAN on a conv VAE; `discriminator` has the encoder's widths."""

    kind = "vaegan"

    def __init__(
        self,
        input_shape: Sequence[int],
        code_dim: int,
        *,
        channels: Sequence[int] | None = None,
        decoder: str | None = None,
        beta: float = 1.0,
        gan_weight: float = 0.1,
        pixel_weight: float = 0.0,
    ) -> None:
        """Args:
        channels: encoder (and discriminator) widths, default `conv.default_channels(input_shape)`.
        decoder: "upsample" or "transposed".
        beta: weight of the KL term.
        gan_weight: weight of the generator's adversarial term.
        pixel_weight: weight of an extra pixel-space squared error (0 = the paper's objective).
        """
        super().__init__(input_shape, code_dim, arch="conv", channels=channels, decoder=decoder, beta=beta)
        self.options = {
            "channels": self.options["channels"],
            "decoder": self.options["decoder"],
            "beta": self.options["beta"],
            "gan_weight": check_number("gan_weight", gan_weight),
            "pixel_weight": check_number("pixel_weight", pixel_weight),
        }
        self.discriminator = Discriminator(self.input_shape, self.options["channels"])

    def generator_parameters(self) -> Iterator[nn.Parameter]:
        """Encoder and decoder parameters: what `loss` trains."""
        return chain(self.encoder.parameters(), self.decoder.parameters())

    def discriminator_parameters(self) -> Iterator[nn.Parameter]:
        return self.discriminator.parameters()

    def _prior_images(self, n: int, like: Tensor) -> Tensor:
        return self.decode(torch.randn(n, self.code_dim, device=like.device, dtype=like.dtype))

    def loss(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """The encoder+decoder objective; the discriminator is frozen meanwhile, so its gradients stay untouched."""
        out = self.forward(x)
        prior = self._prior_images(x.shape[0], x)
        with _frozen(self.discriminator):
            _, real_features = self.discriminator(x)
            rec_logits, rec_features = self.discriminator(out["recon"])
            prior_logits, _ = self.discriminator(prior)
        recon = feature_error(rec_features, real_features.detach())
        pixel = F.mse_loss(out["recon"], x)
        kl = kl_normal(out["mu"], out["logvar"]).mean()
        gan = 0.5 * (_bce(rec_logits, 1.0) + _bce(prior_logits, 1.0))
        o = self.options
        loss = recon + o["pixel_weight"] * pixel + o["beta"] * kl / self.num_pixels + o["gan_weight"] * gan
        return {"loss": loss, "recon": recon.detach(), "pixel": pixel.detach(), "kl": kl.detach(), "gan": gan.detach()}

    def discriminator_loss(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """Real images against reconstructions and prior samples (made without gradients to the generator)."""
        self.check_images(x)
        with torch.no_grad():
            mu, logvar = self.encoder.stats(x)
            fakes = torch.cat([self.decode(reparameterize(mu, logvar)), self._prior_images(x.shape[0], x)])
        real_logits, _ = self.discriminator(x)
        fake_logits, _ = self.discriminator(fakes)
        real, fake = _bce(real_logits, 1.0), _bce(fake_logits, 0.0)
        accuracy = torch.cat([real_logits > 0, fake_logits < 0]).float().mean()
        return {"loss": real + fake, "real": real.detach(), "fake": fake.detach(), "accuracy": accuracy}
