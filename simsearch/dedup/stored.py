"""Where calibrations live and which one a collection uses: its own, then its checkpoint's, then the one shipped
for its model; and the threshold a dedup run works with (given, or calibrated for a precision goal)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from simsearch.dedup.calibration import Calibration
from simsearch.errors import CalibrationError, DedupError

if TYPE_CHECKING:
    from simsearch.collection import Collection

__all__ = [
    "DEFAULT_PRECISION",
    "NEAR_DUPLICATE",
    "Threshold",
    "calibration_file",
    "find_calibration",
    "resolve_threshold",
    "save_calibration",
]

log = logging.getLogger(__name__)

NEAR_DUPLICATE = "near-duplicate"
SAME_CLASS = "same-class"
KINDS = (NEAR_DUPLICATE, SAME_CLASS)
#: The precision `dedup` aims at when given neither a threshold nor a precision. With the dedup model it finds 96% of
#: the benchmark's near duplicates at precision 0.985 (benchmarks/results/dedup.md), where 0.99 keeps 63% of them:
#: each group still lists its weakest pair and every score's meaning; ask for 0.99 before deleting unattended.
DEFAULT_PRECISION = 0.9
SHIPPED = Path(__file__).resolve().parent / "shipped"


def calibration_file(folder: str | os.PathLike[str], kind: str = NEAR_DUPLICATE) -> Path:
    """The calibration of `kind` kept in a collection or checkpoint folder."""
    if kind not in KINDS:
        raise CalibrationError(f"unknown calibration kind {kind!r}; choose {' or '.join(KINDS)}")
    return Path(folder) / f"calibration-{kind}.json"


def save_calibration(calibration: Calibration, folder: str | os.PathLike[str]) -> Path:
    """Keep `calibration` in a collection or checkpoint folder (atomic JSON)."""
    return calibration.save(calibration_file(folder, calibration.kind))


def _candidates(col: Collection, kind: str, shipped: bool) -> list[tuple[Path, str]]:
    model = col.manifest.model
    places = [(calibration_file(col.path, kind), "the collection")]
    if model.spec.get("kind") == "checkpoint" and model.spec.get("path"):
        places.append((calibration_file(model.spec["path"], kind), "the model's checkpoint"))
    if shipped:
        places.extend((p, "simsearch's calibration of this model") for p in sorted(SHIPPED.glob(f"*-{kind}.json")))
    return places


def find_calibration(col: Collection, kind: str = NEAR_DUPLICATE, *, shipped: bool = True) -> Calibration | None:
    """The first calibration of `kind` made for the collection's model, or None; `shipped=False` looks only in the
    collection and its checkpoint (calibrations a user made).

    One kept in the collection that belongs to another model (the collection was rebuilt) is an error, not skipped:
    a stale calibration would make its thresholds silently wrong.
    """
    model = col.manifest.model
    tta = model.spec.get("tta")
    for path, where in _candidates(col, kind, shipped):
        if not path.is_file():
            continue
        calibration = Calibration.load(path)
        if calibration.fits(model.weights_sha256, tta):
            log.info("calibration from %s (%s)", where, path)
            return calibration
        if where != "simsearch's calibration of this model":
            calibration.check_model(model.id, model.weights_sha256, tta, where=str(path))
    return None


@dataclass(frozen=True)
class Threshold:
    """The cosine line a run draws, where it came from, and the calibration that gives scores a meaning (if any)."""

    value: float
    origin: str
    calibration: Calibration | None

    def meaning(self, score: float) -> str | None:
        return None if self.calibration is None else self.calibration.meaning(score)


def resolve_threshold(
    col: Collection, threshold: float | None = None, precision: float | None = None, kind: str = NEAR_DUPLICATE
) -> Threshold:
    """A given `threshold` as it is; else the calibrated threshold for `precision` (default DEFAULT_PRECISION)."""
    calibration = find_calibration(col, kind)
    if threshold is not None:
        if precision is not None:
            raise DedupError("give a threshold or a precision, not both")
        if not -1.0 <= threshold <= 1.0:
            raise DedupError(f"a cosine threshold lies in [-1, 1], got {threshold}")
        return Threshold(float(threshold), "given", calibration)
    goal = DEFAULT_PRECISION if precision is None else precision
    if calibration is None:
        raise CalibrationError(
            f"no {kind} calibration for this collection's model ({col.manifest.model.id}): give --threshold, "
            "or run `simsearch calibrate` first"
        )
    point = calibration.point(goal)
    origin = f"calibrated for precision {goal:g} (recall {point.recall:.3f} on {calibration.source})"
    return Threshold(point.threshold, origin, calibration)
