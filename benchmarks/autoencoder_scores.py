"""The measurements of the autoencoder benchmark (`benchmarks.autoencoders`): reconstruction error, PSNR,
cosine retrieval of codes, the PCA baseline, and the stratified label subsets of the transfer experiment."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from simsearch.autoencoders import AutoEncoder
from simsearch.data import ArrayDataset
from simsearch.metrics import retrieval_metrics


def as_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 `(N, 28, 28)` -> float `(N, 1, 28, 28)` in [0, 1]: what the checkpoint's own eval transform gives for
    28x28 images (resize to the same size, crop all, ToTensor, mean 0, std 1)."""
    return torch.from_numpy(np.array(images)).unsqueeze(1).float().div_(255.0)  # a writable copy


@torch.no_grad()
def batched(fn: Any, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    return torch.cat([fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def reconstruct(ae: AutoEncoder, x: torch.Tensor) -> torch.Tensor:
    """Eval-mode reconstructions; a VAE decodes its posterior mean in eval mode."""
    ae.eval()
    return batched(lambda b: ae(b)["recon"], x, 500)


def encode(ae: AutoEncoder, x: torch.Tensor) -> np.ndarray:
    ae.eval()
    return batched(ae.encode, x).numpy()


def pixel_mse(recon: torch.Tensor, x: torch.Tensor) -> float:
    return float(((recon - x) ** 2).mean())


def mean_psnr(images: torch.Tensor, x: torch.Tensor) -> float:
    """Mean over images of 10 log10(1 / MSE) in dB, images in [0, 1]."""
    mse = ((images - x) ** 2).flatten(1).mean(dim=1).clamp_min(1e-10)
    return float((10.0 * torch.log10(1.0 / mse)).mean())


def retrieval(train_vecs: np.ndarray, train_labels: np.ndarray, test_vecs: np.ndarray, test_labels: np.ndarray) -> dict:
    """P@1 against the training gallery and MAP@R over the test set leave-one-out, both cosine."""
    gallery = retrieval_metrics(
        test_vecs, test_labels, ks=(1,), gallery=train_vecs, gallery_labels=train_labels, nmi=False, map_at_r=False
    )
    loo = retrieval_metrics(test_vecs, test_labels, ks=(1,), nmi=False)
    return {
        "dim": int(test_vecs.shape[1]),
        "p@1": float(gallery["precision@1"]),
        "map@r_test_loo": float(loo["map@r"]),
        "p@1_test_loo": float(loo["precision@1"]),
    }


def fit_pca(train_x: np.ndarray, max_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean `(784,)` and the top `max_dim` principal axes `(784, max_dim)` (eigenvectors of the covariance)."""
    x = train_x.reshape(len(train_x), -1).astype(np.float64) / 255.0
    mean = x.mean(axis=0)
    centred = x - mean
    values, vectors = np.linalg.eigh(centred.T @ centred / len(x))
    return mean, vectors[:, np.argsort(values)[::-1][:max_dim]]


def stratified(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of round(fraction * class size) images of every class."""
    rng = np.random.default_rng(seed)
    rows = [
        rng.choice(np.flatnonzero(labels == c), round(fraction * np.sum(labels == c)), replace=False)
        for c in np.unique(labels)
    ]
    return np.sort(np.concatenate(rows))


def subset(dataset: ArrayDataset, rows: np.ndarray) -> ArrayDataset:
    return ArrayDataset(dataset.images[rows], dataset.labels[rows], classes=dataset.classes)
