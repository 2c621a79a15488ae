"""What opening a collection reads first, or makes for a new one: its manifest (through the upgrade of an older
format, in memory) and the model that the caller names, checked against the one that built it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from simsearch.collection import identity
from simsearch.collection.index_policy import IndexPolicy
from simsearch.collection.layout import MANIFEST, check_new_folder, make_new_folder, missing_collection
from simsearch.collection.manifest import VERSION, Manifest
from simsearch.collection.migrations import open_manifest
from simsearch.errors import CollectionError

if TYPE_CHECKING:
    from simsearch.models import Embedder


@dataclass
class Opening:
    manifest: Manifest
    on_disk_version: int
    embedder: Embedder | None  # None: the recorded model, loaded on first use
    made_folder: bool | None  # None: the collection existed; else made by this open (True: its folder too)


def read_or_make(
    folder: Path,
    model: str | None,
    weights: str | os.PathLike[str] | None,
    device: str | None,
    tta: str | None,
    *,
    create: bool,
    readonly: bool,
) -> Opening:
    """The manifest and model of the collection at ``folder``; with ``create`` and none there, a new folder and
    manifest (not yet saved) for the named model."""
    identity.check_tta_name(tta)
    if readonly and create:
        raise CollectionError("a collection cannot be created by an open for reading only (readonly=True)")
    if (folder / MANIFEST).exists():
        manifest, on_disk = open_manifest(folder / MANIFEST)
        embedder = identity.named_model(folder, manifest.model, model, weights, device, tta)
        return Opening(manifest, on_disk, embedder, None)
    if not create:
        raise missing_collection(folder)
    check_new_folder(folder)
    embedder = identity.load_model(model, weights, device, tta)
    made = make_new_folder(folder)
    from simsearch import __version__

    info = identity.model_info(embedder)
    manifest = Manifest(info, IndexPolicy.initial_info(info.dim), simsearch_version=__version__)
    return Opening(manifest, VERSION, embedder, made)
