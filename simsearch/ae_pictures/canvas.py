"""What every autoencoder picture needs: running a model over batches in eval mode, checking and picking images, and
drawing a labelled grid of images into a PNG (matplotlib's Agg canvas, written through the atomic write)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simsearch.autoencoders import AutoEncoder
from simsearch.errors import PictureError
from simsearch.fsio import atomic_path
from simsearch.plots import require_matplotlib

logger = logging.getLogger(__name__)

_CELL_INCHES = 0.85  # side of one image in a grid
_LABEL_INCHES = 1.25  # room for the row labels left of a grid
_TITLE_INCHES = 0.55
_DPI = 100


# --------------------------------------------------------------------------------------------------------------------
# Model helpers
# --------------------------------------------------------------------------------------------------------------------


def _device(ae: AutoEncoder) -> torch.device:
    return next(ae.parameters()).device


@torch.no_grad()
def _run(ae: AutoEncoder, fn: Any, *tensors: torch.Tensor | None, batch_size: int = 256) -> torch.Tensor:
    """`fn(*batch)` in eval mode over batches of `tensors` (moved to the model's device); the model's mode is
    restored after. Returns the concatenated result on the CPU."""
    was_training = ae.training
    ae.eval()
    device = _device(ae)
    try:
        n = len(next(t for t in tensors if t is not None))
        parts = []
        for start in range(0, n, batch_size):
            batch = [None if t is None else t[start : start + batch_size].to(device) for t in tensors]
            parts.append(fn(*batch).float().cpu())
        return torch.cat(parts)
    finally:
        ae.train(was_training)


def _codes(ae: AutoEncoder, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """`(N, code_dim)` codes (a VAE's posterior mean); a CVAE gets the labels when given."""
    y = labels if ae.conditional else None
    return _run(ae, lambda x, y=None: ae.encode(x, y), images, y)


def _reconstruct(ae: AutoEncoder, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    y = labels if ae.conditional else None
    return _run(ae, lambda x, y=None: ae(x, y)["recon"], images, y)


def _check_images(images: torch.Tensor, ae: AutoEncoder | None = None) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or len(images) == 0:
        raise PictureError(f"pictures need a non-empty (N, C, H, W) image tensor, got {getattr(images, 'shape', None)}")
    if ae is not None and tuple(images.shape[1:]) != tuple(ae.input_shape):
        raise PictureError(f"images of shape {tuple(images.shape[1:])} do not fit a model of {tuple(ae.input_shape)}")
    return images.float()


def _label_tensor(labels: Any, n: int) -> torch.Tensor | None:
    if labels is None:
        return None
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if y.shape != (n,):
        raise PictureError(f"labels must be ({n},), got {tuple(y.shape)}")
    return y


def pick_per_class(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """`n` indices, one per class in label order while classes last (then another round), so a grid shows variety.
    Returns fewer when there are fewer images."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    pools = [rng.permutation(np.flatnonzero(labels == c)).tolist() for c in np.unique(labels)]
    picked: list[int] = []
    while len(picked) < min(n, len(labels)):
        for pool in pools:
            if pool and len(picked) < n:
                picked.append(pool.pop())
    return np.asarray(picked, dtype=np.int64)


def _pick(labels: np.ndarray | None, total: int, n: int, seed: int) -> np.ndarray:
    if labels is None:
        return np.sort(np.random.default_rng(seed).permutation(total)[: min(n, total)])
    return pick_per_class(labels, n, seed)


# --------------------------------------------------------------------------------------------------------------------
# Drawing helpers
# --------------------------------------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Any:
    require_matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=_DPI)


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    out = Path(path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI, facecolor="white")
    logger.info("wrote %s", out)
    return out


def _display(images: torch.Tensor) -> np.ndarray:
    """`(N, C, H, W)` -> `(N, H, W)` grey or `(N, H, W, 3)` colour in [0, 1] (a linear AE's output is clipped)."""
    x = images.detach().float().clamp(0.0, 1.0).cpu().numpy()
    return x[:, 0] if x.shape[1] == 1 else x.transpose(0, 2, 3, 1)


def _short(name: str, width: int = 16) -> str:
    name = str(name)
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def _mosaic(rows: Sequence[np.ndarray], n_cols: int, gap: int) -> np.ndarray:
    """Rows of `(n, H, W, 3)` images tiled on white with `gap` pixels between cells: `(R*H + gaps, C*W + gaps, 3)`."""
    h, w = rows[0].shape[1:3]
    out = np.ones((len(rows) * (h + gap) - gap, n_cols * (w + gap) - gap, 3), dtype=np.float32)
    for r, images in enumerate(rows):
        for c, image in enumerate(images):
            out[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = image
    return out


def _image_grid(
    rows: Sequence[tuple[str, torch.Tensor]],
    title: str,
    path: str | os.PathLike[str],
    *,
    column_titles: Sequence[str] | None = None,
) -> Path:
    """One labelled row of images per entry: no ticks, thin white gaps, row labels on the left, a title on top.

    The cells are tiled into one image drawn once (one axes instead of one per cell: ten times faster to draw).
    """
    shown = [_display(images) for _, images in rows]
    shown = [np.repeat(x[..., None], 3, axis=-1) if x.ndim == 3 else x for x in shown]
    n_cols = max(len(x) for x in shown)
    h, w = shown[0].shape[1:3]
    gap = max(1, round(min(h, w) / 14))
    mosaic = _mosaic(shown, n_cols, gap)
    extra_top = 0.25 if column_titles else 0.0
    cell = _CELL_INCHES
    width = _LABEL_INCHES + n_cols * cell + 0.15
    height = _TITLE_INCHES + extra_top + len(rows) * cell * h / w + 0.1
    fig = _figure(width, height)
    ax = fig.add_axes((_LABEL_INCHES / width, 0.1 / height, n_cols * cell / width, len(rows) * cell * h / w / height))
    ax.imshow(mosaic, vmin=0.0, vmax=1.0, interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    for r, (label, _) in enumerate(rows):
        ax.text(-1.5 * gap, r * (h + gap) + h / 2, label, ha="right", va="center", fontsize=10)
    for c, name in enumerate(column_titles or ()):
        ax.text(c * (w + gap) + w / 2, -gap, name, ha="center", va="bottom", fontsize=8)
    fig.suptitle(title, fontsize=12, y=1 - 0.12 / height, va="top")
    return _save(fig, path)


def class_names(classes: Sequence[str] | None, num_classes: int) -> list[str]:
    """`classes`, or "0".."C-1" when absent or too short."""
    if classes is not None and len(classes) >= num_classes:
        return [str(c) for c in classes]
    return [str(i) for i in range(num_classes)]
