"""Building a backbone by name: a timm model without its classifier (GeM pooling on request), or the encoder of a
simsearch autoencoder ("simsearch-ae:<kind>"); unknown names fail with close matches."""

from __future__ import annotations

import difflib
from typing import Any

import timm
from torch import nn

from simsearch.errors import ModelError
from simsearch.models import convnet as _convnet  # noqa: F401 - registers the simsearch_* timm models
from simsearch.models.pooling import GEM_OPTION, use_gem

# "simsearch-ae:<kind>" names the encoder of a simsearch autoencoder as a backbone; its backbone_kwargs are the
# autoencoder's config (input_shape, code_dim, num_classes, options). Written by `simsearch.pretraining`.
AE_BACKBONE_PREFIX = "simsearch-ae:"


def check_model_name(name: str) -> None:
    """ModelError with close matches for a name timm does not know."""
    if name.startswith(("hf-hub:", "hf_hub:")):
        return
    if name.startswith(AE_BACKBONE_PREFIX):
        from simsearch.autoencoders import KINDS

        kind = name[len(AE_BACKBONE_PREFIX) :]
        if kind not in KINDS:
            raise ModelError(f"unknown autoencoder kind {kind!r} in {name!r}; known: {', '.join(KINDS)}")
        return
    arch = name.split(".", 1)[0]
    if timm.is_model(arch):
        if "." in name and not timm.is_model_pretrained(name):
            tags = timm.list_pretrained(f"{arch}.*")[:8]
            hint = f": known ones are {', '.join(tags)}" if tags else ""
            raise ModelError(f"timm model {arch!r} has no pretrained tag {name.split('.', 1)[1]!r}{hint}")
        return
    candidates = timm.list_models(f"*{arch}*")[:6]
    for close in difflib.get_close_matches(arch, timm.list_models(), n=6, cutoff=0.6):
        if close not in candidates:
            candidates.append(close)
    hint = f"; did you mean {', '.join(candidates[:8])}?" if candidates else "; see timm.list_models()"
    raise ModelError(f"unknown model {name!r} (not a timm model name nor an existing path){hint}")


def create_backbone(name: str, *, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """timm backbone with its classifier removed (num_classes=0): forward gives pooled (N, F) features.

    The option `gem_p` is ours, not timm's: GeM pooling starting at that p (`simsearch.models.pooling`).

    A "simsearch-ae:<kind>" name builds an autoencoder's encoder instead (see `_create_ae_backbone`).
    """
    check_model_name(name)
    if name.startswith(AE_BACKBONE_PREFIX):
        # timm's options (in_chans, img_size...) and gem_p would change what the pretraining fixed.
        unsupported = sorted(set(kwargs) - {"input_shape", "code_dim", "num_classes", "options"})
        if unsupported:
            raise ModelError(
                f"{name} takes no backbone option {', '.join(unsupported)}: an autoencoder backbone's input shape "
                "and layers are fixed by its pretraining"
            )
        try:
            return _create_ae_backbone(name, **kwargs)
        except TypeError:
            raise ModelError(
                f"{name} needs the autoencoder's input_shape and code_dim (and may take num_classes, options) as "
                f"backbone options; got {', '.join(sorted(kwargs)) or 'none'}"
            ) from None
    kwargs = dict(kwargs)
    gem_p = kwargs.pop(GEM_OPTION, None)
    try:
        backbone = timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    except ModelError:
        raise
    except Exception as e:  # noqa: BLE001 - timm raises many types for bad kwargs
        raise ModelError(f"could not build timm model {name!r}: {type(e).__name__}: {e}".splitlines()[0]) from None
    if gem_p is not None:
        use_gem(backbone, gem_p)
    return backbone


def _create_ae_backbone(
    name: str,
    *,
    input_shape: list[int] | tuple[int, int, int],
    code_dim: int,
    num_classes: int | None = None,
    options: dict[str, Any] | None = None,
) -> nn.Module:
    """The encoder of an (untrained) `build_autoencoder(kind, ...)` as an `EncoderBackbone`.

    It carries a timm-style `pretrained_cfg`, so `resolve_data_config` gives its input: (C, H, W) images in [0, 1]
    (mean 0, std 1), resized so the shorter side fits and centre-cropped, as the autoencoder was trained.
    """
    from simsearch.autoencoders import build_autoencoder, encoder_backbone

    kind = name[len(AE_BACKBONE_PREFIX) :]
    ae = build_autoencoder(kind, input_shape, code_dim, num_classes=num_classes, **(options or {}))
    backbone = encoder_backbone(ae)
    backbone.pretrained_cfg = {"architecture": name, **ae_data_config(ae.input_shape)}  # type: ignore[assignment]
    return backbone


def ae_data_config(input_shape: tuple[int, ...] | list[int]) -> dict[str, Any]:
    """The data config of an autoencoder's encoder: `(C, H, W)` in [0, 1], shorter side resized, centre-cropped."""
    channels = int(input_shape[0])
    return {
        "input_size": tuple(int(s) for s in input_shape),
        "interpolation": "bilinear",
        "mean": (0.0,) * channels,
        "std": (1.0,) * channels,
        "crop_pct": 1.0,
        "crop_mode": "center",
    }
