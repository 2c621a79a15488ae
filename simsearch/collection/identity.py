"""Model identity: a collection's vectors come from one model, and no other model's vectors may join them.

torch loads only here, and only when a model is needed: `info`, `remove` and vector search never load it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simsearch.collection.manifest import ModelInfo
from simsearch.collection.migrations import hub_name_of_format_1_model
from simsearch.errors import ModelMismatchError

if TYPE_CHECKING:
    from simsearch.models import Embedder

ModelName = str | os.PathLike[str] | None


def load_model(model: ModelName, weights: ModelName, device: str | None, tta: str | None) -> Embedder:
    """The model a user names (`simsearch.models.load_embedder`)."""
    from simsearch.models import load_embedder

    return load_embedder(model, weights=weights, device=device, tta=tta)


def check_tta_name(tta: str | None) -> None:
    if tta is not None:
        from simsearch.models import check_tta

        check_tta(tta)


def model_info(embedder: Embedder) -> ModelInfo:
    """What the manifest records of the model that makes a new collection's vectors."""
    return ModelInfo(
        id=embedder.model_id,
        weights_sha256=embedder.weights_sha256,
        spec=dict(embedder.spec),
        data_config=dict(embedder.data_config),
        dim=int(embedder.embed_dim),
    )


def named_model(
    folder: Path, built: ModelInfo, model: ModelName, weights: ModelName, device: str | None, tta: str | None
) -> Embedder | None:
    """At open: the model the user named for an existing collection, checked against the one that built it (None
    when no model is named: the recorded one loads on first use, see `recorded_model`)."""
    built_tta = built.spec.get("tta")
    if tta is not None and tta != built_tta:
        raise ModelMismatchError(
            f"collection {folder} was built with model {built.id}, not with test-time augmentation "
            f"{tta!r}: vectors of two models never mix; use another collection (-c)"
        )
    if model is None and weights is None:
        return None
    # The collection keeps its test-time augmentation: naming its model again need not repeat it.
    embedder = load_model(model, weights, device, built_tta)
    check_same_model(folder, built, embedder)
    return embedder


def recorded_model(folder: Path, built: ModelInfo, device: str | None) -> Embedder:
    """The model the manifest records, loaded and checked (its files may have changed since)."""
    from simsearch.models import load_embedder_from_spec

    embedder = load_embedder_from_spec(built.spec, device=device)
    check_same_model(folder, built, embedder)
    return embedder


def check_same_model(folder: Path, built: ModelInfo, embedder: Embedder) -> None:
    """Refuse a model whose vectors would not mix with the collection's.

    A model is its id and weights, and also its preprocessing and output size: a timm tag or a checkpoint's
    config.json sets the data config without changing either. A checkpoint is its weights, architecture and config,
    not the name of its folder: a moved or renamed copy is accepted, and its new place replaces the old one in
    `built` (so in the manifest from the collection's next write), as a weights file's new place does.
    """
    from simsearch.models.embedder import data_config_differences

    built_tta = built.spec.get("tta")
    # An id is partly a folder name, so the test-time augmentation is compared on its own too.
    tta = "" if built_tta == embedder.tta else f", test-time augmentation {built_tta} not {embedder.tta}"
    same_id = (
        built.id == embedder.model_id
        or _same_checkpoint_arch(built.spec, embedder.spec)
        or hub_name_of_format_1_model(built, embedder.spec)
    )
    if tta or not same_id or built.weights_sha256 != embedder.weights_sha256:
        raise ModelMismatchError(
            f"collection {folder} was built with model {built.id} (weights {built.weights_sha256[:12]}), not "
            f"{embedder.model_id} (weights {embedder.weights_sha256[:12]}){tta}: vectors of two models never mix; "
            "use another collection (-c) or the model it was built with"
        )
    differences = [] if built.dim == embedder.embed_dim else [f"dim {built.dim} not {embedder.embed_dim}"]
    differences += data_config_differences(built.data_config, embedder.data_config)
    if differences:
        raise ModelMismatchError(
            f"collection {folder} was built with model {built.id} (weights {built.weights_sha256[:12]}), whose "
            f"preprocessing or size differs now: {', '.join(differences)}: vectors of two models never mix; "
            "use another collection (-c) or the model it was built with"
        )
    if built.id != embedder.model_id or built.spec.get("path") != embedder.spec.get("path"):
        # A moved checkpoint, or a hub model under its repo name: the manifest keeps what the model is called now.
        built.id = embedder.model_id
        built.spec = {**built.spec, **{k: embedder.spec[k] for k in ("name", "path") if k in embedder.spec}}
        built.hub_name_unknown = False


def _same_checkpoint_arch(built: dict[str, Any], spec: dict[str, Any]) -> bool:
    """Both specs are simsearch checkpoints of one architecture (their ids differ by folder name only)."""
    return built.get("kind") == spec.get("kind") == "checkpoint" and built.get("name") == spec.get("name")
