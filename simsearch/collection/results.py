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
    #: Of `skipped_files`, those that are no images and do not claim to be (sidecars, videos, notes).
    not_images: list[str] = field(default_factory=list)
    #: Left out of the scan: entries that --exclude or an ignore file named, folders not entered (junk, the
    #: collection's own), and what is no regular file, as (path, kind: "named pipe", "dangling link", ...).
    excluded: int = 0
    skipped_folders: list[str] = field(default_factory=list)
    special_files: list[tuple[str, str]] = field(default_factory=list)

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
            "not_images": len(self.not_images),
            "excluded": self.excluded,
            "skipped_folders": list(self.skipped_folders),
            "special_files": [{"path": p, "kind": k} for p, k in self.special_files],
        }

    def failed_files(self) -> list[tuple[str, str]]:
        """The skipped files that should have been images (damaged, unreadable, too large): always worth naming."""
        others = set(self.not_images)
        return [(p, r) for p, r in self.skipped_files if p not in others]

    def special_counts(self) -> dict[str, int]:
        """How many of each kind of `special_files`, e.g. {"named pipe": 1, "symlink loop": 2}."""
        counts: dict[str, int] = {}
        for _, kind in self.special_files:
            counts[kind] = counts.get(kind, 0) + 1
        return counts

    def add_scan(self, excluded: int, skipped_folders: list[str], special: list[tuple[str, str]]) -> None:
        """Take in what the folder scan left out (`simsearch.scanning.ScanTally`)."""
        self.excluded += excluded
        self.skipped_folders.extend(skipped_folders)
        self.special_files.extend(special)


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
