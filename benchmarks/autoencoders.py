"""Autoencoders on Fashion-MNIST: reconstruction error by model and code size, retrieval with the codes, whether
autoencoder pretraining helps triplet training when labels are scarce, and denoising PSNR.

Run from the repo root:  python -m benchmarks.autoencoders            (about 20 minutes on one CPU thread)
                         python -m benchmarks.autoencoders --quick    (a smoke run of about a minute)
Writes benchmarks/results/autoencoders.json, autoencoders.md (generated from the JSON) and its pictures in
autoencoders/, replacing only those it draws (`benchmarks.autoencoders_output`); a --quick run writes to
.cache/bench/autoencoders_quick/ unless --out is given. Real data only, from $SIMSEARCH_DATA.

Protocol. Every autoencoder trains with `simsearch.pretraining.pretrain` on the same seeded subset of the training
set (`--images`, of which pretrain holds 10% out for its validation loss, which picks the best epoch); PCA is fitted
on the full 60k training set. Everything is scored on the full 10k test set, as float images in [0, 1]:
  1. reconstruction: mean squared error per pixel (a VAE decodes its posterior mean). conv_unpool's encoder
     max-pools instead of striding, and its decoder also gets the positions of the maxima, which pass around the
     code: its error is not that of the code alone (its retrieval uses the code alone);
  2. retrieval (cosine, exact k-NN): P@1 = the nearest of the 60k training images has the query's class; MAP@R over
     the 10k test images leave-one-out (R = 999), the train gallery's R = 6,000 would cost minutes per model;
  3. transfer: triplet training (batch-hard, P x K batches, no head: the code itself is the embedding) on 1% and 10%
     of the training labels (stratified, seeded), from the conv autoencoder's trained encoder and from the same
     architecture randomly initialised (`random:simsearch-ae:conv` with the checkpoint's own backbone options),
     same steps, same seed; scored as in 2;
  4. denoising: mean per-image PSNR (peak 1) of noisy and restored test images, one denoising AE per noise level,
     the same seeded noise for every model.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.autoencoder_scores import (
    as_tensor,
    encode,
    fit_pca,
    mean_psnr,
    pixel_mse,
    reconstruct,
    retrieval,
    stratified,
    subset,
)
from benchmarks.autoencoders_output import draw_pictures, markdown
from benchmarks.record import environment
from simsearch.autoencoders import AutoEncoder, gaussian_noise
from simsearch.data import ArrayDataset, load_fashion_mnist
from simsearch.evaluation import embed_dataset
from simsearch.models import load_embedder
from simsearch.models.registry import AE_BACKBONE_PREFIX, CHECKPOINT_CONFIG
from simsearch.pretraining import PretrainConfig, load_autoencoder, pretrain
from simsearch.training import RANDOM_PREFIX, TrainConfig, train

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
QUICK_OUT = REPO / ".cache" / "bench" / "autoencoders_quick"
SHAPE = (1, 28, 28)

# name -> (autoencoder kind, options, which epochs option applies). Linear and MLP models cost 1-10% of a conv
# model per image, so they get more epochs for the same wall time.
MODELS: dict[str, tuple[str, dict[str, Any], str]] = {
    "linear": ("linear", {}, "linear_epochs"),
    "mlp": ("mlp", {}, "mlp_epochs"),
    "conv_transposed": ("conv", {"decoder": "transposed"}, "epochs"),
    "conv_upsample": ("conv", {"decoder": "upsample"}, "epochs"),
    "conv_unpool": ("conv", {"decoder": "unpool"}, "epochs"),
    "vae": ("vae", {"decoder": "upsample"}, "epochs"),
}
# The rows of the decoders picture.
CONV_DECODERS = ("conv_transposed", "conv_upsample", "conv_unpool")
# The conv autoencoder whose encoder the transfer experiment starts from.
TRANSFER_MODEL = "conv_upsample"

logger = logging.getLogger("benchmarks.autoencoders")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10000, help="seeded training subset for every autoencoder")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the conv autoencoders and the VAE")
    parser.add_argument("--mlp-epochs", type=int, default=6)
    parser.add_argument("--linear-epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--codes", type=int, nargs="+", default=[2, 16, 64], help="code sizes of the MSE table")
    parser.add_argument("--retrieval-codes", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--label-fractions", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument("--transfer-code", type=int, default=64, help="code size of the pretrained conv encoder")
    parser.add_argument("--triplet-epochs", type=int, default=5)
    parser.add_argument("--triplet-batches", type=int, default=60, help="P x K batches per epoch")
    parser.add_argument("--p", type=int, default=10)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.1, 0.3], help="Gaussian sigmas, one DAE each")
    parser.add_argument("--denoise-code", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch and faiss threads (1: see the module notes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-images", type=int, default=None, help="score on the first N test images only")
    parser.add_argument("--quick", action="store_true", help="a smoke run of about a minute (tiny settings)")
    parser.add_argument("--work-dir", default=None, help="keep the checkpoints here [default: a temporary folder]")
    parser.add_argument("--out", default=None, help="folder for the JSON, Markdown and PNGs")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.epochs, args.mlp_epochs, args.linear_epochs = 600, 1, 1, 2
        args.codes, args.retrieval_codes, args.transfer_code, args.denoise_code = [2, 16], [16], 16, 16
        args.triplet_epochs, args.triplet_batches, args.noise = 1, 5, [0.3]
        args.test_images = args.test_images or 1000
    return args


# --------------------------------------------------------------------------------------------------------------------
# Training runs
# --------------------------------------------------------------------------------------------------------------------


def run_pretrain(
    name: str, code: int, args: argparse.Namespace, train_set: ArrayDataset, work: Path, **options: Any
) -> tuple[AutoEncoder, dict[str, Any], Path]:
    kind, model_options, epochs_key = MODELS[name] if name in MODELS else (name, {}, "epochs")
    config = PretrainConfig(
        kind=kind,
        code_dim=code,
        image_size=28,
        channels=1,
        epochs=getattr(args, epochs_key),
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        max_images=args.images,
        device="cpu",
        options={**model_options, **options},
    )
    folder = work / f"{name}_{code}"
    result = pretrain(config, train_set, folder, resume=False, pictures=False)
    val = result.history[result.best_epoch - 1].get("val", {})
    info = {
        "kind": kind,
        "options": config.options,
        "code": code,
        "epochs": config.epochs,
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_value,
        "val": val,
        "train_seconds": round(result.seconds, 1),
        "train_samples_per_second": round(result.samples_per_second, 1),
    }
    logger.info("%s code %d: %.0f s, %.0f img/s", name, code, result.seconds, result.samples_per_second)
    return load_autoencoder(folder), info, folder


def transfer_run(
    backbone: str, backbone_kwargs: dict[str, Any], labelled: ArrayDataset, args: argparse.Namespace, out: Path
) -> dict[str, Any]:
    config = TrainConfig(
        backbone=backbone,
        backbone_kwargs=backbone_kwargs,
        embed_dim=None,
        loss="triplet",
        epochs=args.triplet_epochs,
        p=args.p,
        k=args.k,
        batches_per_epoch=args.triplet_batches,
        lr=args.lr,
        backbone_lr_mult=1.0,
        warmup_epochs=0.5,
        augment=False,
        seed=args.seed,
        device="cpu",
        patience=None,
    )
    result = train(config, labelled, None, out, resume=False)
    return {
        "embedder": load_embedder(out),
        "train_seconds": round(result.seconds, 1),
        "train_samples_per_second": round(result.samples_per_second, 1),
        "epochs": result.epochs_run,
    }


# --------------------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    import faiss

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out) if args.out else (QUICK_OUT if args.quick else RESULTS)
    pictures = out / "autoencoders"
    pictures.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    stages: dict[str, float] = {}

    train_set = load_fashion_mnist("train")
    test_set = load_fashion_mnist("test")
    if args.test_images:
        test_set = subset(test_set, np.arange(args.test_images))
    x_train, y_train = as_tensor(train_set.images), train_set.labels
    x_test, y_test = as_tensor(test_set.images), test_set.labels
    flat_test = x_test.flatten(1).numpy()
    all_codes = sorted(set(args.codes) | set(args.retrieval_codes) | {args.transfer_code})

    record: dict[str, Any] = {
        "benchmark": "autoencoders-fashion-mnist",
        "quick": args.quick,
        "protocol": __doc__.split("Protocol. ", 1)[1].strip(),
        "data": {
            "train_images_for_autoencoders": args.images,
            "autoencoder_split": "pretrain holds out 10% of them for the validation loss (best epoch)",
            "pca_train_images": len(x_train),
            "gallery_images": len(x_train),
            "test_images": len(x_test),
        },
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "work_dir")},
    }

    # 1 + 2: reconstruction and retrieval ----------------------------------------------------------------------------
    t0 = time.perf_counter()
    mean, axes = fit_pca(train_set.images, max(all_codes))
    pca_seconds = time.perf_counter() - t0
    recon_table: dict[str, dict[str, Any]] = {"pca": {"fit_seconds": round(pca_seconds, 1), "mse": {}}}
    retrieval_table: dict[str, Any] = {"raw_pixels": retrieval(x_train.flatten(1).numpy(), y_train, flat_test, y_test)}
    train_flat = x_train.flatten(1).numpy().astype(np.float64)
    for code in all_codes:
        w = axes[:, :code]
        test_codes = (flat_test - mean) @ w
        recon = test_codes @ w.T + mean
        if code in args.codes:
            recon_table["pca"]["mse"][str(code)] = float(np.mean((recon - flat_test) ** 2))
        if code in args.retrieval_codes:
            retrieval_table[f"pca_{code}"] = retrieval(
                ((train_flat - mean) @ w).astype(np.float32), y_train, test_codes.astype(np.float32), y_test
            )
    stages["pca_and_raw"] = time.perf_counter() - t0

    work_ctx = tempfile.TemporaryDirectory() if args.work_dir is None else None
    work = Path(args.work_dir or work_ctx.name)  # type: ignore[union-attr]
    models: dict[tuple[str, int], AutoEncoder] = {}
    folders: dict[tuple[str, int], Path] = {}
    t0 = time.perf_counter()
    for name in MODELS:
        recon_table[name] = {"mse": {}, "runs": {}}
        for code in all_codes:
            needed = code in args.codes or code in args.retrieval_codes
            needed |= name == TRANSFER_MODEL and code == args.transfer_code
            needed |= name in ("conv_upsample", "vae") and code == 2  # the latent pictures
            needed |= name == "conv_upsample" and code == args.denoise_code  # the clean-trained reference
            if not needed:
                continue
            ae, info, folder = run_pretrain(name, code, args, train_set, work)
            models[(name, code)], folders[(name, code)] = ae, folder
            info["test_mse"] = pixel_mse(reconstruct(ae, x_test), x_test)
            recon_table[name]["runs"][str(code)] = info
            if code in args.codes:
                recon_table[name]["mse"][str(code)] = info["test_mse"]
            if code in args.retrieval_codes:
                retrieval_table[f"{name}_{code}"] = retrieval(encode(ae, x_train), y_train, encode(ae, x_test), y_test)
    stages["autoencoders"] = time.perf_counter() - t0
    record["reconstruction_mse"] = recon_table
    record["retrieval"] = retrieval_table

    # 3: does pretraining help triplet training with few labels ------------------------------------------------------
    t0 = time.perf_counter()
    ckpt = folders[(TRANSFER_MODEL, args.transfer_code)]
    ckpt_config = json.loads((ckpt / CHECKPOINT_CONFIG).read_text())
    random_backbone = f"{RANDOM_PREFIX}{AE_BACKBONE_PREFIX}{ckpt_config['autoencoder']['kind']}"
    transfer: dict[str, Any] = {
        "encoder": f"{TRANSFER_MODEL}, code {args.transfer_code}",
        "pretrained_without_labels": retrieval_table.get(f"{TRANSFER_MODEL}_{args.transfer_code}"),
        "runs": {},
    }
    for fraction in args.label_fractions:
        rows = stratified(y_train, fraction, args.seed)
        labelled = subset(train_set, rows)
        entry: dict[str, Any] = {"labelled_images": len(rows)}
        for arm, backbone, kwargs in (
            ("random_init", random_backbone, ckpt_config["backbone_kwargs"]),
            ("pretrained", str(ckpt), {}),  # the checkpoint folder: its own backbone options
        ):
            run = transfer_run(backbone, kwargs, labelled, args, work / f"triplet_{fraction:g}_{arm}")
            embedder = run.pop("embedder")
            gallery, gallery_labels = embed_dataset(embedder, train_set, batch_size=1000)
            queries, query_labels = embed_dataset(embedder, test_set, batch_size=1000)
            entry[arm] = {
                **run,
                "backbone": backbone.replace(str(work), "WORK"),
                **retrieval(gallery, gallery_labels, queries, query_labels),
            }
            logger.info("triplet %g%% %s: P@1 %.4f", 100 * fraction, arm, entry[arm]["p@1"])
        transfer["runs"][f"{fraction:g}"] = entry
    transfer["recipe"] = {
        "loss": "triplet (margin 0.2, batch-hard, euclidean on unit vectors)",
        "p": args.p,
        "k": args.k,
        "epochs": args.triplet_epochs,
        "batches_per_epoch": args.triplet_batches,
        "lr": args.lr,
        "augment": False,
        "head": "none (embedding = the encoder's code, L2-normalised)",
        "validation": "none: the last epoch is scored",
    }
    stages["transfer"] = time.perf_counter() - t0
    record["transfer"] = transfer

    # 4: denoising ---------------------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    denoising: dict[str, Any] = {}
    daes: dict[float, AutoEncoder] = {}
    clean_ae = models.get(("conv_upsample", args.denoise_code))
    for sigma in args.noise:
        dae, info, _ = run_pretrain(
            "denoising",
            args.denoise_code,
            args,
            train_set,
            work / f"sigma{sigma:g}",
            noise="gaussian",
            noise_level=sigma,
        )
        daes[sigma] = dae
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed + 1)
            noisy = gaussian_noise(x_test.clone(), sigma)
        denoising[f"{sigma:g}"] = {
            "noise": f"gaussian sigma {sigma:g}, clipped to [0, 1]",
            "psnr_noisy": mean_psnr(noisy, x_test),
            "psnr_restored": mean_psnr(reconstruct(dae, noisy), x_test),
            "psnr_restored_by_clean_trained_ae": None
            if clean_ae is None
            else mean_psnr(reconstruct(clean_ae, noisy), x_test),
            "psnr_clean_input": mean_psnr(reconstruct(dae, x_test), x_test),
            "model": info,
        }
    stages["denoising"] = time.perf_counter() - t0
    record["denoising"] = denoising

    # Pictures (on test images) --------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    record["pictures"] = draw_pictures(
        models,
        daes,
        x_test,
        y_test,
        test_set.classes,
        pictures,
        args,
        model_names=tuple(MODELS),
        conv_decoders=CONV_DECODERS,
    )
    stages["pictures"] = time.perf_counter() - t0

    stages["total"] = time.perf_counter() - started
    record["seconds"] = {k: round(v, 1) for k, v in stages.items()}
    record["environment"] = environment("cpu")
    (out / "autoencoders.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "autoencoders.md").write_text(markdown(record))
    if work_ctx is not None:
        work_ctx.cleanup()
    print(markdown(record))


if __name__ == "__main__":
    main()
