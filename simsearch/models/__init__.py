"""Models: the Embedder (timm backbone + projection + L2 norm), resolving model specs, weights and checkpoints."""

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
