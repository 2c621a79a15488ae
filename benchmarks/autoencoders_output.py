"""What the autoencoder benchmark (`benchmarks.autoencoders`) writes beside its JSON record: the pictures, and the
Markdown page generated from the record alone."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simsearch.ae_pictures import (
    save_decoder_comparison,
    save_denoising,
    save_interpolation,
    save_latent_comparison,
    save_prior_samples,
)
from simsearch.autoencoders import AutoEncoder

#: Every picture `draw_pictures` may write, by name pattern: the only PNGs of the folder it removes before drawing.
DRAWN = (
    "latent_ae_vs_vae.png",
    "reconstructions_code*.png",
    "decoders_code*.png",
    "vae_samples_code*.png",
    "vae_interpolation_code*.png",
    "denoising_sigma*.png",
)


def draw_pictures(
    models: dict[tuple[str, int], AutoEncoder],
    daes: dict[float, AutoEncoder],
    x: torch.Tensor,
    y: np.ndarray,
    classes: list[str],
    folder: Path,
    args: argparse.Namespace,
    *,
    model_names: tuple[str, ...],
    conv_decoders: tuple[str, ...],
) -> list[str]:
    """The PNGs, named in the record relative to the results folder. `model_names` orders the reconstruction rows,
    `conv_decoders` are the rows of the decoders picture.

    The pictures an earlier run drew go first (with other code sizes or noise levels they would not be overwritten);
    other PNGs in the folder, such as one drawn by `simsearch pretrain`, stay."""
    for pattern in DRAWN:
        for old in folder.glob(pattern):
            old.unlink()
    rng = np.random.default_rng(args.seed)
    shown = np.sort(rng.choice(len(x), min(2000, len(x)), replace=False))
    written: list[Path] = []
    if ("conv_upsample", 2) in models and ("vae", 2) in models:
        written.append(
            save_latent_comparison(
                [("conv AE, code 2", models[("conv_upsample", 2)]), ("VAE, code 2 (mean)", models[("vae", 2)])],
                x[shown],
                y[shown],
                folder / "latent_ae_vs_vae.png",
                classes=classes,
                title=f"Latent codes of {len(shown)} test images",
            )
        )
    mid = sorted(args.codes)[len(args.codes) // 2]
    row_models = [(name.replace("_", " "), models[(name, mid)]) for name in model_names if (name, mid) in models]
    if row_models:
        written.append(
            save_decoder_comparison(
                row_models,
                x,
                folder / f"reconstructions_code{mid}.png",
                labels=y,
                seed=args.seed,
                title=f"Test reconstructions, code {mid} (VAE: posterior mean)",
            )
        )
    big = max(args.codes)
    decoders = [(name.removeprefix("conv_"), models[(name, big)]) for name in conv_decoders if (name, big) in models]
    if len(decoders) == len(conv_decoders):
        written.append(
            save_decoder_comparison(
                decoders,
                x,
                folder / f"decoders_code{big}.png",
                labels=y,
                seed=args.seed,
                title=f"Conv decoders, code {big}: transposed conv, nearest upsample + conv, max unpooling + conv",
            )
        )
    for code in sorted({2, mid}):
        if ("vae", code) in models:
            written.append(
                save_prior_samples(models[("vae", code)], folder / f"vae_samples_code{code}.png", seed=args.seed)
            )
    if ("vae", 2) in models:
        written.append(
            save_interpolation(models[("vae", 2)], x, folder / "vae_interpolation_code2.png", labels=y, seed=args.seed)
        )
    for sigma, dae in daes.items():
        written.append(save_denoising(dae, x, folder / f"denoising_sigma{sigma:g}.png", labels=y, seed=args.seed))
    return [str(p.relative_to(folder.parent)) for p in written]


# --------------------------------------------------------------------------------------------------------------------
# Markdown, generated from the record only
# --------------------------------------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else str(value)
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines + [""]


def markdown(record: dict[str, Any]) -> str:
    s, env, data = record["settings"], record["environment"], record["data"]
    recon = record["reconstruction_mse"]
    codes = [str(c) for c in s["codes"]]
    lines = [
        "# Autoencoders on Fashion-MNIST" + (" (QUICK smoke run: not a result)" if record["quick"] else ""),
        "",
        "Generated from `autoencoders.json` by `python -m benchmarks.autoencoders`; do not edit by hand.",
        "",
        f"Autoencoders trained on a seeded subset of {data['train_images_for_autoencoders']} training images "
        f"({data['autoencoder_split']}), batch {s['batch_size']}, Adam lr {s['lr']}; conv/VAE {s['epochs']} epochs, "
        f"MLP {s['mlp_epochs']}, linear {s['linear_epochs']}. PCA on {data['pca_train_images']} training images. "
        f"Scored on {data['test_images']} test images. CPU, {env.get('torch_threads', env.get('threads'))} thread(s), "
        f"torch {env['torch']}; whole run {record['seconds']['total'] / 60:.1f} min.",
        "",
        "## 1. Test reconstruction MSE per pixel (images in [0, 1])",
        "",
    ]
    rows = []
    for name, entry in recon.items():
        runs = entry.get("runs", {})
        seconds = [runs[c]["train_seconds"] for c in codes if c in runs]
        speed = [runs[c]["train_samples_per_second"] for c in codes if c in runs]
        rows.append(
            [
                name,
                *[entry["mse"].get(c) for c in codes],
                f"{sum(seconds):.0f}" if seconds else f"{entry.get('fit_seconds', 0):.0f} (fit)",
                f"{min(speed):.0f}–{max(speed):.0f}" if speed else "—",
            ]
        )
    lines += _table(["model", *[f"code {c}" for c in codes], "train s (all codes)", "train img/s"], rows)

    lines += [
        "## 2. Retrieval with the codes (cosine)",
        "",
        f"P@1: nearest of the {data['gallery_images']} training images has the query's class. MAP@R: over the "
        f"{data['test_images']} test images, leave-one-out.",
        "",
    ]
    rows = [[name, r["dim"], r["p@1"], r["map@r_test_loo"]] for name, r in record["retrieval"].items()]
    lines += _table(["representation", "dim", "P@1 (train gallery)", "MAP@R (test LOO)"], rows)

    t = record["transfer"]
    recipe = t["recipe"]
    lines += [
        "## 3. Triplet training with few labels: random init vs the conv AE's encoder",
        "",
        f"Encoder: {t['encoder']}; triplet, P={recipe['p']} K={recipe['k']}, {recipe['epochs']} epochs x "
        f"{recipe['batches_per_epoch']} batches, lr {recipe['lr']}, no head, no augmentation, last epoch scored.",
        "",
    ]
    rows = []
    base = t.get("pretrained_without_labels")
    if base:
        rows.append(["0 (AE codes, no triplet)", 0, "—", "—", base["p@1"], base["map@r_test_loo"], "—"])
    for fraction, e in t["runs"].items():
        r, p = e["random_init"], e["pretrained"]
        rows.append(
            [
                f"{float(fraction):.0%}",
                e["labelled_images"],
                r["p@1"],
                r["map@r_test_loo"],
                p["p@1"],
                p["map@r_test_loo"],
                f"{r['train_seconds']:.0f} / {p['train_seconds']:.0f}",
            ]
        )
    lines += _table(
        ["labels", "images", "random P@1", "random MAP@R", "pretrained P@1", "pretrained MAP@R", "train s (r / p)"],
        rows,
    )

    lines += ["## 4. Denoising (mean per-image PSNR, dB)", ""]
    rows = []
    for d in record["denoising"].values():
        rows.append(
            [
                d["noise"],
                d["psnr_noisy"],
                d["psnr_restored"],
                d["psnr_restored_by_clean_trained_ae"],
                d["psnr_clean_input"],
            ]
        )
    lines += _table(
        [
            "noise",
            "noisy",
            "restored by its DAE",
            f"restored by the clean conv AE (code {s['denoise_code']})",
            "DAE on clean input",
        ],
        [[*row[:1], *[_fmt(v, 2) for v in row[1:]]] for row in rows],
    )
    lines += ["## Pictures", ""] + [f"- [{p}]({p})" for p in record["pictures"]] + [""]
    return "\n".join(lines)
