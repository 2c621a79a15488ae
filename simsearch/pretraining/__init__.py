"""Autoencoder pretraining: a recipe (`PretrainConfig`, `simsearch.pretraining.recipe`), the images in memory
(`simsearch.pretraining.data`), the model and its checkpoint (`simsearch.pretraining.model`) and the loop
(`simsearch.pretraining.loop`, through `simsearch.runs`). The checkpoint is also an embedding model:
`load_embedder(folder)` gives its encoder."""

from simsearch.pretraining.data import images_to_tensor
from simsearch.pretraining.loop import PICTURES_DIR, pretrain
from simsearch.pretraining.model import AE_WEIGHTS, load_autoencoder
from simsearch.pretraining.recipe import PretrainConfig, PretrainError, PretrainResult

__all__ = [
    "AE_WEIGHTS",
    "PICTURES_DIR",
    "PretrainConfig",
    "PretrainError",
    "PretrainResult",
    "images_to_tensor",
    "load_autoencoder",
    "pretrain",
]
