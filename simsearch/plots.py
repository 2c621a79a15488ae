"""Pictures of an evaluation: recall@k curves of one or more models and a 2-D projection (PCA or t-SNE) of the test
embeddings coloured by class; and of a training run: its loss and validation scores per epoch. matplotlib (the
`plots` extra) is imported inside the drawing functions only (Agg canvas, no pyplot): without it everything else
works, and drawing raises a `PlotError` that says what to install.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from simsearch.errors import PlotError

__all__ = [
    "PROJECTIONS",
    "MATPLOTLIB_MISSING",
    "PlotError",
    "pca_2d",
    "recall_curve",
    "require_matplotlib",
    "save_eval_plot",
    "save_history_plot",
    "tsne_2d",
]

logger = logging.getLogger(__name__)

PROJECTIONS = ("pca", "tsne")
# Points drawn in the projection panel: more only blur the picture (and exact t-SNE is O(N^2) in time and memory).
_MAX_POINTS = {"pca": 6000, "tsne": 1000}
# Beyond this many classes a legend is unreadable: colours alone (cyclic colormap) tell neighbouring classes apart.
_LEGEND_CLASSES = 20
FIGURE_SIZE = (12.0, 5.5)
FIGURE_DPI = 100


#: What a drawing function says when matplotlib is not installed.
MATPLOTLIB_MISSING = "drawing PNG pictures needs matplotlib: pip install 'simsearch[plots]'"


def require_matplotlib() -> None:
    """Import matplotlib, or raise a one-line `PlotError` naming the extra to install (call it only to draw: the
    import costs about half a second).

    Raises:
        PlotError: matplotlib is not installed.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotError(MATPLOTLIB_MISSING) from None


def recall_curve(record: Mapping[str, Any]) -> tuple[list[int], list[float]]:
    """The `(ks, recall@k)` of an evaluation record (`simsearch.evaluation.evaluate`), sorted by k.

    Raises:
        PlotError: the record holds no recall@k.
    """
    metrics = record.get("metrics", record)
    points = sorted(
        (int(name.split("@", 1)[1]), float(value))
        for name, value in metrics.items()
        if name.startswith("recall@") and name.split("@", 1)[1].isdigit()
    )
    if not points:
        raise PlotError(f"record of {record.get('model', '?')} has no recall@k numbers")
    return [k for k, _ in points], [v for _, v in points]


def pca_2d(vectors: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """The first two principal components of `(N, D)` vectors (numpy only).

    Signs are fixed (each axis's largest loading positive) so the same vectors always give the same picture.

    Returns:
        `(N, 2) float32` coordinates and the share of the variance each axis explains.
    """
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise PlotError(f"PCA needs (N >= 2, D) vectors, got shape {x.shape}")
    x = x - x.mean(axis=0)
    # D x D covariance and its eigenvectors: cheaper than an SVD of (N, D) when N >> D (embeddings are <= ~2k wide).
    values, vecs = np.linalg.eigh(x.T @ x)
    order = np.argsort(values)[::-1][:2]
    axes = vecs[:, order]
    if axes.shape[1] < 2:
        axes = np.pad(axes, ((0, 0), (0, 2 - axes.shape[1])))
    axes *= np.where(axes[np.abs(axes).argmax(axis=0), [0, 1]] < 0, -1.0, 1.0)
    total = float(values.clip(min=0).sum())
    explained = tuple(float(values[i]) / total if total > 0 else 0.0 for i in order) + (0.0,) * (2 - len(order))
    return (x @ axes).astype(np.float32), (explained[0], explained[1])


def tsne_2d(
    vectors: np.ndarray,
    *,
    perplexity: float = 30.0,
    iterations: int = 750,
    seed: int = 0,
) -> np.ndarray:
    """Exact t-SNE to 2-D (van der Maaten & Hinton 2008) by scikit-learn's `TSNE`: O(N^2) memory and time, meant for
    N <= ~2000. Exact rather than Barnes-Hut: numpy sums in a fixed order, so the same vectors always give the same
    picture. Initialised from PCA (keeps the global layout), with the learning rate of Belkina et al. 2019 ("auto").

    Returns:
        `(N, 2) float32` coordinates.
    """
    from sklearn.manifold import TSNE

    x = np.asarray(vectors, dtype=np.float64)
    n = len(x)
    if x.ndim != 2 or n < 4:
        raise PlotError(f"t-SNE needs (N >= 4, D) vectors, got shape {x.shape}")
    if iterations < 250:
        raise PlotError(f"t-SNE needs at least 250 iterations (its early exaggeration), got {iterations}")
    tsne = TSNE(
        n_components=2,
        perplexity=min(perplexity, (n - 1) / 3),
        max_iter=iterations,
        init="pca",
        learning_rate="auto",
        method="exact",
        random_state=seed,
    )
    return tsne.fit_transform(x).astype(np.float32)  # type: ignore[no-any-return]


def _subsample(n: int, limit: int, seed: int) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def curve_title(record: Mapping[str, Any]) -> str:
    """The recall@k axes' title: the set's size and how it was searched (a record says whether it was leave-one-out;
    one from before that key counts as leave-one-out, the only protocol then)."""
    searched = "leave-one-out" if record.get("metrics", {}).get("leave_one_out", True) else "against a gallery"
    return f"{record.get('images', '?')} images, {record.get('classes', '?')} classes, {searched}"


def save_eval_plot(
    path: str | os.PathLike[str],
    records: Sequence[Mapping[str, Any]],
    vectors: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    *,
    classes: Sequence[str] | None = None,
    projection: str = "pca",
    max_points: int | None = None,
    seed: int = 0,
    title: str | None = None,
) -> Path:
    """Write a PNG: recall@k (hit rate) against k for every record on one axes (log2 k), and beside it the 2-D
    projection of `vectors` coloured by class (left out when `vectors` is None).

    The image is `FIGURE_SIZE * FIGURE_DPI` pixels (1200 x 550). Up to 20 classes get a legend with their names;
    more are told apart by a cyclic colormap only.

    Args:
        path: the PNG to write (parent folders are created).
        records: evaluation records (`simsearch.evaluation.evaluate`), each a curve labelled by its "model".
        vectors: `(N, D)` embeddings of the evaluated images (the first record's).
        labels: `(N,)` classes of `vectors`.
        classes: class names indexed by label, for the legend.
        projection: "pca" or "tsne" (exact t-SNE, by default on 1,000 points: about half a minute on one core).
        max_points: draw at most this many points (a seeded random subset); default 6,000 for PCA, 1,000 t-SNE.

    Raises:
        PlotError: no records, a record without recall@k, an unknown projection, vectors and labels that disagree,
            no matplotlib.
    """
    require_matplotlib()  # before a t-SNE that would be thrown away
    if not records:
        raise PlotError("no evaluation records to plot")
    if projection not in PROJECTIONS:
        raise PlotError(f"projection must be one of {', '.join(PROJECTIONS)}, got {projection!r}")
    curves = [(str(r.get("model", f"model {i + 1}")), *recall_curve(r)) for i, r in enumerate(records)]
    points: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    axis_names = ("", "")
    if vectors is not None:
        vec = np.asarray(vectors)
        if labels is None or len(np.asarray(labels)) != len(vec):
            raise PlotError("the projection needs one label per vector")
        keep = _subsample(len(vec), max_points or _MAX_POINTS[projection], seed)
        point_labels = np.asarray(labels)[keep]
        if projection == "pca":
            points, explained = pca_2d(vec[keep])
            axis_names = (f"PC1 ({explained[0]:.0%} of variance)", f"PC2 ({explained[1]:.0%})")
        else:
            points = tsne_2d(vec[keep], seed=seed)
            axis_names = ("t-SNE 1", "t-SNE 2")

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGURE_SIZE, dpi=FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    if points is not None:
        ax_curve, ax_proj = fig.subplots(1, 2, width_ratios=(1, 1.15))
    else:
        ax_curve, ax_proj = fig.subplots(1, 1), None
    all_ks = sorted({k for _, ks, _ in curves for k in ks})
    for name, ks, values in curves:
        ax_curve.plot(ks, values, marker="o", label=name)
    ax_curve.set_xscale("log", base=2)
    ax_curve.set_xticks(all_ks, [str(k) for k in all_ks])
    ax_curve.set_ylim(0, 1.02)
    ax_curve.set_xlabel("k")
    ax_curve.set_ylabel("recall@k (hit rate)")
    first = records[0]
    ax_curve.set_title(curve_title(first))
    ax_curve.grid(True, alpha=0.3)
    ax_curve.legend(loc="lower right", fontsize="small")

    if ax_proj is not None and points is not None and point_labels is not None:
        _draw_projection(ax_proj, points, point_labels, classes, len(np.asarray(vectors)))
        ax_proj.set_xlabel(axis_names[0])
        ax_proj.set_ylabel(axis_names[1])
        method = "PCA" if projection == "pca" else "t-SNE"
        ax_proj.set_title(f"{method} of the embeddings of {curves[0][0]}")
    return _save(fig, path, title)


def _draw_projection(
    ax: Any, points: np.ndarray, labels: np.ndarray, classes: Sequence[str] | None, total: int
) -> None:
    import matplotlib

    present = np.unique(labels)
    n_classes = len(present)
    if n_classes <= _LEGEND_CLASSES:
        cmap = matplotlib.colormaps["tab10" if n_classes <= 10 else "tab20"]
        colour_of = {c: cmap(i) for i, c in enumerate(present)}
    else:
        # Cyclic: the first and last classes must not look alike. Classes are spread round the circle in a
        # scrambled order so neighbouring label numbers do not get neighbouring hues.
        cmap = matplotlib.colormaps["hsv"]
        order = np.random.default_rng(0).permutation(n_classes)
        colour_of = {c: cmap(order[i] / n_classes) for i, c in enumerate(present)}
    size = 12 if len(points) <= 2000 else 5
    if n_classes <= _LEGEND_CLASSES:
        for c in present:
            mask = labels == c
            name = classes[int(c)] if classes is not None and int(c) < len(classes) else str(c)
            ax.scatter(points[mask, 0], points[mask, 1], s=size, color=colour_of[c], alpha=0.75, label=name[:24])
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="x-small", markerscale=1.5, frameon=False)
    else:
        colours = np.array([colour_of[c] for c in labels])
        ax.scatter(points[:, 0], points[:, 1], s=size, c=colours, alpha=0.75, linewidths=0)
    shown = f"{len(points)} of {total} points" if len(points) < total else f"{total} points"
    ax.text(0.01, 0.99, f"{shown}, {n_classes} classes", transform=ax.transAxes, va="top", fontsize="small")
    ax.set_xticks([])
    ax.set_yticks([])


def save_history_plot(
    path: str | os.PathLike[str], history: Sequence[Mapping[str, Any]], title: str | None = None
) -> Path:
    """Write a PNG of a training run's `history.json`: the training loss per epoch, and beside it the validation
    R@1 and MAP@R per epoch from epoch 0 (the model before training), so the gain of each epoch can be read.

    Raises:
        PlotError: no epochs, no matplotlib.
    """
    require_matplotlib()
    trained = [h for h in history if h.get("epoch", 0) >= 1 and "loss" in h]
    validated = [h for h in history if isinstance(h.get("val"), Mapping)]
    if not trained and not validated:
        raise PlotError("no epochs to plot")

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(FIGURE_SIZE[0], FIGURE_SIZE[1] * 0.8), dpi=FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_val = fig.subplots(1, 2) if validated else (fig.subplots(1, 1), None)
    ax_loss.plot([h["epoch"] for h in trained], [h["loss"] for h in trained], marker="o")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_title("training loss")
    ax_loss.grid(True, alpha=0.3)
    if ax_val is not None:
        epochs = [h["epoch"] for h in validated]
        for key, label in (("recall@1", "R@1"), ("map@r", "MAP@R")):
            ax_val.plot(epochs, [h["val"].get(key, np.nan) for h in validated], marker="o", label=label)
        ax_val.set_xlabel("epoch (0: before training)")
        ax_val.set_ylabel("validation score")
        ax_val.set_ylim(0, 1.02)
        ax_val.set_title("validation")
        ax_val.grid(True, alpha=0.3)
        ax_val.legend(loc="lower right", fontsize="small")
    for ax in (ax_loss, ax_val):
        if ax is not None:
            ax.xaxis.get_major_locator().set_params(integer=True)  # type: ignore[call-arg]
    return _save(fig, path, title)


def _save(fig: Any, path: str | os.PathLike[str], title: str | None) -> Path:
    """Title a figure and write it as a PNG, its folder made if needed."""
    if title:
        fig.suptitle(title)
    out = Path(path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    logger.info("wrote %s", out)
    return out
