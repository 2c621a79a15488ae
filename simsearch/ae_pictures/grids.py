"""Grids of images: reconstructions, denoising, decoder comparisons, interpolations, prior and per-class samples."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from simsearch.ae_pictures.canvas import (
    _check_images,
    _codes,
    _device,
    _image_grid,
    _label_tensor,
    _pick,
    _reconstruct,
    _run,
    _short,
    class_names,
)
from simsearch.autoencoders import AutoEncoder, gaussian_noise
from simsearch.errors import PictureError

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
