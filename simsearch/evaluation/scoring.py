"""Scoring a model by retrieval: exact k-NN recall@k (hit rate), MAP@R, R-precision and NMI of a labelled set,
leave-one-out or against a gallery, as a typed record (`simsearch.evaluation.records`), optionally beside the
raw-pixel baselines of the same images; and the Omniglot 20-way one-shot protocol."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from simsearch.data import ArrayDataset, data_label, omniglot_one_shot_runs
from simsearch.evaluation.baselines import pixel_baselines
from simsearch.evaluation.embedding import embed_dataset, embed_queries_and_gallery
from simsearch.evaluation.protocol import EVAL_KS, score_vectors, views_protocol
from simsearch.evaluation.records import EvalRecord, EvaluationError, OneShotRecord
from simsearch.metrics import one_shot_accuracy
from simsearch.models import Embedder

__all__ = [
    "EVAL_KS",
    "ScoredSet",
    "evaluate",
    "evaluate_embeddings",
    "evaluate_labelled",
    "one_shot_eval",
    "one_shot_record",
]


def evaluate(
    embedder: Embedder,
    dataset: Any,
    *,
    gallery: Any | None = None,
    views: tuple[str, str] | None = None,
    ks: Sequence[int] = EVAL_KS,
    baselines: bool = False,
    batch_size: int = 64,
    workers: int = 0,
    seed: int = 0,
) -> EvalRecord:
    """Exact k-NN retrieval scores of a labelled dataset: recall@k (hit rate), MAP@R, R-precision, NMI.

    Leave-one-out over `dataset` by default; with `gallery` (another labelled dataset) each image of `dataset` searches
    the gallery instead, classes matched by name; with `views` `(query view, gallery view)` of two-view data
    (`simsearch.data.open_views`) each image of the query view searches the images of the gallery view. k values
    larger than the gallery allows are left out, and so is NMI where the queries hold about one image per class; the
    record's `omitted` says why. `baselines` adds the raw-pixel scores of the same images under the same protocol
    (`simsearch.evaluation.baselines`).
    """
    dataset, gallery, protocol = _searched_views(dataset, gallery, views)
    vectors, labels, searched = embed_queries_and_gallery(
        embedder, dataset, gallery, batch_size=batch_size, workers=workers
    )
    record = evaluate_embeddings(embedder, vectors, labels, gallery=searched, ks=ks, protocol=protocol, seed=seed)
    if baselines:
        record.baselines = pixel_baselines(dataset, gallery, ks=ks, protocol=protocol, workers=workers)
    record.views = None if views is None else {"query": views[0], "gallery": views[1]}
    return record


def _searched_views(dataset: Any, gallery: Any | None, views: tuple[str, str] | None) -> tuple[Any, Any, str | None]:
    """`(queries, gallery, protocol)`: as given, or the query and gallery views of two-view data.

    Raises:
        EvaluationError: views with a gallery, views of data without views, a view the data lack.
    """
    if views is None:
        return dataset, gallery, None
    from simsearch.data import DatasetError

    if gallery is not None:
        raise EvaluationError("two-view data search one view with the other: no separate gallery")
    if not hasattr(dataset, "view"):
        raise EvaluationError("query and gallery views need two-view data (see simsearch.data.open_views)")
    try:
        queries, searched = dataset.view(views[0]), dataset.view(views[1])
    except DatasetError as exc:
        raise EvaluationError(str(exc)) from None
    return queries, searched, views_protocol(*views)


def evaluate_embeddings(
    embedder: Embedder,
    vectors: np.ndarray,
    labels: np.ndarray,
    *,
    gallery: tuple[np.ndarray, np.ndarray] | None = None,
    ks: Sequence[int] = EVAL_KS,
    protocol: str | None = None,
    seed: int = 0,
) -> EvalRecord:
    """`evaluate` on embeddings computed already (by `embed_dataset`), e.g. to plot them as well.

    Args:
        embedder: the model that made `vectors`; only its identity goes into the record.
        vectors: `(N, D)` embeddings.
        labels: `(N,)` classes.
        gallery: `(vectors, labels)` to search instead of `vectors` themselves (labels in the same numbering, see
            `labels_by_class_name`); without it the search is leave-one-out.
        protocol: how the record describes the search [default: leave-one-out or against a gallery].
    """
    return score_vectors(
        vectors,
        labels,
        model=embedder.model_id,
        embed_dim=embedder.embed_dim,
        tta=embedder.tta,
        gallery=gallery,
        ks=ks,
        protocol=protocol,
        seed=seed,
    )


@dataclass
class ScoredSet:
    """A labelled set scored: its record, and the query vectors and labels it was computed from (for a plot)."""

    record: EvalRecord
    vectors: np.ndarray
    labels: np.ndarray


def evaluate_labelled(
    embedder: Embedder,
    dataset: Any,
    data: str,
    *,
    gallery: Any | None = None,
    gallery_name: str | None = None,
    views: tuple[str, str] | None = None,
    ks: Sequence[int] = EVAL_KS,
    baselines: bool = False,
    batch_size: int = 64,
    workers: int = 0,
) -> ScoredSet:
    """`evaluate` of DATA as `simsearch eval` scores it: unreadable images are left out and listed in the record's
    `skipped` (a stand-in would skew the score), and the record names DATA and the gallery (`data_label`)."""
    skipped: list[str] = []
    dataset, gallery, protocol = _searched_views(dataset, gallery, views)
    vectors, labels, searched = embed_queries_and_gallery(
        embedder, dataset, gallery, batch_size=batch_size, workers=workers, skipped=skipped
    )
    record = evaluate_embeddings(embedder, vectors, labels, gallery=searched, ks=ks, protocol=protocol)
    if baselines:  # the same images fail again: the list already names them
        record.baselines = pixel_baselines(dataset, gallery, ks=ks, protocol=protocol, workers=workers, skipped=[])
    record.views = None if views is None else {"query": views[0], "gallery": views[1]}
    record.skipped = skipped
    record.gallery = data_label(gallery_name) if gallery_name is not None else None
    record.data = data_label(data)
    return ScoredSet(record, vectors, labels)


def one_shot_eval(embedder: Embedder, runs: list[Any] | None = None, *, batch_size: int = 64) -> dict[str, Any]:
    """Omniglot 20-way one-shot accuracy (Lake et al. 2015) on the official runs, nearest training image by cosine.

    The run images (grey `(105, 105)` uint8, ink black on white like `load_omniglot`) go through the model's own
    eval transform, as `embed_dataset` gives them, converted to the channels its data config asks for.

    Args:
        runs: `simsearch.data.OneShotRun`s; None reads the 20 official runs from the shared data folder.

    Returns:
        `{"accuracy": float, "runs": int, "per_run": [float, ...]}`, accuracies in [0, 1].
    """
    if runs is None:
        runs = omniglot_one_shot_runs()
    if not runs:
        raise EvaluationError("no one-shot runs to evaluate")
    # Embed every run once, then score each run on its slice: the per-run numbers and the total share one pass.
    arrays = [np.asarray(im, dtype=np.uint8) for run in runs for im in (*run.train_images, *run.test_images)]
    if len({a.shape for a in arrays}) > 1:
        raise EvaluationError(f"one-shot run images differ in size ({sorted({a.shape for a in arrays})[:3]}...)")
    images = np.stack(arrays)
    vectors, _ = embed_dataset(embedder, ArrayDataset(images, np.zeros(len(images), np.int64)), batch_size=batch_size)
    per_run: list[float] = []
    offset = 0
    for run in runs:
        n = len(run.train_images) + len(run.test_images)
        chunk = vectors[offset : offset + n]
        offset += n
        try:
            per_run.append(one_shot_accuracy(_constant_embedding(chunk), [run]))
        except ValueError as exc:
            raise EvaluationError(str(exc)) from None
    correct = sum(acc * len(run.test_images) for acc, run in zip(per_run, runs, strict=True))
    total = sum(len(run.test_images) for run in runs)
    return {"accuracy": correct / total, "runs": len(runs), "per_run": per_run}


def _constant_embedding(vectors: np.ndarray) -> Callable[[list[np.ndarray]], np.ndarray]:
    """An embed_fn for `one_shot_accuracy` that returns vectors computed beforehand."""

    def embed_fn(_images: list[np.ndarray]) -> np.ndarray:
        return vectors

    return embed_fn


def one_shot_record(embedder: Embedder, runs: list[Any] | None = None, *, batch_size: int = 64) -> OneShotRecord:
    """`one_shot_eval` as a record, as `simsearch eval omniglot:one-shot` writes it."""
    scores = one_shot_eval(embedder, runs, batch_size=batch_size)
    return OneShotRecord(
        model=embedder.model_id,
        embed_dim=embedder.embed_dim,
        accuracy=scores["accuracy"],
        runs=scores["runs"],
        per_run=scores["per_run"],
    )
