"""What the pretraining tests share: a real Fashion-MNIST subset, a tiny recipe, a finished conv run and PNG checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from simsearch.data import ArrayDataset, DataNotFoundError, load_fashion_mnist
from simsearch.pretraining import PretrainConfig, pretrain

SMALL = {"channels": [8, 16]}  # conv widths that keep a 28x28 model tiny
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def fashion() -> ArrayDataset:
    """The first 240 Fashion-MNIST training images (all ten classes)."""
    try:
        full = load_fashion_mnist("train")
    except DataNotFoundError as exc:
        pytest.skip(f"Fashion-MNIST not found ({exc}); set SIMSEARCH_DATA to the shared data folder")
    return ArrayDataset(full.images[:240].copy(), full.labels[:240].copy(), classes=full.classes)


def _config(**changes: Any) -> PretrainConfig:
    base: dict[str, Any] = {
        "kind": "conv",
        "code_dim": 8,
        "epochs": 2,
        "batch_size": 64,
        "device": "cpu",
        "val_fraction": 0.25,
        "options": dict(SMALL),
    }
    return PretrainConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def conv_run(fashion: ArrayDataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("pretrain") / "conv"
    return out, pretrain(_config(batch_size=16, lr=3e-3), fashion, out)


@pytest.fixture(scope="module")
def unpool_run(fashion: ArrayDataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """`simsearch pretrain fashion-mnist --kind conv --decoder unpool` on 400 training images, 3 epochs."""
    out = tmp_path_factory.mktemp("pretrain") / "unpool"
    result = _invoke(
        ["fashion-mnist", "--kind", "conv", "--decoder", "unpool", "--code-dim", "8", "--epochs", "3"]
        + ["--batch-size", "32", "--lr", "3e-3", "--max-images", "400", "--val-fraction", "0.25"]
        + ["--option", "channels=[8,16]", "--out", out, "--device", "cpu", "--json", "-q"]
    )
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def _raw(dataset: ArrayDataset, n: int) -> torch.Tensor:
    return torch.from_numpy(dataset.images[:n].copy()).float()[:, None] / 255.0


def _png_folder(dataset: ArrayDataset, root: Path, per_class: int, classes: int = 4) -> Path:
    for c in range(classes):
        folder = root / dataset.classes[c].replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(dataset.labels == c)[:per_class]:
            Image.fromarray(dataset.images[i]).save(folder / f"{i}.png")
    return root


def _invoke(args: list[Any], env: dict[str, str] | None = None) -> Any:
    from cli.pretrain import pretrain as command

    group = click.Group(commands={"pretrain": command})
    return CliRunner().invoke(group, ["pretrain", *[str(a) for a in args]], env=env)
