"""What the collection API hands back: search hits, indexing reports and a description of the collection."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simsearch.collection.manifest import Manifest


@dataclass(frozen=True)
class SearchResult:
    """One neighbour of a query; ``score`` is the cosine similarity (1.0 for the same image)."""

    rank: int
    id: int
    score: float
    path: str
    width: int
    height: int


@dataclass
class IndexReport:
    """What an indexing run did. ``embedded`` counts forward passes; ``reused`` vectors copied from equal content."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    moved: int = 0
    removed: int = 0
    skipped: int = 0
    embedded: int = 0
    reused: int = 0
    seconds: float = 0.0
    skipped_files: list[tuple[str, str]] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "moved": self.moved,
            "removed": self.removed,
            "skipped": self.skipped,
            "embedded": self.embedded,
            "reused": self.reused,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 2),
            "skipped_files": [{"path": p, "reason": r} for p, r in self.skipped_files],
        }


@dataclass(frozen=True)
class CollectionInfo:
    """A description of a collection (`Collection.info`); `as_dict` is what `simsearch info --json` prints."""

    path: str
    model: str
    weights_sha256: str
    dim: int
    metric: str
    images: int
    index_factory: str
    index_auto: bool
    search_params: str
    index_max_memory: int | None
    index_recall_at_10: float | None
    index_on_gpu: bool
    disk_bytes: int
    created: str
    updated: str

    @classmethod
    def of(cls, path: Path, manifest: Manifest, images: int, on_gpu: bool, disk_bytes: int) -> CollectionInfo:
        model, index = manifest.model, manifest.index
        return cls(
            path=str(path),
            model=model.id,
            weights_sha256=model.weights_sha256,
            dim=model.dim,
            metric=manifest.metric,
            images=images,
            index_factory=index.factory,
            index_auto=index.auto,
            search_params=index.search_params,
            index_max_memory=index.max_memory,
            index_recall_at_10=(index.tuning or {}).get("recall_at_10"),
            index_on_gpu=on_gpu,
            disk_bytes=disk_bytes,
            created=manifest.created,
            updated=manifest.updated,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
