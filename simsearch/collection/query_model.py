"""A collection's model for queries without torch: exporting it once into the collection (`export_query_model`), and
embedding query images with that export where it applies (`embed_query_images`).

The export is held to the model the manifest records (`simsearch.models.exported`): a collection whose model it is
not, or a query on a GPU, embeds with the model itself, as before.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from simsearch.errors import ReadOnlyCollectionError

if TYPE_CHECKING:
    from simsearch.collection.facade import Collection
    from simsearch.collection.manifest import ModelInfo
    from simsearch.models.exported import ExportCheck, ExportedModel

log = logging.getLogger(__name__)

#: Photos of the collection that an export is checked on.
CHECK_PHOTOS = 16
_loaded: weakref.WeakKeyDictionary[Collection, ExportedModel | None] = weakref.WeakKeyDictionary()


def recorded_identity(model: ModelInfo) -> dict[str, Any]:
    """The manifest's model in the form an export record names it."""
    from simsearch.models.exported import model_identity

    return model_identity(model.id, model.weights_sha256, model.dim, model.data_config, model.spec.get("tta"))


def export_query_model(col: Collection, photos: Sequence[Any] | None = None) -> ExportCheck:
    """Export the collection's model into it, checked on `photos` (default: up to `CHECK_PHOTOS` of its own images
    that are still on disk). Raises ModelError when the export cannot be made or is refused."""
    from simsearch.models.exported import export_onnx

    if col.readonly:
        raise ReadOnlyCollectionError(f"collection {col.path} is open read-only: the model cannot be exported into it")
    if photos is None:
        photos = []
        for record in col.store.records():
            if os.path.isfile(record.path):
                photos.append(record.path)
            if len(photos) >= CHECK_PHOTOS:
                break
    check = export_onnx(col.embedder, col.path, photos)
    _loaded.pop(col, None)
    return check


def exported_model(col: Collection, device: str | None) -> ExportedModel | None:
    """The collection's export when a query on `device` may use it: the CPU named, or "auto" on a machine with no GPU
    device; None otherwise (then the model itself embeds)."""
    if not export_applies(device):
        return None
    if col not in _loaded:
        from simsearch.models.exported import load_exported

        _loaded[col] = load_exported(col.path, recorded_identity(col.manifest.model))
    return _loaded[col]


def export_applies(device: str | None) -> bool:
    """Whether an export may embed on `device`: the CPU named, or "auto" on a machine with no GPU device."""
    return device in ("cpu", "auto", None) and (device == "cpu" or not _gpu_present())


def embed_query_images(col: Collection, images: Sequence[Any], device: str | None) -> np.ndarray:
    """`(N, D) float32` vectors of query images: through the export where `exported_model` gives one, else
    `Collection.embed`."""
    model = exported_model(col, device)
    if model is None:
        return col.embed(images)
    log.debug("embedding %d query images with the exported model", len(images))
    return model.embed(list(images))


def _gpu_present() -> bool:
    """Whether this machine may have a GPU that torch would choose for "auto": a GPU device node, unless
    CUDA_VISIBLE_DEVICES hides every device."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return any(Path(node).exists() for node in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/kfd", "/dev/dxg"))
