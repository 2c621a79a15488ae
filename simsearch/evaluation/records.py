"""What an evaluation says, as typed records: the retrieval scores of a labelled set (`EvalRecord`) and the Omniglot
one-shot accuracy (`OneShotRecord`), their JSON form, where `simsearch eval` keeps them beside a checkpoint, and
reading an earlier one back (to compare curves)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simsearch.errors import EvaluationError

__all__ = [
    "ONE_SHOT_DATA",
    "EvalRecord",
    "EvaluationError",
    "OneShotRecord",
    "default_record_path",
    "read_record",
]

#: DATA that means the official Omniglot 20-way one-shot runs rather than a labelled set.
ONE_SHOT_DATA = "omniglot:one-shot"
ONE_SHOT_PROTOCOL = "Omniglot 20-way one-shot (Lake et al. 2015), official runs, nearest training image by cosine"


@dataclass
class EvalRecord:
    """The retrieval scores of a model on a labelled set.

    Attributes:
        model, tta, embed_dim: the model scored (its id, its test-time augmentation).
        images, classes: the query set's size.
        protocol: how it was searched (exact k-NN, cosine, leave-one-out or against a gallery).
        metrics: `simsearch.metrics.retrieval_metrics` (recall@k, precision@k, MAP@R, R-precision, NMI, counts).
        omitted: the scores left out, each with the reason (NMI with one image per class, a k above the gallery).
        skipped: messages of the images that could not be read and were left out.
        gallery, data: what was searched and what queried it, as `simsearch.data.data_label` gives them.
        baselines: the same images scored without a model (`simsearch.evaluation.baselines`), same protocol.
        views: `{"query": view, "gallery": view}` of two-view data searched from one view to the other.
        plot: the PNG drawn of it.
    """

    model: str
    tta: str | None
    embed_dim: int
    images: int
    classes: int
    protocol: str
    metrics: dict[str, Any]
    omitted: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    gallery: str | None = None
    data: str | None = None
    baselines: list[EvalRecord] = field(default_factory=list)
    views: dict[str, str] | None = None
    plot: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON record; the optional entries only when they say something."""
        out: dict[str, Any] = {
            "model": self.model,
            "tta": self.tta,
            "embed_dim": self.embed_dim,
            "images": self.images,
            "classes": self.classes,
            "protocol": self.protocol,
            "metrics": dict(self.metrics),
        }
        if self.omitted:
            out["omitted"] = dict(self.omitted)
        if self.skipped:
            out["skipped"] = list(self.skipped)
        for key in ("gallery", "data", "views"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.baselines:
            out["baselines"] = [baseline.as_dict() for baseline in self.baselines]
        if self.plot is not None:
            out["plot"] = self.plot
        return out

    def headline(self) -> str:
        return f"{self.model} on {self.images} images of {self.classes} classes ({self.protocol})"


@dataclass
class OneShotRecord:
    """The Omniglot 20-way one-shot accuracy of a model over the official runs (and of each run)."""

    model: str
    embed_dim: int
    accuracy: float
    runs: int
    per_run: list[float]
    data: str = ONE_SHOT_DATA
    protocol: str = ONE_SHOT_PROTOCOL

    @property
    def metrics(self) -> dict[str, Any]:
        return {"one_shot_accuracy": self.accuracy, "runs": self.runs}

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "embed_dim": self.embed_dim,
            "data": self.data,
            "protocol": self.protocol,
            "metrics": self.metrics,
            "per_run": list(self.per_run),
        }

    def headline(self) -> str:
        return f"{self.model} on {self.data} ({self.runs} runs of 20 queries)"


def default_record_path(
    folder: Path, data: str, gallery: str | None, tta: str | None = None, views: tuple[str, str] | None = None
) -> Path:
    """`eval-<DATA>[-vs-<GALLERY>][-<QUERY VIEW>-to-<GALLERY VIEW>][-<TTA>].json` in a checkpoint folder; when that
    file holds another folder's record (two `test` folders in different places), a short hash of this DATA's path is
    added rather than overwriting it."""
    from simsearch.data import data_file_name, data_label

    name = data_file_name(data) + (f"-vs-{data_file_name(gallery)}" if gallery else "")
    name += (f"-{views[0]}-to-{views[1]}" if views else "") + (f"-{tta}" if tta else "")
    path = folder / f"eval-{name}.json"
    labels = {"data": data_label(data), "gallery": data_label(gallery) if gallery else None}
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return path  # none yet (or unreadable: it is replaced, as an explicit path would be)
    if isinstance(earlier, dict) and all(earlier.get(key) == value for key, value in labels.items()):
        return path
    digest = hashlib.sha256(json.dumps(labels).encode()).hexdigest()[:8]
    return folder / f"eval-{name}-{digest}.json"


def read_record(path: Path) -> dict[str, Any]:
    """An earlier evaluation record (JSON), e.g. to draw its recall@k curve beside a new one.

    Raises:
        EvaluationError: unreadable, or not a record (no metrics).
    """
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"cannot read eval record {path}: {exc}") from None
    if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
        raise EvaluationError(f"{path} is not a `simsearch eval` record (no metrics)")
    return record
