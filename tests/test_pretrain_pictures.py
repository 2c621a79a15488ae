"""The pictures of autoencoder pretraining: those drawn for each kind, every picture function, the 2-d latent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pretraining_helpers import PNG_MAGIC, SMALL, _raw

from simsearch.autoencoders import build_autoencoder
from simsearch.pretraining import PICTURES_DIR

pytest_plugins = ["pretraining_helpers"]  # the conv_run, fashion fixtures


# --------------------------------------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------------------------------------


def _assert_png(path: Path) -> None:
    assert path.is_file() and path.read_bytes()[:8] == PNG_MAGIC, path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert min(image.size) >= 150, image.size


def test_pretrain_draws_the_pictures_of_its_kind(conv_run) -> None:
    out, result = conv_run
    names = sorted(p.name for p in result.pictures)
    assert names == ["interpolation.png", "latent.png", "reconstructions.png"]
    for path in result.pictures:
        assert path.parent == out / PICTURES_DIR
        _assert_png(path)


def test_every_picture_function_writes_a_png(fashion, tmp_path: Path) -> None:
    from simsearch import ae_pictures as pics

    torch.manual_seed(0)
    images, labels = _raw(fashion, 120), fashion.labels[:120]
    conv = build_autoencoder("conv", (1, 28, 28), 2, **SMALL)
    transposed = build_autoencoder("conv", (1, 28, 28), 2, channels=[8, 16], decoder="transposed")
    vae = build_autoencoder("vae", (1, 28, 28), 6, **SMALL)
    cvae = build_autoencoder("cvae", (1, 28, 28), 4, num_classes=10, **SMALL)
    noisy = build_autoencoder("denoising", (1, 28, 28), 4, noise="mask", **SMALL)
    paths = [
        pics.save_reconstructions(conv, images, tmp_path / "recon.png", labels=labels),
        pics.save_denoising(noisy, images, tmp_path / "denoise.png", labels=labels),
        pics.save_latent_scatter(conv, images, labels, tmp_path / "latent.png", classes=fashion.classes),
        pics.save_latent_comparison([("AE", conv), ("VAE", vae)], images, labels, tmp_path / "ae_vs_vae.png"),
        pics.save_prior_samples(vae, tmp_path / "prior.png"),
        pics.save_class_samples(cvae, tmp_path / "classes.png", classes=fashion.classes),
        pics.save_interpolation(vae, images, tmp_path / "interp.png", labels=labels),
        pics.save_decoder_comparison([("transposed", transposed), ("upsample", conv)], images, tmp_path / "dec.png"),
    ]
    for path in paths:
        _assert_png(path)
    assert sorted(p.name for p in pics.write_pictures(cvae, images, labels, tmp_path / "set")) == [
        "interpolation.png",
        "latent.png",
        "reconstructions.png",
        "samples.png",
    ]
    # Drawing leaves each model in the mode it was in.
    assert conv.training and vae.training


def test_latent_2d_is_the_code_itself_for_two_dimensional_codes(fashion) -> None:
    from simsearch.ae_pictures import latent_2d

    ae = build_autoencoder("mlp", (1, 28, 28), 2, hidden=[16]).eval()
    points, axis = latent_2d(ae, _raw(fashion, 10))
    with torch.no_grad():
        codes = ae.encode(_raw(fashion, 10))
    assert np.allclose(points, codes.numpy(), atol=1e-6) and "2-d" in axis
