"""The collection manifest: a versioned JSON file naming the model, the index and the counts of a collection."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from simsearch.errors import CollectionError
from simsearch.fsio import atomic_write_json

FORMAT = "simsearch-collection"
VERSION = 1


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class ModelInfo:
    """Identity of the model that made a collection's vectors; two collections mix only if these agree."""

    id: str
    weights_sha256: str
    spec: dict[str, Any]
    data_config: dict[str, Any]
    dim: int


@dataclass
class IndexInfo:
    factory: str
    search_params: str = ""
    auto: bool = True  # True: the engine picks the factory (by size, then by measurement); False: the user chose it
    generation: int = -1  # the store generation the saved index file agrees with
    max_memory: int | None = None  # the index's memory budget in bytes (`simsearch index --max-memory`), kept
    tuning: dict[str, Any] | None = None  # the measured choice (indexes.IndexChoice.as_dict()) while auto, else None


@dataclass
class Manifest:
    model: ModelInfo
    index: IndexInfo
    metric: str = "cosine"
    count: int = 0
    created: str = field(default_factory=now_iso)
    updated: str = field(default_factory=now_iso)
    simsearch_version: str = ""
    format: str = FORMAT
    version: int = VERSION

    def save(self, path: Path) -> None:
        atomic_write_json(path, asdict(self), sort_keys=True)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise CollectionError(f"{path.parent} is not a simsearch collection (no manifest.json)") from exc
        except (OSError, ValueError) as exc:
            raise CollectionError(f"cannot read {path}: {exc}") from exc
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise CollectionError(f"{path} is not a simsearch collection manifest")
        version = raw.get("version")
        if not isinstance(version, int) or version > VERSION:
            raise CollectionError(
                f"collection format version {version} is newer than this simsearch understands ({VERSION}): upgrade"
            )
        try:
            raw["model"] = ModelInfo(**raw["model"])
            raw["index"] = IndexInfo(**raw["index"])
            manifest = cls(**raw)
        except (KeyError, TypeError) as exc:
            raise CollectionError(f"{path} is damaged: {exc}") from exc
        problem = _model_problem(manifest.model)
        if problem:
            raise CollectionError(f"{path} is damaged: model {problem}")
        return manifest


def _model_problem(model: ModelInfo) -> str | None:
    """What is wrong with a loaded model entry, or None: caught here, a hand-edited field ends in a traceback later."""
    for key in ("id", "weights_sha256"):
        if not isinstance(getattr(model, key), str):
            return f"{key} must be a string, not {getattr(model, key)!r}"
    if not isinstance(model.dim, int) or isinstance(model.dim, bool) or model.dim < 1:
        return f"dim must be a positive integer, not {model.dim!r}"
    if not isinstance(model.data_config, dict):
        return f"data_config must be an object, not {model.data_config!r}"
    spec = model.spec
    if not isinstance(spec, dict):
        return f"spec must be an object, not {spec!r}"
    kind = spec.get("kind")
    if not isinstance(kind, str) or not kind:
        return f"spec names no kind: {spec}"
    # What `load_embedder_from_spec` reads for each kind; a kind it does not know is left to it to refuse.
    needed = {"timm": ("name",), "package": ("name",), "file": ("name", "path"), "checkpoint": ("path",)}
    for key in needed.get(kind, ()):
        if not isinstance(spec.get(key), str) or not spec[key]:
            return f"spec of kind {kind} has no {key}: {spec}"
    if spec.get("tta") is not None and not isinstance(spec["tta"], str):
        return f"spec's tta must be a string, not {spec['tta']!r}"
    return None
