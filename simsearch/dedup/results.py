"""What a dedup run hands back: groups with the file kept and why, matches of one image, and their JSON/CSV rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from simsearch.collection import ImageRecord
from simsearch.dedup.stored import Threshold

__all__ = ["CSV_FIELDS", "DedupReport", "DuplicateGroup", "Match"]


def _file(record: ImageRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "path": record.path,
        "bytes": record.size,
        "width": record.width,
        "height": record.height,
        "sha256": record.sha256,
    }


@dataclass
class Match:
    """A stored image found for a query: exact (same bytes) or near (cosine at or above the threshold)."""

    record: ImageRecord
    score: float
    exact: bool
    meaning: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {**_file(self.record), "score": round(self.score, 6), "exact": self.exact, "meaning": self.meaning}


@dataclass
class DuplicateGroup:
    """Images that are all duplicates of each other: every pair scores at least the threshold."""

    kept: ImageRecord
    remove: list[ImageRecord]
    #: Every member, the kept file first, with its cosine to the kept file and whether its bytes are the same.
    members: list[Match]
    reason: str
    #: The lowest cosine between any two members (at least the threshold, by the grouping rule).
    weakest: float

    @property
    def kind(self) -> str:
        exact = [m.exact for m in self.members[1:]]
        return "exact" if all(exact) else "near" if not any(exact) else "mixed"

    def as_dict(self) -> dict[str, Any]:
        removed = {r.id for r in self.remove}
        return {
            "kind": self.kind,
            "keep": self.kept.path,
            "reason": self.reason,
            "weakest_score": round(self.weakest, 6),
            "members": [{**m.as_dict(), "remove": m.record.id in removed} for m in self.members],
        }


CSV_FIELDS = ("group", "kind", "action", "path", "score", "meaning", "exact", "width", "height", "bytes", "reason")


@dataclass
class DedupReport:
    """One dedup run: its groups, the threshold it drew and where that came from, what it looked at."""

    groups: list[DuplicateGroup]
    threshold: Threshold
    keep_rule: str
    images: int
    seconds: float
    reference: list[str] = field(default_factory=list)

    def to_remove(self) -> list[ImageRecord]:
        return [r for g in self.groups for r in g.remove]

    def as_dict(self) -> dict[str, Any]:
        calibration = self.threshold.calibration
        return {
            "images": self.images,
            "threshold": round(self.threshold.value, 6),
            "threshold_origin": self.threshold.origin,
            "calibration": None
            if calibration is None
            else {"kind": calibration.kind, "source": calibration.source, "model": calibration.model_id},
            "grouping": "complete linkage: every pair in a group scores at least the threshold",
            "keep_rule": self.keep_rule,
            "reference": self.reference,
            "groups": [g.as_dict() for g in self.groups],
            "to_remove": [r.path for r in self.to_remove()],
            "seconds": round(self.seconds, 3),
        }

    def csv_rows(self) -> list[dict[str, Any]]:
        """One row per member of each group (the kept file first), columns CSV_FIELDS."""
        rows = []
        for number, group in enumerate(self.groups, 1):
            removed = {r.id for r in group.remove}
            for m in group.members:
                action = "keep" if m.record.id == group.kept.id else "remove" if m.record.id in removed else "protected"
                rows.append(
                    {
                        "group": number,
                        "kind": group.kind,
                        "action": action,
                        "path": m.record.path,
                        "score": f"{m.score:.6f}",
                        "meaning": m.meaning or "",
                        "exact": m.exact,
                        "width": m.record.width,
                        "height": m.record.height,
                        "bytes": m.record.size,
                        "reason": group.reason if action == "keep" else "",
                    }
                )
        return rows
