"""Pictures of autoencoders: reconstruction, denoising, decoder-comparison and interpolation grids, latent scatters
(one model, or several side by side), prior samples and per-class CVAE samples; `write_pictures` draws a kind's set.
The grids are `grids`, the scatters `latent`, what they share (batched model runs, image picking, the grid drawing)
`canvas`. matplotlib (the `plots` extra) is imported inside the drawing functions only (Agg canvas, no pyplot);
without it they raise the `PlotError` of `simsearch.plots.require_matplotlib`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from simsearch.ae_pictures.canvas import _check_images, class_names, pick_per_class
from simsearch.ae_pictures.grids import (
    save_class_samples,
    save_decoder_comparison,
    save_denoising,
    save_interpolation,
    save_prior_samples,
    save_reconstructions,
)
from simsearch.ae_pictures.latent import latent_2d, save_latent_comparison, save_latent_scatter
from simsearch.autoencoders import AutoEncoder
from simsearch.errors import PictureError
from simsearch.plots import require_matplotlib

__all__ = [
    "PictureError",
    "class_names",
    "latent_2d",
    "pick_per_class",
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

# Every file `write_pictures` may draw, whatever the kind.
_SET_FILES = ("reconstructions.png", "denoising.png", "latent.png", "interpolation.png", "samples.png")


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
