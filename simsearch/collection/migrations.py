"""Every upgrade of a collection written by an earlier simsearch, in one place.

Format 1 (simsearch 0.1.0 before this format) differs from format 2 in:
  - the manifest: `index.max_memory` and `index.tuning` are missing in collections made before the index was chosen
    by measurement; an index type this version refuses may be pinned (PCA stages were once built);
    `model.hub_name_unknown` does not exist, and a timm model's name may be the config name of a hub model;
  - the store: skip records may lack the pixel limit they were refused under, or carry a `retry` flag;
  - the index sidecar may lack `file_bytes` (written before a sidecar named the size of its index file).

A reader upgrades the manifest in memory (`open_manifest`) and writes nothing. The first writer, holding the writer
lock, upgrades the collection in place (`migrate_in_place`): the store first (each step may run twice), then the
manifest, durably; a crash between the two leaves a format-1 collection that the next writer upgrades again.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from indexes import IndexLayerError, VectorIndex, default_search_params
from simsearch.collection.layout import MANIFEST, SIDECAR
from simsearch.collection.manifest import VERSION, Manifest, ModelInfo, read_raw

if TYPE_CHECKING:
    from simsearch.collection.store import Store

log = logging.getLogger(__name__)


def open_manifest(path: Path) -> tuple[Manifest, int]:
    """The manifest at `path` upgraded to the current format in memory, and the version it has on disk."""
    raw = read_raw(path)
    on_disk = int(raw["version"])
    for version, step in sorted(_MANIFEST_STEPS.items()):
        if raw["version"] == version:
            raw = step(copy.deepcopy(raw), path.parent)
            raw["version"] = version + 1
    return Manifest.from_dict(raw, path), on_disk


def migrate_in_place(folder: Path, manifest: Manifest, store: Store, on_disk: int) -> None:
    """Write the upgrade of a collection read as version `on_disk` (`manifest` is its upgrade in memory). The caller
    holds the writer lock."""
    if on_disk >= VERSION:
        return
    for version, step in sorted(_STORE_STEPS.items()):
        if on_disk <= version:
            step(store)
    manifest.save(folder / MANIFEST)
    log.info("upgraded collection %s from format version %d to %d", folder, on_disk, VERSION)


def hub_name_of_format_1_model(built: ModelInfo, spec: dict[str, Any]) -> bool:
    """A model that format 1 recorded under a timm name is named now by the hub repo its weights came from (the
    caller checks that the weights are the same): format 1 named a hub model by the architecture and tag of its
    config, so both names are one model."""
    return built.hub_name_unknown and spec.get("kind") == "timm" and str(spec.get("name", "")).startswith("hf-hub:")


# ------------------------------------------------------------------------------------------------------- format 1


def _manifest_1_to_2(raw: dict[str, Any], folder: Path) -> dict[str, Any]:
    model, index = raw.get("model"), raw.get("index")
    if isinstance(model, dict):
        spec = model.get("spec")
        name = str(spec.get("name", "")) if isinstance(spec, dict) else ""
        is_timm = isinstance(spec, dict) and spec.get("kind") == "timm"
        model["hub_name_unknown"] = is_timm and not name.startswith(("hf-hub:", "hf_hub:"))
    if not isinstance(index, dict):
        return raw  # damaged: the parser says so
    index.setdefault("max_memory", None)
    index.setdefault("tuning", None)
    dim = model.get("dim") if isinstance(model, dict) else None
    if isinstance(dim, int) and not _buildable(dim, index.get("factory"), index.get("search_params", "")):
        log.warning(
            "the collection's index type %r cannot be built by this version: using exact search, chosen by size",
            index.get("factory"),
        )
        index.update(factory="Flat", search_params=default_search_params("Flat"), auto=True, tuning=None)
        index["generation"] = -1  # the index file holds the refused type: rebuilt from the store
    if _sidecar_lacks_file_bytes(folder / SIDECAR):
        index["generation"] = -1  # the next save writes the index again, with a sidecar of today's format
    return raw


def _buildable(dim: int, factory: Any, params: Any) -> bool:
    if not isinstance(factory, str) or not isinstance(params, str):
        return True  # not a factory string at all: the parser reports the damage
    try:
        VectorIndex.create(dim, factory).set_search_params(params)
    except IndexLayerError:
        return False
    return True


def _sidecar_lacks_file_bytes(path: Path) -> bool:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return False  # missing or unreadable: the index is rebuilt at open anyway
    return isinstance(meta, dict) and "file_bytes" not in meta


def _skip_record_1_to_2(record: dict[str, Any]) -> dict[str, Any] | None:
    """A skip record without its pixel limit, or one marked for retry (an I/O failure), would be tried again at the
    next run whatever it says: it is dropped."""
    if record.pop("retry", False) or not isinstance(record.get("max_pixels"), int):
        return None
    return record


def _store_1_to_2(store: Store) -> None:
    changed = store.rewrite_skips(_skip_record_1_to_2)
    if changed:
        log.info("upgraded %d skip records of %s", changed, store.path)


#: version -> the step that upgrades a manifest of that version to the next one.
_MANIFEST_STEPS: dict[int, Callable[[dict[str, Any], Path], dict[str, Any]]] = {1: _manifest_1_to_2}
#: version -> the step that upgrades a store of a collection of that version (or older) to the next one.
_STORE_STEPS: dict[int, Callable[[Store], None]] = {1: _store_1_to_2}
