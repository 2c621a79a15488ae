"""What the training tests share: a tiny random timm model, generated class folders, a small recipe, the saved state,
an interrupting progress callback and a real Fashion-MNIST subset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from simsearch.data import ArrayDataset, DataNotFoundError, ImageFolderDataset, load_fashion_mnist
from simsearch.training import LAST_DIR, STATE_FILE, TrainConfig

TINY = "random:test_efficientnet"


def make_classes(root: Path, n_classes: int, per_class: int, seed: int = 0) -> Path:
    """Class folders of noisy solid-colour 32x32 PNGs: each class has its own colour, so classes are learnable."""
    rng = np.random.default_rng(seed)
    for c in range(n_classes):
        colour = rng.integers(0, 256, 3)
        folder = root / f"class{c:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(colour + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def truncate_image(path: Path) -> Path:
    """Cut an image file to a third: its header still reads, its pixels do not decode."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    return path


def split_datasets(root: Path) -> tuple[ImageFolderDataset, ImageFolderDataset]:
    classes = sorted(p.name for p in root.iterdir())
    return ImageFolderDataset(root, classes=classes[:4]), ImageFolderDataset(root, classes=classes[4:])


def tiny_config(**overrides: object) -> TrainConfig:
    base: dict[str, object] = dict(
        backbone=TINY,
        embed_dim=16,
        epochs=2,
        p=4,
        k=3,
        image_size=32,
        augment=False,
        device="cpu",
        lr=1e-2,
        warmup_epochs=0,
        patience=None,
    )
    base.update(overrides)
    return TrainConfig(**base)  # type: ignore[arg-type]


def last_state(out: Path) -> dict:
    return torch.load(out / LAST_DIR / STATE_FILE, map_location="cpu", weights_only=True)


class InterruptAfter:
    """A progress callback that stops the run like Ctrl-C once `epoch` is finished."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        pass

    def step(self, loss: float, samples_per_second: float) -> None:
        pass

    def end_epoch(self, epoch: int, record: dict) -> None:
        if epoch == self.epoch:
            raise KeyboardInterrupt


def fashion_subset(per_class: int) -> ArrayDataset:
    """The first `per_class` Fashion-MNIST test images of each of the ten classes: real grey 28x28 images."""
    try:
        fm = load_fashion_mnist("test")
    except DataNotFoundError as exc:
        pytest.skip(f"Fashion-MNIST not found ({exc}); set SIMSEARCH_DATA to the shared data folder")
    idx = np.concatenate([np.flatnonzero(fm.labels == c)[:per_class] for c in range(10)])
    return ArrayDataset(fm.images[idx], fm.labels[idx], classes=fm.classes)
