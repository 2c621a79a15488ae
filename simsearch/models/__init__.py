"""Models: the Embedder (timm backbone + projection + L2 norm), resolving model specs, weights and checkpoints.

The names below load on first use (PEP 562): importing a light submodule (`simsearch.models.preprocess`,
`simsearch.models.exported`) must not import torch and timm, which take seconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simsearch.lazy import lazy_getattr

if TYPE_CHECKING:
    from simsearch.models.checkpoint import save_checkpoint
    from simsearch.models.embedder import TTA_MODES, Embedder, channel_data_config, check_tta, create_transform
    from simsearch.models.pooling import GEM_OPTION, GeM, use_gem
    from simsearch.models.registry import (
        DEFAULT_MODEL,
        create_backbone,
        load_embedder,
        load_embedder_from_spec,
        random_embedder,
        resolve_device,
    )

_HOMES = {
    "save_checkpoint": "checkpoint",
    "TTA_MODES": "embedder",
    "Embedder": "embedder",
    "channel_data_config": "embedder",
    "check_tta": "embedder",
    "create_transform": "embedder",
    "GEM_OPTION": "pooling",
    "GeM": "pooling",
    "use_gem": "pooling",
    "DEFAULT_MODEL": "registry",
    "create_backbone": "registry",
    "load_embedder": "registry",
    "load_embedder_from_spec": "registry",
    "random_embedder": "registry",
    "resolve_device": "registry",
}

__all__ = [
    "DEFAULT_MODEL",
    "GEM_OPTION",
    "TTA_MODES",
    "Embedder",
    "GeM",
    "channel_data_config",
    "check_tta",
    "create_backbone",
    "create_transform",
    "load_embedder",
    "load_embedder_from_spec",
    "random_embedder",
    "resolve_device",
    "save_checkpoint",
    "use_gem",
]


__getattr__ = lazy_getattr(__name__, _HOMES, globals())
