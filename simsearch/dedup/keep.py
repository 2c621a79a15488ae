"""Which file of a duplicate group to keep, and why: one rule per `--keep` choice, ties broken the same way always.

Files inside a reference folder are never removed: when a group has any, they are all kept and the rule only
chooses among them which one the others are compared to.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from simsearch.collection import ImageRecord
from simsearch.errors import DedupError

__all__ = ["DEFAULT_KEEP", "KEEP_RULES", "choose_keep", "in_folder"]

DEFAULT_KEEP = "largest"


def _pixels(r: ImageRecord) -> int:
    return r.width * r.height


def _size(r: ImageRecord) -> str:
    return f"{r.width}x{r.height} px, {r.size:,} bytes"


def _when(r: ImageRecord) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(r.mtime_ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


#: rule -> (sort key: the smallest wins, what the winner is said to be, how a file is described for that rule).
_RULES: dict[str, tuple[Callable[[ImageRecord], tuple], str, Callable[[ImageRecord], str]]] = {
    "largest": (lambda r: (-_pixels(r), -r.size), "most pixels, then most bytes", _size),
    "smallest": (lambda r: (_pixels(r), r.size), "fewest pixels, then fewest bytes", _size),
    "oldest": (lambda r: (r.mtime_ns,), "oldest modification time", _when),
    "newest": (lambda r: (-r.mtime_ns,), "newest modification time", _when),
    "shortest-path": (lambda r: (len(r.path),), "shortest path", lambda r: f"{len(r.path)} characters"),
}
KEEP_RULES = tuple(_RULES)


def in_folder(path: str, folder: str | os.PathLike[str]) -> bool:
    """Whether `path` lies inside `folder` (both made absolute; no file system access beyond that)."""
    root = os.path.abspath(folder).rstrip(os.sep) + os.sep
    return os.path.abspath(path).startswith(root)


def choose_keep(
    members: Sequence[ImageRecord], rule: str = DEFAULT_KEEP, reference: Sequence[str | Path] = ()
) -> tuple[ImageRecord, list[ImageRecord], str]:
    """The file to keep, the files that may go, and the reason in words.

    Ties under the rule fall to the shorter path, then the path in alphabetical order, so a run is repeatable.
    """
    if rule not in _RULES:
        raise DedupError(f"unknown keep rule {rule!r}; choose one of {', '.join(KEEP_RULES)}")
    key, what, describe = _RULES[rule]
    protected = [m for m in members if any(in_folder(m.path, ref) for ref in reference)]
    pool = protected or list(members)
    ranked = sorted(pool, key=lambda r: (*key(r), len(r.path), r.path))
    kept = ranked[0]
    reason = f"{rule}: {what} ({describe(kept)})"
    if len(ranked) > 1:
        reason += f"; next {describe(ranked[1])}"
        if key(ranked[1]) == key(kept):
            reason += ", a tie broken by the path (shorter, then alphabetical)"
    if protected:
        reason = f"in a reference folder; {reason}"
    kept_ids = {m.id for m in protected} | {kept.id}
    return kept, [m for m in members if m.id not in kept_ids], reason
