"""The model a pretraining run trains: the autoencoder its recipe names, its optimizers, and its checkpoint (the
encoder as an embedding model, the whole autoencoder beside it), written and read back."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from simsearch.autoencoders import AutoEncoder, autoencoder_from_config, build_autoencoder, encoder_backbone
from simsearch.errors import ModelError
from simsearch.models import Embedder, resolve_device, save_checkpoint
from simsearch.models.backbones import AE_BACKBONE_PREFIX, ae_data_config
from simsearch.models.checkpoint import CHECKPOINT_CONFIG, check_checkpoint_file
from simsearch.pretraining.recipe import PretrainConfig, PretrainError

__all__ = ["AE_WEIGHTS", "build", "load_autoencoder", "make_optimizers", "save"]

# The full autoencoder (decoder and discriminator too) beside the checkpoint's encoder-only model.safetensors.
AE_WEIGHTS = "autoencoder.safetensors"
# The L1 sparse code can shrink while the decoder's weights grow to undo it; a little weight decay there stops it.
_SPARSE_DECODER_WEIGHT_DECAY = 1e-4


def build(config: PretrainConfig, shape: tuple[int, int, int], num_classes: int) -> AutoEncoder:
    try:
        return build_autoencoder(config.kind, shape, config.code_dim, num_classes=num_classes, **config.options)
    except ModelError as exc:
        raise PretrainError(str(exc)) from None
    except TypeError as exc:  # a value of the wrong type that the model's own checks did not catch
        raise PretrainError(f"bad option for a {config.kind} autoencoder: {exc}") from None


def make_optimizers(ae: AutoEncoder, config: PretrainConfig) -> list[torch.optim.Optimizer]:
    """Adam over the model; a VAE-GAN gets a second Adam over its discriminator (`discriminator_loss`)."""
    decay = config.decoder_weight_decay
    if decay is None:
        sparse_l1 = ae.kind == "sparse" and ae.options.get("sparsity") == "l1"
        decay = _SPARSE_DECODER_WEIGHT_DECAY if sparse_l1 else 0.0
    decoder_ids = {id(p) for p in ae.decoder.parameters()}
    if ae.kind == "vaegan":
        params = list(ae.generator_parameters())  # type: ignore[operator]
    else:
        params = list(ae.parameters())
    groups = [
        {"params": [p for p in params if id(p) not in decoder_ids], "weight_decay": 0.0},
        {"params": [p for p in params if id(p) in decoder_ids], "weight_decay": decay},
    ]
    optimizers: list[torch.optim.Optimizer] = [torch.optim.Adam([g for g in groups if g["params"]], lr=config.lr)]
    if ae.kind == "vaegan":
        disc = list(ae.discriminator_parameters())  # type: ignore[operator]
        optimizers.append(torch.optim.Adam(disc, lr=config.disc_lr or config.lr, betas=(0.5, 0.999)))
    return optimizers


def _embedder(ae: AutoEncoder) -> Embedder:
    """The checkpoint's embedding model: the encoder (shared with `ae`), no head, L2 norm."""
    ae_config = ae.config()
    return Embedder(
        encoder_backbone(ae),
        arch=f"{AE_BACKBONE_PREFIX}{ae.kind}",
        embed_dim=None,
        spec={"kind": "trained", "name": f"{AE_BACKBONE_PREFIX}{ae.kind}", "path": None},
        data_config=ae_data_config(ae.input_shape),
        backbone_kwargs={k: ae_config[k] for k in ("input_shape", "code_dim", "num_classes", "options")},
    )


def save(ae: AutoEncoder, out: Path, extra: dict[str, Any]) -> None:
    """The checkpoint: the encoder as the embedding model, the full autoencoder beside it in AE_WEIGHTS; config.json,
    written last, vouches for both files."""
    save_checkpoint(
        _embedder(ae),
        out,
        extra_config={"autoencoder": ae.config(), **extra},
        extra_weights={AE_WEIGHTS: ae.state_dict()},
    )


def load_autoencoder(folder: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> AutoEncoder:
    """The full autoencoder of a pretraining checkpoint (eval mode), for pictures or more training.

    Raises:
        PretrainError: not a pretraining checkpoint, or its weights do not fit its config.
    """
    import safetensors.torch

    path = Path(folder).expanduser()
    config_path, weights = path / CHECKPOINT_CONFIG, path / AE_WEIGHTS
    if not config_path.is_file() or not weights.is_file():
        raise PretrainError(f"{path} is not an autoencoder checkpoint (needs {CHECKPOINT_CONFIG} and {AE_WEIGHTS})")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        check_checkpoint_file(path, config, AE_WEIGHTS)
        ae = autoencoder_from_config(config["autoencoder"])
        ae.load_state_dict(safetensors.torch.load_file(str(weights)))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, ModelError) as exc:
        raise PretrainError(f"cannot load the autoencoder of {path}: {exc}".splitlines()[0]) from None
    return ae.to(resolve_device(device)).eval()
