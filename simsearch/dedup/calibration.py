"""Calibrated scores: which cosine threshold reaches a given precision on labelled pairs, and what a score means.

A calibration is fitted on pairs of images known to be the same item or not (`fit`), and keeps, for each goal
precision (0.90, 0.99, 0.999 by default), the lowest threshold whose accepted pairs reached it, with the recall there,
the false-match rate (different-item pairs accepted, over all different-item pairs) and Wilson 95% intervals of
precision and recall. It also keeps the precision curve, so that any score can be read as "p >= 0.99 same item" or an
estimated precision. It belongs to one model (weights and test-time augmentation): a calibration of another model
is refused, since the same cosine means different things for different models.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simsearch.errors import CalibrationError
from simsearch.fsio import atomic_write_json

__all__ = [
    "CALIBRATION_FILE",
    "DEFAULT_PRECISIONS",
    "Calibration",
    "OperatingPoint",
    "PairCounts",
    "fit",
    "pair_counts",
    "wilson_interval",
]

CALIBRATION_FILE = "calibration.json"
FORMAT = "simsearch-calibration"
VERSION = 1
DEFAULT_PRECISIONS = (0.90, 0.99, 0.999)
#: Points kept of the precision curve (enough to read any score to about a percent of the positives).
CURVE_POINTS = 200
_Z95 = 1.959964


def wilson_interval(successes: int, trials: int, z: float = _Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default): sound near 0 and 1, unlike the normal one."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class PairCounts:
    """Pairwise confusion counts of a decision "same item" against the truth, and the rates they give."""

    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float:
        accepted = self.true_positives + self.false_positives
        return self.true_positives / accepted if accepted else 1.0

    @property
    def recall(self) -> float:
        actual = self.true_positives + self.false_negatives
        return self.true_positives / actual if actual else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "precision": self.precision, "recall": self.recall, "f1": self.f1}


def pair_counts(predicted: set[tuple[int, int]], truth: set[tuple[int, int]]) -> PairCounts:
    """Counts of predicted same-item pairs against true ones; pairs are (i, j) with i < j."""
    tp = len(predicted & truth)
    return PairCounts(tp, len(predicted) - tp, len(truth) - tp)


@dataclass(frozen=True)
class OperatingPoint:
    """One precision goal and the threshold that reached it on the calibration pairs."""

    goal: float
    threshold: float
    precision: float
    precision_ci: tuple[float, float]
    recall: float
    recall_ci: tuple[float, float]
    false_match_rate: float
    accepted_pairs: int

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> OperatingPoint:
        return cls(**{**raw, "precision_ci": tuple(raw["precision_ci"]), "recall_ci": tuple(raw["recall_ci"])})


@dataclass
class Calibration:
    """What cosine scores of one model mean for one kind of sameness ("near-duplicate" or "same-class")."""

    model_id: str
    weights_sha256: str
    tta: str | None
    kind: str
    source: str
    positives: int
    negatives: int
    points: list[OperatingPoint]
    #: (threshold, precision, recall) from the highest score down, CURVE_POINTS of them.
    curve: list[tuple[float, float, float]]
    best_f1: dict[str, float] = field(default_factory=dict)
    created: str = ""
    format: str = FORMAT
    version: int = VERSION

    # -- reading scores ---------------------------------------------------------------------------------------------

    def point(self, precision: float) -> OperatingPoint:
        """The operating point of a precision goal this calibration has (else CalibrationError)."""
        for p in self.points:
            if math.isclose(p.goal, precision, abs_tol=1e-9):
                return p
        have = ", ".join(f"{p.goal:g}" for p in self.points)
        raise CalibrationError(f"no calibrated threshold for precision {precision:g} (calibrated: {have})")

    def threshold_for(self, precision: float) -> float:
        return self.point(precision).threshold

    def precision_at(self, score: float) -> float:
        """Estimated precision of accepting pairs scoring at least `score` (the curve's nearest point below)."""
        estimate = self.curve[-1][1] if self.curve else 0.0
        for threshold, precision, _ in self.curve:
            if score >= threshold:
                return precision
        return estimate

    def meaning(self, score: float) -> str:
        """A score in words: the highest precision goal whose threshold it passes, else the estimated precision."""
        for p in sorted(self.points, key=lambda q: -q.goal):
            if score >= p.threshold:
                return f"p>={p.goal:g} same"
        return f"p~{self.precision_at(score):.2f} same"

    # -- identity and files -----------------------------------------------------------------------------------------

    def fits(self, weights_sha256: str, tta: str | None) -> bool:
        """Whether this calibration is of the model with these weights and test-time augmentation (a checkpoint
        folder may move, so the weights stand for the model, not its name)."""
        return weights_sha256 == self.weights_sha256 and (tta or None) == (self.tta or None)

    def check_model(self, model_id: str, weights_sha256: str, tta: str | None, where: str = "") -> None:
        """Refuse a calibration of another model: its thresholds mean nothing for this one's scores."""
        if not self.fits(weights_sha256, tta):
            raise CalibrationError(
                f"the calibration{' in ' + where if where else ''} is for {self.model_id} "
                f"(weights {self.weights_sha256[:12]}), not {model_id} (weights {weights_sha256[:12]}): "
                "calibrate again with this model"
            )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write as JSON through the atomic write (a reader never sees half a file)."""
        file = Path(path)
        atomic_write_json(file, self.as_dict())
        return file

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Calibration:
        if raw.get("format") != FORMAT or raw.get("version") != VERSION:
            raise CalibrationError(f"not a {FORMAT} file of version {VERSION}")
        try:
            return cls(
                **{
                    **raw,
                    "points": [OperatingPoint.from_dict(p) for p in raw["points"]],
                    "curve": [tuple(c) for c in raw["curve"]],
                }
            )
        except (KeyError, TypeError) as exc:
            raise CalibrationError(f"damaged calibration: {exc}") from exc

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Calibration:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CalibrationError(f"cannot read calibration {path}: {exc}") from exc
        try:
            return cls.from_dict(raw)
        except CalibrationError as exc:
            raise CalibrationError(f"{path}: {exc}") from exc


def _cut(scores: np.ndarray, i: int) -> float:
    """A threshold that accepts the `i + 1` highest of the descending `scores`: halfway to the next one down."""
    return float(scores[i]) if i + 1 >= len(scores) else float((scores[i] + scores[i + 1]) / 2)


def fit(
    scores: np.ndarray,
    same: np.ndarray,
    *,
    model_id: str,
    weights_sha256: str,
    tta: str | None,
    kind: str,
    source: str,
    precisions: tuple[float, ...] = DEFAULT_PRECISIONS,
    negatives: int | None = None,
) -> Calibration:
    """Fit thresholds on labelled pair scores.

    For each precision goal the threshold accepts as many pairs as possible while the accepted ones keep at least
    that precision (the highest-recall cut that reaches it). A goal that not even the best-scoring pairs reach is
    left out, with no threshold to pretend otherwise.

    Args:
        scores: (P,) cosine of each pair.
        same: (P,) bool, True where the pair is the same item.
        negatives: how many different-item pairs there are in all, when `scores` holds only those above some floor
            (the rest can never pass a threshold above it); default: those in `scores`.
    """
    scores = np.asarray(scores, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    if scores.shape != same.shape or scores.ndim != 1:
        raise CalibrationError("scores and labels must be two vectors of the same length")
    n_pos = int(same.sum())
    n_neg = int(negatives if negatives is not None else (~same).sum())
    if n_pos == 0 or n_neg == 0:
        raise CalibrationError(
            f"calibration needs same-item and different-item pairs; got {n_pos} and {n_neg} "
            "(give at least two images of some items, and more than one item)"
        )
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], same[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    precision = tp / (tp + fp)
    recall = tp / n_pos
    points: list[OperatingPoint] = []
    for goal in sorted(precisions):
        ok = np.flatnonzero(precision >= goal)
        if len(ok) == 0:
            continue
        i = int(ok.max())
        points.append(
            OperatingPoint(
                goal=float(goal),
                threshold=_cut(s, i),
                precision=float(precision[i]),
                precision_ci=wilson_interval(int(tp[i]), int(tp[i] + fp[i])),
                recall=float(recall[i]),
                recall_ci=wilson_interval(int(tp[i]), n_pos),
                false_match_rate=float(fp[i] / n_neg),
                accepted_pairs=int(tp[i] + fp[i]),
            )
        )
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    b = int(f1.argmax())
    # The curve at evenly spaced recalls: the precision of pairs scoring at least each threshold.
    picks = np.unique(np.searchsorted(recall, np.linspace(0, 1, CURVE_POINTS), side="left").clip(0, len(s) - 1))
    curve = [(_cut(s, int(i)), float(precision[i]), float(recall[i])) for i in picks]
    from simsearch.collection.manifest import now_iso

    return Calibration(
        model_id=model_id,
        weights_sha256=weights_sha256,
        tta=tta,
        kind=kind,
        source=source,
        positives=n_pos,
        negatives=n_neg,
        points=points,
        curve=curve,
        best_f1={
            "threshold": _cut(s, b),
            "f1": float(f1[b]),
            "precision": float(precision[b]),
            "recall": float(recall[b]),
        },
        created=now_iso(),
    )
