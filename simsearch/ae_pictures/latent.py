"""The latent space in two dimensions: a scatter of one model's codes, or of several side by side."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simsearch.ae_pictures.canvas import _check_images, _codes, _figure, _label_tensor, _save, _short, class_names
from simsearch.autoencoders import AutoEncoder
from simsearch.errors import PictureError

# More classes than this in a scatter cannot be told apart by colour: the most frequent ones are drawn.
_SCATTER_CLASSES = 10
_SCATTER_SIZE = 5.5  # inches, one panel


# --------------------------------------------------------------------------------------------------------------------
# Latent space
# --------------------------------------------------------------------------------------------------------------------


def latent_2d(ae: AutoEncoder, images: torch.Tensor, labels: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """2-D points of the images' codes: the code itself when code_dim is 2, else its first two principal
    components. Returns `(N, 2) float32` points and an axis description."""
    images = _check_images(images, ae)
    codes = _codes(ae, images, _label_tensor(labels, len(images))).numpy().astype(np.float64)
    if codes.shape[1] == 1:
        return np.stack([codes[:, 0], np.zeros(len(codes))], axis=1).astype(np.float32), "code (1-D)"
    if codes.shape[1] == 2:
        return codes.astype(np.float32), "the 2-d code"
    centred = codes - codes.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    var = s**2
    share = var[:2] / max(var.sum(), 1e-12)
    points = centred @ vt[:2].T
    return points.astype(np.float32), f"PCA of the {codes.shape[1]}-d code ({100 * share.sum():.0f}% of the variance)"


def _scatter_classes(labels: np.ndarray) -> np.ndarray:
    """The classes drawn: all when few, else the `_SCATTER_CLASSES` most frequent (ties by label)."""
    values, counts = np.unique(labels, return_counts=True)
    if len(values) <= _SCATTER_CLASSES:
        return values
    order = np.lexsort((values, -counts))
    return np.sort(values[order[:_SCATTER_CLASSES]])


def _draw_scatter(ax: Any, points: np.ndarray, labels: np.ndarray, names: list[str], pca: bool, title: str) -> Any:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    shown = _scatter_classes(labels)
    for i, c in enumerate(shown):
        mask = labels == c
        ax.scatter(points[mask, 0], points[mask, 1], s=7, alpha=0.7, color=cmap(i % 10), label=_short(names[c], 22))
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("PC 1" if pca else "z1", fontsize=9)
    ax.set_ylabel("PC 2" if pca else "z2", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(True, alpha=0.25)
    return shown


def save_latent_comparison(
    models: Sequence[tuple[str, AutoEncoder]],
    images: torch.Tensor,
    labels: np.ndarray,
    path: str | os.PathLike[str],
    *,
    classes: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """One latent scatter per model, side by side (e.g. `[("AE", ae), ("VAE", vae)]`), coloured by class with one
    shared legend. Beyond ten classes the ten most frequent are drawn."""
    if not models:
        raise PictureError("a latent picture needs at least one model")
    labels = np.asarray(labels)
    images = _check_images(images)
    if labels.shape != (len(images),):
        raise PictureError(f"labels must be ({len(images)},), got {labels.shape}")
    names = class_names(classes, int(labels.max()) + 1)
    width = _SCATTER_SIZE * len(models) + 2.4
    fig = _figure(width, _SCATTER_SIZE + 0.6)
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    shown = np.empty(0)
    for ax, (name, ae) in zip(axes, models, strict=True):
        points, axis = latent_2d(ae, images, labels)
        pca = ae.code_dim > 2
        shown = _draw_scatter(ax, points, labels, names, pca, f"{name}\n{axis}")
    handles, legend_labels = axes[0].get_legend_handles_labels()
    n_classes = len(np.unique(labels))
    legend_title = "class" if len(shown) == n_classes else f"{len(shown)} of {n_classes} classes"
    fig.legend(
        handles, legend_labels, loc="center right", title=legend_title, fontsize=8, markerscale=2.5, frameon=False
    )
    fig.suptitle(title or f"Latent space of {len(images)} images, coloured by class", fontsize=12)
    fig.subplots_adjust(left=0.75 / width, right=1 - 2.2 / width, top=0.83, bottom=0.1, wspace=0.25)
    return _save(fig, path)


def save_latent_scatter(
    ae: AutoEncoder,
    images: torch.Tensor,
    labels: np.ndarray,
    path: str | os.PathLike[str],
    *,
    classes: Sequence[str] | None = None,
) -> Path:
    """The 2-D latent scatter of one model (its code, or PCA of it), coloured by class."""
    return save_latent_comparison([(f"{ae.kind} autoencoder", ae)], images, labels, path, classes=classes)
