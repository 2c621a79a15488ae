"""A trained autoencoder's encoder as an embedding backbone: images in, `(N, code_dim)` codes out."""

from __future__ import annotations

from torch import Tensor, nn

from simsearch.autoencoders.base import AutoEncoder
from simsearch.errors import ModelError


class EncoderBackbone(nn.Module):
    """The encoder of `ae` (shared, not copied) as a backbone with `num_features = code_dim`.

    It holds the encoder under the same attribute name as the autoencoder (`encoder`), so its state-dict keys are
    exactly the autoencoder's `encoder.*` keys and weights load either way. The encoder expects images in [0, 1]
    (data config mean 0, std 1) of the autoencoder's `input_shape`. For a CVAE the code is computed without a label
    (an all-zero one-hot), as `ae.encode(x)` does.
    """

    def __init__(self, ae: AutoEncoder) -> None:
        super().__init__()
        self.encoder = ae.encoder_modules()
        self.num_features = ae.code_dim
        self.input_shape = ae.input_shape
        self.kind = ae.kind

    def forward(self, x: Tensor) -> Tensor:
        """`(N, C, H, W)` in [0, 1] -> `(N, num_features)`."""
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ModelError(
                f"{self.kind} encoder expects images of shape (N, {', '.join(map(str, self.input_shape))}), "
                f"got {tuple(x.shape)}"
            )
        return self.encoder(x)


def encoder_backbone(ae: AutoEncoder) -> EncoderBackbone:
    """The encoder of `ae` as a backbone (sharing its weights)."""
    return EncoderBackbone(ae)
