"""How a set of vectors is scored, whatever made them (a model, raw pixels): the k of recall@k that the searched set
allows, NMI only where it means something, and the typed record of the result. `simsearch.evaluation.scoring` scores
models with it and `simsearch.evaluation.baselines` the pixel baselines, so both read alike side by side."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from simsearch.evaluation.records import EvalRecord, EvaluationError
from simsearch.metrics import retrieval_metrics

__all__ = [
    "AGAINST_GALLERY",
    "EVAL_KS",
    "LEAVE_ONE_OUT",
    "nmi_omitted_reason",
    "parse_ks",
    "score_vectors",
    "views_protocol",
]

# The k of recall@k reported by default (hit rate): the powers of two of the deep-metric-learning literature, and 10,
# which most retrieval papers quote.
EVAL_KS = (1, 2, 4, 8, 10, 16, 32)

LEAVE_ONE_OUT = "exact k-NN, cosine, leave-one-out"
AGAINST_GALLERY = "exact k-NN, cosine, against a gallery"


def views_protocol(query_view: str, gallery_view: str) -> str:
    """The protocol of two-view data: each image of one view searches the images of the other."""
    return f"exact k-NN, cosine, query view {query_view} against gallery view {gallery_view}"


def parse_ks(text: str) -> tuple[int, ...]:
    """`"1,5,10"` as `(1, 5, 10)`: sorted, without repeats.

    Raises:
        EvaluationError: an entry that is not a whole number >= 1, or no entry at all.
    """
    ks: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise EvaluationError(f"k must be a comma-separated list of whole numbers >= 1, e.g. 1,5,10; got {text!r}")
        ks.add(int(part))
    return tuple(sorted(ks))


def nmi_omitted_reason(labels: np.ndarray) -> str | None:
    """Why NMI says nothing about these query labels, or None when it does.

    NMI clusters the queries into as many clusters as they have classes. With one image per class (two-view data,
    or a query set of one image per item) k-means has about as many clusters as points and scores near 1 whatever
    the vectors; with a single class there is nothing to tell apart. So it is computed only when the classes hold
    several images (at least two on median) and there are at least two of them.
    """
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    if len(counts) < 2:
        return f"the {int(counts.sum())} queries are all of one class: there are no clusters to tell apart"
    median = float(np.median(counts))
    if median < 2:
        return (
            f"the {int(counts.sum())} queries fall in {len(counts)} classes ({median:g} image per class on median): "
            "k-means with about as many clusters as images scores near 1 whatever the vectors"
        )
    return None


def score_vectors(
    vectors: np.ndarray,
    labels: np.ndarray,
    *,
    model: str,
    embed_dim: int,
    tta: str | None = None,
    gallery: tuple[np.ndarray, np.ndarray] | None = None,
    ks: Sequence[int] = EVAL_KS,
    protocol: str | None = None,
    seed: int = 0,
) -> EvalRecord:
    """Exact k-NN retrieval scores of `vectors` as a record: leave-one-out, or each one against `gallery`.

    k values larger than the searched set allows are left out (the record's metrics list those it has). NMI is left
    out where `nmi_omitted_reason` says it is meaningless, and the record's `omitted` gives the reason.

    Args:
        model, embed_dim, tta: what made the vectors, as the record names it.
        gallery: `(vectors, labels)` searched instead of `vectors` themselves (labels numbered alike).
        protocol: how the record describes the search [default: leave-one-out or against a gallery].

    Raises:
        EvaluationError: fewer than two images, no k the searched set allows, NaN vectors, no answerable query.
    """
    size = len(vectors) - 1 if gallery is None else len(gallery[0])
    wanted = sorted({int(k) for k in ks})
    usable = tuple(k for k in wanted if k <= size)
    if not usable:
        if size < 1:
            raise EvaluationError(f"evaluation needs at least two images, got {len(vectors)}")
        raise EvaluationError(f"every k ({', '.join(map(str, wanted))}) exceeds the {size} images searched")
    reason = nmi_omitted_reason(labels)
    omitted = {} if reason is None else {"nmi": reason}
    searched: dict[str, Any] = {} if gallery is None else {"gallery": gallery[0], "gallery_labels": gallery[1]}
    try:
        scores = retrieval_metrics(vectors, labels, ks=usable, seed=seed, nmi=reason is None, **searched)
    except ValueError as exc:
        raise EvaluationError(str(exc)) from None
    return EvalRecord(
        model=model,
        tta=tta,
        embed_dim=embed_dim,
        images=len(vectors),
        classes=len(np.unique(labels)),
        protocol=protocol or (LEAVE_ONE_OUT if gallery is None else AGAINST_GALLERY),
        metrics={k: (float(v) if isinstance(v, float) else v) for k, v in scores.items()},
        omitted=omitted,
    )
