"""The metric-learning loop on a tiny random timm model and generated classes: it learns, keeps the best checkpoint,
stands in for or leaves out unreadable images, refuses bad data and settings up front, stops early."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from training_helpers import TINY, fashion_subset, make_classes, split_datasets, tiny_config, truncate_image

from simsearch.data import ArrayDataset, ImageFolderDataset
from simsearch.evaluation import evaluate_embeddings
from simsearch.models import create_transform, load_embedder
from simsearch.training import TrainingError, split_classes, train


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_classes(tmp_path_factory.mktemp("classes"), n_classes=6, per_class=6)


def test_a_few_epochs_lower_the_training_loss(data_root: Path, tmp_path: Path) -> None:
    train_set, val_set = split_datasets(data_root)
    result = train(tiny_config(epochs=4, batches_per_epoch=3), train_set, val_set, tmp_path / "run")
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 4
    assert losses[-1] < losses[0]
    assert all("map@r" in h["val"] and "recall@1" in h["val"] for h in result.history)


def test_the_best_checkpoint_loads_and_gives_unit_vectors_of_embed_dim(data_root: Path, tmp_path: Path) -> None:
    train_set, val_set = split_datasets(data_root)
    result = train(tiny_config(loss="center"), train_set, val_set, tmp_path / "run")
    config = json.loads((result.checkpoint / "config.json").read_text())
    assert config["loss"]["name"] == "center" and config["recipe"]["embed_dim"] == 16
    assert config["metrics"]["epoch"] == result.best_epoch and "map@r" in config["metrics"]

    model = load_embedder(result.checkpoint)
    x = torch.randn(5, *model.data_config["input_size"])
    with torch.no_grad():
        out = model(x)
    assert out.shape == (5, 16)
    assert torch.allclose(out.norm(dim=1), torch.ones(5), atol=1e-5)


def test_a_truncated_training_image_is_reported_and_stood_in_for_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A truncated file passes the header check made when the folder is scanned; training must not die on it."""
    from simsearch.errors import ImageError
    from simsearch.evaluation import TransformedDataset
    from simsearch.models import random_embedder

    root = make_classes(tmp_path / "data", n_classes=4, per_class=3)
    cut = truncate_image(root / "class01" / "1.png")
    dataset = ImageFolderDataset(root)
    bad = next(i for i, (path, _) in enumerate(dataset.samples) if path == str(cut))

    embedder = random_embedder(TINY.removeprefix("random:"))
    strict = TransformedDataset(dataset, create_transform(embedder), embedder)
    with pytest.raises(ImageError, match="1.png"):
        strict[bad]
    lenient = TransformedDataset(dataset, create_transform(embedder), embedder, replace_unreadable=True)
    with caplog.at_level(logging.WARNING, logger="simsearch.evaluation"):
        image, label = lenient[bad]
    assert label == 1 and torch.equal(image, strict[bad + 1][0])  # the next image of its class
    assert str(cut) in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="simsearch.evaluation"):
        result = train(tiny_config(epochs=1, batches_per_epoch=2, k=3), dataset, None, tmp_path / "run")
    assert result.epochs_run == 1 and str(cut) in caplog.text


def test_a_truncated_image_is_left_out_of_eval_and_validation_and_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from cli.main import main
    from simsearch.models import random_embedder, save_checkpoint

    root = make_classes(tmp_path / "data", n_classes=6, per_class=3)
    cut = truncate_image(root / "class05" / "2.png")
    checkpoint = save_checkpoint(random_embedder(TINY.removeprefix("random:")), tmp_path / "tiny")
    record_path = tmp_path / "e.json"
    args = ["eval", str(root), "--model", str(checkpoint), "--device", "cpu", "--out", str(record_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"skipped unreadable image {cut}" in result.stderr
    record = json.loads(record_path.read_text())
    assert record["images"] == 17 and len(record["skipped"]) == 1 and str(cut) in record["skipped"][0]

    train_set, val_set = split_datasets(root)
    with caplog.at_level(logging.WARNING, logger="simsearch.training"):
        train(tiny_config(epochs=2, batches_per_epoch=1, k=3), train_set, val_set, tmp_path / "run")
    assert caplog.text.count(str(cut)) == 1


def test_a_validation_set_without_a_class_of_two_images_is_refused_before_training(
    data_root: Path, tmp_path: Path
) -> None:
    train_set, _ = split_datasets(data_root)
    singles = ArrayDataset(np.zeros((2, 32, 32, 3), np.uint8), np.array([0, 1]), classes=["a", "b"])
    with pytest.raises(TrainingError, match="class with at least two images"):
        train(tiny_config(), train_set, singles, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_labels_with_gaps_train_a_loss_with_class_weights(tmp_path: Path) -> None:
    """A library caller's labels need not be 0..C-1: they index the loss's classes, and a gap leaves one unused."""
    data = fashion_subset(4)
    gapped = ArrayDataset(data.images, data.labels * 2 + 1, to_rgb=True)
    config = tiny_config(loss="softmax", image_size=28, p=4, k=2, epochs=1, batches_per_epoch=2)
    result = train(config, gapped, None, tmp_path / "run")
    assert result.epochs_run == 1 and math.isfinite(result.history[0]["loss"])

    class NegativeLabels:  # a caller's own dataset: ArrayDataset and the folder readers refuse these themselves
        labels = data.labels - 1

        def __len__(self) -> int:
            return len(self.labels)

    with pytest.raises(TrainingError, match="labels must be >= 0"):
        train(config, NegativeLabels(), None, tmp_path / "neg")  # type: ignore[arg-type]


def test_a_negative_seed_is_refused(data_root: Path, tmp_path: Path) -> None:
    from cli.main import main

    with pytest.raises(TrainingError, match="seed must be >= 0"):
        tiny_config(seed=-1).check()
    result = CliRunner().invoke(main, ["train", str(data_root), "--out", str(tmp_path / "run"), "--seed", "-1"])
    assert result.exit_code == 2 and "--seed" in result.output and "Traceback" not in result.output


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (mixed precision runs on CUDA only)")
def test_training_on_a_gpu_with_mixed_precision_still_learns(data_root: Path, tmp_path: Path) -> None:
    train_set, val_set = split_datasets(data_root)
    result = train(tiny_config(epochs=3, batches_per_epoch=3, device="cuda"), train_set, val_set, tmp_path / "run")
    losses = [h["loss"] for h in result.history]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert load_embedder(result.checkpoint, device="cuda").embed_dim == 16


def test_early_stopping_ends_the_run_after_patience_epochs_without_progress(data_root: Path, tmp_path: Path) -> None:
    train_set, val_set = split_datasets(data_root)
    result = train(
        tiny_config(epochs=6, batches_per_epoch=1, patience=1, lr=1e-9), train_set, val_set, tmp_path / "run"
    )
    assert result.stopped_early
    assert result.epochs_run < 6
    assert result.best_epoch == 1


def test_class_split_is_disjoint_and_seeded() -> None:
    classes = [f"c{i}" for i in range(10)]
    train_classes, val_classes = split_classes(classes, 0.2, seed=3)
    assert len(val_classes) == 2 and not set(train_classes) & set(val_classes)
    assert sorted(train_classes + val_classes) == classes
    assert split_classes(classes, 0.2, seed=3) == (train_classes, val_classes)
    with pytest.raises(TrainingError):
        split_classes(classes[:3], 0.5)


def test_too_few_classes_for_p_is_a_clear_error(data_root: Path, tmp_path: Path) -> None:
    train_set, val_set = split_datasets(data_root)
    with pytest.raises(TrainingError, match="at least p=8"):
        train(tiny_config(p=8), train_set, val_set, tmp_path / "run")


def test_nan_embeddings_are_an_error_in_evaluation_and_in_validation(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A diverged model's NaN vectors must not be scored (faiss would answer them with index -1, read as a hit)."""
    import simsearch.training.validation as validation_module
    from simsearch.evaluation import EvaluationError, embed_dataset
    from simsearch.models import random_embedder

    embedder = random_embedder(TINY.removeprefix("random:"))
    vectors = np.full((6, 4), np.nan, dtype=np.float32)
    with pytest.raises(EvaluationError, match="6 of 6 vectors hold NaN"):
        evaluate_embeddings(embedder, vectors, np.array([0, 0, 1, 1, 2, 2]))

    def nan_vectors(model: object, dataset: object, **kwargs: object) -> tuple[np.ndarray, np.ndarray]:
        labels = np.asarray(dataset.labels)  # type: ignore[attr-defined]
        return np.full((len(labels), 16), np.nan, dtype=np.float32), labels

    monkeypatch.setattr(validation_module, "embed_dataset", nan_vectors)
    train_set, val_set = split_datasets(data_root)
    with pytest.raises(TrainingError, match="validation before training: .*NaN"):
        train(tiny_config(epochs=1, batches_per_epoch=1), train_set, val_set, tmp_path / "run")

    # A model that diverges in its first epoch: the scores before training are fine, those after it are NaN.
    calls: list[int] = []

    def nan_after_training(model: object, dataset: object, **kwargs: object) -> tuple[np.ndarray, np.ndarray]:
        calls.append(1)
        if len(calls) == 1:
            return embed_dataset(model, dataset, **kwargs)  # type: ignore[arg-type]
        return nan_vectors(model, dataset)

    monkeypatch.setattr(validation_module, "embed_dataset", nan_after_training)
    with pytest.raises(TrainingError, match="validation after epoch 1: .*NaN"):
        train(tiny_config(epochs=1, batches_per_epoch=1), train_set, val_set, tmp_path / "run2")


class _CountingReads:
    """A dataset that counts how often each of its images is read."""

    def __init__(self, dataset: ImageFolderDataset) -> None:
        self.dataset, self.labels, self.classes = dataset, dataset.labels, dataset.classes
        self.reads = np.zeros(len(dataset), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[object, int]:
        self.reads[index] += 1
        return self.dataset[index]  # type: ignore[no-any-return]


@pytest.mark.parametrize("augment", [False, True])
def test_without_augmentation_each_training_image_is_read_and_transformed_once(
    data_root: Path, tmp_path: Path, augment: bool
) -> None:
    train_set, _ = split_datasets(data_root)
    counting = _CountingReads(train_set)
    train(tiny_config(epochs=3, batches_per_epoch=4, augment=augment), counting, None, tmp_path / "run")
    assert counting.reads.max() >= 1
    if augment:
        assert counting.reads.max() > 1  # fresh crops every epoch: the images are read again
    else:
        assert counting.reads.max() == 1
