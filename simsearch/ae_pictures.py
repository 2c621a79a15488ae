"""Pictures of autoencoders: reconstruction, denoising, decoder-comparison and interpolation grids, latent scatters
(one model, or several side by side), prior samples and per-class CVAE samples; `write_pictures` draws a kind's set.
matplotlib (the `plots` extra) is imported inside the drawing functions only (Agg canvas, no pyplot); without it they
raise the `PlotError` of `simsearch.plots.require_matplotlib`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simsearch.autoencoders import AutoEncoder, gaussian_noise
from simsearch.errors import PictureError
from simsearch.fsio import atomic_path
from simsearch.plots import require_matplotlib

__all__ = [
    "latent_2d",
    "save_class_samples",
    "save_decoder_comparison",
    "save_denoising",
    "save_interpolation",
    "save_latent_comparison",
    "save_latent_scatter",
    "save_prior_samples",
    "save_reconstructions",
    "write_pictures",
]

logger = logging.getLogger(__name__)

_CELL_INCHES = 0.85  # side of one image in a grid
_LABEL_INCHES = 1.25  # room for the row labels left of a grid
_TITLE_INCHES = 0.55
_DPI = 100
# More classes than this in a scatter cannot be told apart by colour: the most frequent ones are drawn.
_SCATTER_CLASSES = 10
_SCATTER_SIZE = 5.5  # inches, one panel
# Every file `write_pictures` may draw, whatever the kind.
_SET_FILES = ("reconstructions.png", "denoising.png", "latent.png", "interpolation.png", "samples.png")


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


# --------------------------------------------------------------------------------------------------------------------
# Grids
# --------------------------------------------------------------------------------------------------------------------


def save_reconstructions(
    ae: AutoEncoder,
    images: torch.Tensor,
    path: str | os.PathLike[str],
    *,
    labels: np.ndarray | None = None,
    n: int = 10,
    seed: int = 0,
    title: str | None = None,
) -> Path:
    """Input row over output row for `n` images (one per class when `labels` are given).

    Args:
        images: `(N, C, H, W)` float in [0, 1].
    """
    images = _check_images(images, ae)
    idx = _pick(labels, len(images), n, seed)
    x = images[idx]
    y = _label_tensor(None if labels is None else np.asarray(labels)[idx], len(idx))
    recon = _reconstruct(ae, x, y)
    error = float(((recon - x) ** 2).mean())
    heading = title or f"{ae.kind} autoencoder (code {ae.code_dim}): reconstructions, pixel MSE {error:.4f}"
    return _image_grid([("input", x), ("output", recon)], heading, path)


def save_denoising(
    ae: AutoEncoder,
    images: torch.Tensor,
    path: str | os.PathLike[str],
    *,
    labels: np.ndarray | None = None,
    n: int = 10,
    noise_level: float | None = None,
    seed: int = 0,
) -> Path:
    """Clean / noisy / restored rows. A denoising model corrupts with its own noise; any other model (for a
    comparison) gets Gaussian noise of `noise_level` (default 0.3)."""
    images = _check_images(images, ae)
    idx = _pick(labels, len(images), n, seed)
    x = images[idx]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        corrupt = getattr(ae, "corrupt", None)
        if corrupt is not None and noise_level is None:
            noisy = corrupt(x.clone())
            what = f"{ae.options.get('noise', 'gaussian')} noise {ae.options.get('noise_level', 0):g}"
        else:
            level = 0.3 if noise_level is None else noise_level
            noisy = gaussian_noise(x.clone(), level)
            what = f"gaussian noise {level:g}"
    restored = _reconstruct(ae, noisy)
    error, noisy_error = float(((restored - x) ** 2).mean()), float(((noisy - x) ** 2).mean())
    title = f"{ae.kind} autoencoder, {what}: pixel MSE {noisy_error:.4f} noisy, {error:.4f} restored"
    return _image_grid([("clean", x), ("noisy", noisy), ("restored", restored)], title, path)


def save_decoder_comparison(
    models: Sequence[tuple[str, AutoEncoder]],
    images: torch.Tensor,
    path: str | os.PathLike[str],
    *,
    labels: np.ndarray | None = None,
    n: int = 10,
    seed: int = 0,
    title: str = "Decoders: transposed convolution vs upsample + convolution",
) -> Path:
    """The inputs, then one row per model's reconstructions, e.g. `[("transposed", ae1), ("upsample", ae2)]`:
    transposed convolutions tend to leave a checkerboard pattern that nearest upsampling + conv avoids."""
    if not models:
        raise PictureError("a decoder comparison needs at least one model")
    images = _check_images(images, models[0][1])
    idx = _pick(labels, len(images), n, seed)
    x = images[idx]
    rows: list[tuple[str, torch.Tensor]] = [("input", x)]
    for name, ae in models:
        recon = _reconstruct(ae, x)
        rows.append((f"{name}\nMSE {float(((recon - x) ** 2).mean()):.4f}", recon))
    return _image_grid(rows, title, path)


def save_interpolation(
    ae: AutoEncoder,
    images: torch.Tensor,
    path: str | os.PathLike[str],
    *,
    labels: np.ndarray | None = None,
    pairs: int = 4,
    steps: int = 8,
    seed: int = 0,
) -> Path:
    """Rows of `steps` decodings along the straight line between two images' codes, the two inputs at the ends.

    Pairs join images of different classes; for a CVAE, of the same class (decoded with that label), since its
    code holds the style and the label the class.
    """
    images = _check_images(images, ae)
    if not ae.decodes_codes:
        decoder = ae.options.get("decoder")
        raise PictureError(f"a {ae.kind} autoencoder with decoder {decoder!r} cannot decode a bare code to interpolate")
    if len(images) < 2:
        raise PictureError("an interpolation needs at least two images")
    rng = np.random.default_rng(seed)
    label_array = None if labels is None else np.asarray(labels)
    starts, ends = [], []
    for _ in range(pairs):
        a = int(rng.integers(len(images)))
        if label_array is None:
            choices = np.delete(np.arange(len(images)), a)
        else:
            same = label_array == label_array[a]
            choices = np.flatnonzero(same if ae.conditional else ~same)
            choices = choices[choices != a]
            if len(choices) == 0:
                choices = np.delete(np.arange(len(images)), a)
        starts.append(a)
        ends.append(int(rng.choice(choices)))
    a_idx, b_idx = np.asarray(starts), np.asarray(ends)
    y = y_b = None
    if label_array is not None:
        y = torch.as_tensor(label_array[a_idx], dtype=torch.long)
        y_b = torch.as_tensor(label_array[b_idx], dtype=torch.long)
    z_a = _codes(ae, images[a_idx], y)
    z_b = _codes(ae, images[b_idx], y_b)
    ts = torch.linspace(0.0, 1.0, steps)
    rows: list[tuple[str, torch.Tensor]] = []
    for i in range(pairs):
        z = torch.stack([(1 - t) * z_a[i] + t * z_b[i] for t in ts])
        yi = None if (y is None or not ae.conditional) else y[i].repeat(steps)
        decoded = _run(ae, lambda zb, yb=None: ae.decode(zb, yb), z, yi)
        rows.append(
            (f"pair {i + 1}", torch.cat([images[a_idx[i] : a_idx[i] + 1], decoded, images[b_idx[i] : b_idx[i] + 1]]))
        )
    column_titles = ["input A", *[f"t={t:.2f}" for t in ts.tolist()], "input B"]
    title = f"{ae.kind} autoencoder: interpolation between two images' codes"
    return _image_grid(rows, title, path, column_titles=column_titles)


def save_prior_samples(
    ae: AutoEncoder, path: str | os.PathLike[str], *, n: int = 32, per_row: int = 8, seed: int = 0
) -> Path:
    """Images decoded from prior draws z ~ N(0, I) of a VAE (or VAE-GAN)."""
    sample = getattr(ae, "sample", None)
    if sample is None:
        raise PictureError(f"a {ae.kind} autoencoder has no prior to sample from")
    was_training = ae.training
    ae.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            images = sample(n).float().cpu()
    finally:
        ae.train(was_training)
    rows = [("", images[start : start + per_row]) for start in range(0, n, per_row)]
    return _image_grid(rows, f"{ae.kind}: samples from the prior N(0, I), code {ae.code_dim}", path)


def save_class_samples(
    ae: AutoEncoder,
    path: str | os.PathLike[str],
    *,
    classes: Sequence[str] | None = None,
    per_class: int = 8,
    max_classes: int = 10,
    seed: int = 0,
) -> Path:
    """A CVAE's samples: one row per class (the first `max_classes`), each from fresh prior draws."""
    if not ae.conditional or not ae.num_classes:
        raise PictureError(f"a {ae.kind} autoencoder takes no class labels")
    names = class_names(classes, ae.num_classes)
    shown = min(ae.num_classes, max_classes)
    rows: list[tuple[str, torch.Tensor]] = []
    was_training = ae.training
    ae.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            for c in range(shown):
                y = torch.full((per_class,), c, dtype=torch.long, device=_device(ae))
                rows.append((_short(names[c]), ae.sample(per_class, y).float().cpu()))  # type: ignore[operator]
    finally:
        ae.train(was_training)
    more = f" (first {shown} of {ae.num_classes} classes)" if shown < ae.num_classes else ""
    return _image_grid(rows, f"{ae.kind}: samples per class{more}", path)


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


# --------------------------------------------------------------------------------------------------------------------
# A kind's set
# --------------------------------------------------------------------------------------------------------------------


def write_pictures(
    ae: AutoEncoder,
    images: torch.Tensor,
    labels: np.ndarray | None,
    out_dir: str | os.PathLike[str],
    *,
    classes: Sequence[str] | None = None,
    seed: int = 0,
) -> list[Path]:
    """The pictures that apply to `ae.kind` in `out_dir`: reconstructions, latent, interpolation for every kind
    (but an unpool decoder, which cannot decode a bare code);
    denoising for "denoising"; prior samples for "vae"/"vaegan"; per-class samples for "cvae". The set's files
    already in `out_dir` go first: another kind's denoising.png or samples.png would pass for this model's.

    Args:
        images: `(N, C, H, W)` float in [0, 1], e.g. validation images.
        labels: `(N,)` classes (the latent scatter's colours); None skips the scatter.
    """
    require_matplotlib()  # before the old pictures are removed
    out = Path(out_dir).expanduser()
    images = _check_images(images, ae)
    for name in _SET_FILES:
        (out / name).unlink(missing_ok=True)
    label_array = None if labels is None else np.asarray(labels)
    written = [save_reconstructions(ae, images, out / "reconstructions.png", labels=label_array, seed=seed)]
    if ae.kind == "denoising":
        written.append(save_denoising(ae, images, out / "denoising.png", labels=label_array, seed=seed))
    if label_array is not None and len(images) >= 2:
        written.append(save_latent_scatter(ae, images, label_array, out / "latent.png", classes=classes))
    if len(images) >= 2 and ae.decodes_codes:
        written.append(save_interpolation(ae, images, out / "interpolation.png", labels=label_array, seed=seed))
    if ae.kind in ("vae", "vaegan"):
        written.append(save_prior_samples(ae, out / "samples.png", seed=seed))
    if ae.kind == "cvae":
        written.append(save_class_samples(ae, out / "samples.png", classes=classes, seed=seed))
    return written
