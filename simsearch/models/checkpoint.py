"""The simsearch checkpoint format: a folder with model.safetensors (and any other weights files a trainer keeps
beside it) and config.json, written so that a crash never leaves weights and config that disagree.

Every weights file is written (each through `simsearch.fsio.atomic_path`) before config.json, and config.json
records each file's size and SHA-256 under "files". A crash between the writes leaves new weights beside the old
config (or no config at all); the reader finds the mismatch and says the checkpoint is half-written, in one line,
instead of loading weights that another config describes. Checkpoints written before "files" existed load as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from simsearch.errors import ModelError
from simsearch.fsio import atomic_write_bytes, atomic_write_text
from simsearch.models.embedder import Embedder
from simsearch.models.weights import file_sha256

__all__ = [
    "CHECKPOINT_CONFIG",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CHECKPOINT_WEIGHTS",
    "check_checkpoint_file",
    "read_checkpoint_config",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "simsearch-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_WEIGHTS = "model.safetensors"
CHECKPOINT_CONFIG = "config.json"
#: config.json's record of the weights files it belongs with: {name: {"bytes": int, "sha256": hex}}.
FILES_KEY = "files"
_RESERVED_CONFIG_KEYS = ("format", "version", "backbone", "embed_dim", "data_config", "backbone_kwargs", FILES_KEY)


def _safetensors_bytes(state: Mapping[str, torch.Tensor]) -> bytes:
    import safetensors.torch

    # Cloning breaks tied/shared storage (safetensors refuses it) and drops channels_last strides.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    return safetensors.torch.save(tensors, metadata={"format": "pt"})


def save_checkpoint(
    embedder: Embedder,
    folder: str | os.PathLike[str],
    extra_config: dict[str, Any] | None = None,
    *,
    extra_weights: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
) -> Path:
    """Write `embedder` as a simsearch checkpoint folder (model.safetensors + config.json) that load_embedder reads.

    A test-time augmentation (`Embedder.tta`) is not kept: it is chosen where the checkpoint is used.

    Args:
        extra_config: More JSON-able entries for config.json (training recipe, metrics); may not override format keys.
        extra_weights: More safetensors files to keep beside the model, by file name (an autoencoder's decoder);
            config.json vouches for them as for the model's weights.

    Returns:
        The folder.
    """
    extra = dict(extra_config or {})
    clash = sorted(set(extra) & set(_RESERVED_CONFIG_KEYS))
    if clash:
        raise ModelError(f"extra_config may not set reserved checkpoint keys: {', '.join(clash)}")
    files = {CHECKPOINT_WEIGHTS: _safetensors_bytes(embedder.state_dict())}
    for name, state in (extra_weights or {}).items():
        if name in (CHECKPOINT_WEIGHTS, CHECKPOINT_CONFIG) or Path(name).name != name:
            raise ModelError(f"extra_weights may not be named {name!r}")
        files[name] = _safetensors_bytes(state)
    config: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "backbone": embedder.arch,
        "embed_dim": embedder.projection_dim,
        "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in embedder.data_config.items()},
    }
    if embedder.backbone_kwargs:
        config["backbone_kwargs"] = embedder.backbone_kwargs
    config.update(extra)
    config[FILES_KEY] = {
        name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()} for name, data in files.items()
    }
    try:
        config_text = json.dumps(config, indent=2, sort_keys=False) + "\n"
    except (TypeError, ValueError) as e:
        raise ModelError(f"checkpoint config is not JSON-serialisable: {e}") from None

    out = Path(folder).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        atomic_write_bytes(out / name, data)
    atomic_write_text(out / CHECKPOINT_CONFIG, config_text)  # last: it vouches for the files above
    logger.info("saved checkpoint %s (%s, %d-d)", out, embedder.arch, embedder.embed_dim)
    return out


def check_checkpoint_file(folder: Path, config: Mapping[str, Any], name: str, sha256: str | None = None) -> None:
    """Raise a one-line ModelError when weights file `name` is not the one config.json was written with (a crash
    between the writes). `sha256` is the file's digest when the caller has it already. A config without a record
    of its files (written before they were recorded) is trusted as it is."""
    recorded = (config.get(FILES_KEY) or {}).get(name)
    if not isinstance(recorded, dict):
        return
    path = folder / name
    size = path.stat().st_size if path.is_file() else -1
    if size != recorded.get("bytes") or (sha256 or file_sha256(path)) != recorded.get("sha256"):
        raise ModelError(
            f"checkpoint {folder} is half-written: {name} is not the file its {CHECKPOINT_CONFIG} describes "
            "(saving was interrupted); save it again, or resume the run that writes it"
        )


def read_checkpoint_config(folder: Path) -> dict[str, Any]:
    """The checked config.json of a checkpoint folder.

    Raises:
        ModelError: not a checkpoint, a config of a newer format or with bad entries.
    """
    config_path = folder / CHECKPOINT_CONFIG
    if not config_path.is_file() or not (folder / CHECKPOINT_WEIGHTS).is_file():
        raise ModelError(f"{folder} is not a simsearch checkpoint (needs {CHECKPOINT_WEIGHTS} and {CHECKPOINT_CONFIG})")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"unreadable checkpoint config {config_path}: {e}") from None
    if not isinstance(config, dict) or config.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{config_path} is not a simsearch checkpoint config (format != {CHECKPOINT_FORMAT!r})")
    version = config.get("version")
    if not isinstance(version, int) or version < 1:
        raise ModelError(f"{config_path} has an invalid version {version!r}")
    if version > CHECKPOINT_VERSION:
        raise ModelError(
            f"checkpoint {folder} has format version {version}, newer than this simsearch reads "
            f"({CHECKPOINT_VERSION}): upgrade simsearch"
        )
    if not isinstance(config.get("backbone"), str) or not config["backbone"]:
        raise ModelError(f"{config_path} names no backbone")
    embed_dim = config.get("embed_dim")
    if embed_dim is not None and (not isinstance(embed_dim, int) or isinstance(embed_dim, bool) or embed_dim <= 0):
        raise ModelError(f"{config_path} has an invalid embed_dim {embed_dim!r}")
    for key in ("data_config", "backbone_kwargs", FILES_KEY):
        if config.get(key) is not None and not isinstance(config[key], dict):
            raise ModelError(f"{config_path}: {key} must be an object")
    if config.get("data_config"):
        problem = _data_config_problem(config["data_config"])
        if problem:
            raise ModelError(f"{config_path}: data_config {problem}")
    return config


_DATA_CONFIG_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
_CROP_MODES = ("center", "squash", "border")


def _data_config_problem(data_config: dict[str, Any]) -> str | None:
    """What is wrong with a checkpoint's data config, or None: caught here, it would be a traceback mid-embedding.

    A missing key takes timm's default, as `timm.data.create_transform` gives it.
    """
    from timm.data.transforms import str_to_interp_mode

    def is_number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    unknown = sorted(set(data_config) - set(_DATA_CONFIG_KEYS))
    if unknown:
        return f"has unknown keys {', '.join(unknown)} (known: {', '.join(_DATA_CONFIG_KEYS)})"
    size = data_config.get("input_size", (3, 224, 224))
    if not (
        isinstance(size, list | tuple)
        and len(size) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        return f"input_size must be 3 positive integers (C, H, W), not {size!r}"
    for key in ("mean", "std"):
        values = data_config.get(key)
        if values is None:
            continue
        if not (isinstance(values, list | tuple) and len(values) == size[0] and all(map(is_number, values))):
            return f"{key} must be {size[0]} numbers (one per channel of input_size), not {values!r}"
        if key == "std" and min(values) <= 0:
            return f"std must be positive, not {values!r}"
    interpolation = data_config.get("interpolation")
    if interpolation is not None:
        try:
            str_to_interp_mode(interpolation)
        except (KeyError, TypeError):
            return f"interpolation {interpolation!r} is unknown (e.g. bilinear, bicubic, nearest)"
    crop_pct = data_config.get("crop_pct")
    if crop_pct is not None and not (is_number(crop_pct) and crop_pct > 0):  # timm has models above 1 (volo_d5_512)
        return f"crop_pct must be a number > 0, not {crop_pct!r}"
    crop_mode = data_config.get("crop_mode")
    if crop_mode is not None and crop_mode not in _CROP_MODES:
        return f"crop_mode {crop_mode!r} is unknown ({', '.join(_CROP_MODES)})"
    return None
