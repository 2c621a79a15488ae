"""The collection manifest in its current format: a versioned JSON file naming the model, the index and the counts
of a collection. Older formats are upgraded to this one by `migrations` before they are parsed here."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from simsearch.errors import CollectionError
from simsearch.fsio import atomic_write_json

FORMAT = "simsearch-collection"
#: 2: every field is written; `model.hub_name_unknown`; skip records always carry their pixel limit (see migrations).
VERSION = 2

_T = TypeVar("_T")


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
    #: Set on a timm model recorded by format 1, which named a Hugging Face hub model by the architecture and tag of
    #: its config: the hub name with these weights is this model (see `migrations.hub_name_of_format_1_model`).
    hub_name_unknown: bool = False


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
    def from_dict(cls, raw: dict[str, Any], path: Path) -> Manifest:
        """Parse a manifest of the current version; every field must be there (a missing one is damage)."""
        if raw.get("version") != VERSION:
            raise CollectionError(f"{path} is not of collection format version {VERSION}")
        try:
            manifest = _strict(
                cls,
                {**raw, "model": _strict(ModelInfo, raw["model"]), "index": _strict(IndexInfo, raw["index"])},
            )
        except (KeyError, TypeError) as exc:
            raise CollectionError(f"{path} is damaged: {exc}") from exc
        problem = _model_problem(manifest.model) or _index_problem(manifest.index)
        if problem:
            raise CollectionError(f"{path} is damaged: {problem}")
        return manifest


def read_raw(path: Path) -> dict[str, Any]:
    """The manifest's JSON object, of this format and of this or an older version (which `migrations` upgrades)."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise CollectionError(f"{path.parent} is not a simsearch collection (no manifest.json)") from exc
    except (OSError, ValueError) as exc:
        raise CollectionError(f"cannot read {path}: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CollectionError(f"{path} is not a simsearch collection manifest")
    version = raw.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CollectionError(f"{path} is damaged: format version {version!r}")
    if version > VERSION:
        raise CollectionError(
            f"collection {path.parent}: format version {version} is newer than this simsearch understands "
            f"({VERSION}): upgrade simsearch (pip install -U simsearch)"
        )
    return raw


def _strict(cls: type[_T], raw: Any) -> _T:
    """`cls(**raw)` where `raw` names every field of `cls`, no more and no fewer."""
    if not isinstance(raw, dict):
        raise TypeError(f"{cls.__name__} must be an object, not {raw!r}")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    missing = sorted(names - raw.keys())
    if missing:
        raise TypeError(f"{cls.__name__} lacks {', '.join(missing)}")
    return cls(**raw)


def _model_problem(model: ModelInfo) -> str | None:
    """What is wrong with a loaded model entry, or None: caught here, a hand-edited field ends in a traceback later."""
    for key in ("id", "weights_sha256"):
        if not isinstance(getattr(model, key), str):
            return f"model {key} must be a string, not {getattr(model, key)!r}"
    if not isinstance(model.dim, int) or isinstance(model.dim, bool) or model.dim < 1:
        return f"model dim must be a positive integer, not {model.dim!r}"
    if not isinstance(model.data_config, dict):
        return f"model data_config must be an object, not {model.data_config!r}"
    if not isinstance(model.hub_name_unknown, bool):
        return f"model hub_name_unknown must be true or false, not {model.hub_name_unknown!r}"
    spec = model.spec
    if not isinstance(spec, dict):
        return f"model spec must be an object, not {spec!r}"
    kind = spec.get("kind")
    if not isinstance(kind, str) or not kind:
        return f"model spec names no kind: {spec}"
    # What `load_embedder_from_spec` reads for each kind; a kind it does not know is left to it to refuse.
    needed = {"timm": ("name",), "package": ("name",), "file": ("name", "path"), "checkpoint": ("path",)}
    for key in needed.get(kind, ()):
        if not isinstance(spec.get(key), str) or not spec[key]:
            return f"model spec of kind {kind} has no {key}: {spec}"
    if spec.get("tta") is not None and not isinstance(spec["tta"], str):
        return f"model spec's tta must be a string, not {spec['tta']!r}"
    return None


def _index_problem(index: IndexInfo) -> str | None:
    for key in ("factory", "search_params"):
        if not isinstance(getattr(index, key), str):
            return f"index {key} must be a string, not {getattr(index, key)!r}"
    if not isinstance(index.auto, bool):
        return f"index auto must be true or false, not {index.auto!r}"
    if not isinstance(index.generation, int) or isinstance(index.generation, bool):
        return f"index generation must be an integer, not {index.generation!r}"
    budget = index.max_memory
    if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool) or budget < 1):
        return f"index max_memory must be a positive integer or null, not {budget!r}"
    if index.tuning is not None and not isinstance(index.tuning, dict):
        return f"index tuning must be an object or null, not {index.tuning!r}"
    return None
