"""Acting on a dedup report: move the files to remove aside, or delete them, and forget them in the collection.

Nothing happens unless asked: a report is a plan. Moving keeps each file's path relative to the indexed folder under
the destination (two `IMG_0001.jpg` of different folders never collide) and never overwrites a file. Deleting and
moving only touch files inside the folder that was indexed, and never a file inside a reference folder, whatever the
report says; everything is checked before the first file is touched.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from simsearch.dedup.keep import in_folder
from simsearch.dedup.results import DedupReport
from simsearch.errors import DedupError

if TYPE_CHECKING:
    from simsearch.collection import Collection

__all__ = ["Action", "apply_report"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Action:
    """One file handled: "moved" (to `to`) or "deleted"."""

    path: str
    done: str
    to: str | None = None


def _check(report: DedupReport, inside: Path, reference: list[str]) -> None:
    outside = [r.path for r in report.to_remove() if not in_folder(r.path, inside)]
    if outside:
        raise DedupError(
            f"{len(outside)} files to remove lie outside the indexed folder {inside} (first: {outside[0]}); "
            "nothing was touched"
        )
    protected = [r.path for r in report.to_remove() if any(in_folder(r.path, ref) for ref in reference)]
    if protected:
        raise DedupError(f"{protected[0]} lies in a reference folder and is never removed; nothing was touched")


def apply_report(
    col: Collection,
    report: DedupReport,
    *,
    inside: str | os.PathLike[str],
    move_to: str | os.PathLike[str] | None = None,
    delete: bool = False,
) -> list[Action]:
    """Move (`move_to`) or delete (`delete=True`) every file the report would remove, then drop them from `col`.

    Args:
        inside: the indexed folder; a file to remove outside it stops the run before anything is touched.
    """
    if (move_to is None) == (not delete):
        raise DedupError("choose one of moving the duplicates aside or deleting them")
    root = Path(inside).expanduser().resolve()
    _check(report, root, report.reference)
    dest = None if move_to is None else Path(move_to).expanduser().resolve()
    if dest is not None and in_folder(str(dest), root):
        log.info("moving duplicates into %s, inside the indexed folder: the next index run will see them", dest)
    done: list[Action] = []
    try:
        for record in report.to_remove():
            source = Path(record.path)
            if not source.exists():
                log.warning("already gone: %s", source)
                continue
            if dest is None:
                source.unlink()
                done.append(Action(record.path, "deleted"))
                continue
            moved_to = _free_name(dest / source.relative_to(root))
            moved_to.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(source), str(moved_to))
            done.append(Action(record.path, "moved", str(moved_to)))
    finally:
        if done:
            col.remove([a.path for a in done])
    return done


def _free_name(wanted: Path) -> Path:
    """`wanted`, or `name (2).ext`, `name (3).ext`... when a file is already there: a move never overwrites."""
    candidate, n = wanted, 1
    while candidate.exists():
        n += 1
        candidate = wanted.with_name(f"{wanted.stem} ({n}){wanted.suffix}")
    return candidate
