"""The metric-learning loop and the `train` / `eval` commands, on a tiny random timm model and generated classes."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from simsearch.data import (
    ArrayDataset,
    DataNotFoundError,
    ImageFolderDataset,
    SiamesePairs,
    load_fashion_mnist,
    write_lmdb_dataset,
)
from simsearch.evaluation import embed_dataset, evaluate_embeddings
from simsearch.losses import create_loss
from simsearch.models import Embedder, create_transform, load_embedder
from simsearch.training import (
    LAST_DIR,
    STATE_FILE,
    TrainConfig,
    TrainingError,
    build_embedder,
    split_classes,
    train,
)

TINY = "random:test_efficientnet"


def _make_classes(root: Path, n_classes: int, per_class: int, seed: int = 0) -> Path:
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


def _truncate(path: Path) -> Path:
    """Cut an image file to a third: its header still reads, its pixels do not decode."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    return path


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_classes(tmp_path_factory.mktemp("classes"), n_classes=6, per_class=6)


def _datasets(root: Path) -> tuple[ImageFolderDataset, ImageFolderDataset]:
    classes = sorted(p.name for p in root.iterdir())
    return ImageFolderDataset(root, classes=classes[:4]), ImageFolderDataset(root, classes=classes[4:])


def _config(**overrides: object) -> TrainConfig:
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


def _state(out: Path) -> dict:
    return torch.load(out / LAST_DIR / STATE_FILE, map_location="cpu", weights_only=True)


def test_a_few_epochs_lower_the_training_loss(data_root: Path, tmp_path: Path) -> None:
    train_set, val_set = _datasets(data_root)
    result = train(_config(epochs=4, batches_per_epoch=3), train_set, val_set, tmp_path / "run")
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 4
    assert losses[-1] < losses[0]
    assert all("map@r" in h["val"] and "recall@1" in h["val"] for h in result.history)


def test_the_best_checkpoint_loads_and_gives_unit_vectors_of_embed_dim(data_root: Path, tmp_path: Path) -> None:
    train_set, val_set = _datasets(data_root)
    result = train(_config(loss="center"), train_set, val_set, tmp_path / "run")
    config = json.loads((result.checkpoint / "config.json").read_text())
    assert config["loss"]["name"] == "center" and config["recipe"]["embed_dim"] == 16
    assert config["metrics"]["epoch"] == result.best_epoch and "map@r" in config["metrics"]

    model = load_embedder(result.checkpoint)
    x = torch.randn(5, *model.data_config["input_size"])
    with torch.no_grad():
        out = model(x)
    assert out.shape == (5, 16)
    assert torch.allclose(out.norm(dim=1), torch.ones(5), atol=1e-5)


class _InterruptAfter:
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


@pytest.mark.parametrize("augment", [False, True], ids=["plain", "augmented"])
def test_resume_continues_from_the_saved_epoch_with_the_same_optimizer_steps(
    data_root: Path, tmp_path: Path, augment: bool
) -> None:
    """With augmentation too: a resumed epoch must draw the crops the uninterrupted run drew, not epoch 1's again."""
    train_set, val_set = _datasets(data_root)
    config = _config(epochs=3, batches_per_epoch=2, augment=augment)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(config, train_set, val_set, out, _InterruptAfter(1))
    first = _state(out)
    assert first["epoch"] == 1 and first["scheduler"]["last_epoch"] == 2

    result = train(config, train_set, val_set, out)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    resumed = _state(out)
    assert resumed["epoch"] == 3 and resumed["scheduler"]["last_epoch"] == 6
    assert {int(s["step"]) for s in resumed["optimizer"]["state"].values()} == {6}

    # An uninterrupted run of the same recipe ends in the same place.
    straight = train(config, train_set, val_set, tmp_path / "straight")
    assert [h["loss"] for h in straight.history] == pytest.approx([h["loss"] for h in result.history], rel=1e-4)
    assert torch.allclose(_state(tmp_path / "straight")["model"]["head.weight"], resumed["model"]["head.weight"])


def test_resuming_with_more_epochs_follows_the_new_schedule_and_says_the_rate_jumps(
    data_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Extending a run is allowed; the cosine is recomputed for the new length, and the log names both rates."""
    train_set, val_set = _datasets(data_root)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(_config(epochs=2, batches_per_epoch=2), train_set, val_set, out, _InterruptAfter(1))
    with caplog.at_level(logging.WARNING, logger="simsearch.training"):
        result = train(_config(epochs=4, batches_per_epoch=2), train_set, val_set, out)
    # At step 2: half-way down a 4-step cosine (0.5 x 1e-2), a quarter of the way down an 8-step one.
    expected = f"from {0.005:.3g} to {1e-2 * 0.5 * (1 + math.cos(math.pi / 4)):.3g}"
    assert [r.getMessage() for r in caplog.records if expected in r.getMessage()], caplog.text
    # Epoch 2 now ends half-way down the 8-step cosine, where the 4-step one would have reached zero.
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert result.history[1]["lr"] == pytest.approx(0.005)

    caplog.clear()
    with pytest.raises(KeyboardInterrupt):
        train(_config(epochs=2, batches_per_epoch=2), train_set, val_set, tmp_path / "same", _InterruptAfter(1))
    with caplog.at_level(logging.WARNING, logger="simsearch.training"):
        train(_config(epochs=2, batches_per_epoch=2), train_set, val_set, tmp_path / "same")
    assert "schedule" not in caplog.text


def _ema_reference(snapshots: list[dict[str, torch.Tensor]], cap: float) -> dict[str, torch.Tensor]:
    """A plain exponential moving average of the weights after each step, with the warmed-up decay written out:
    step t (from 1) keeps d_t = min(cap, 1 - t' ** -2/3) of the average, t' = t (0 for the first step)."""
    average: dict[str, torch.Tensor] = {}
    for t, weights in enumerate(snapshots, start=1):
        decay = 0.0 if t == 1 else min(cap, 1.0 - t ** (-2.0 / 3.0))
        for name, value in weights.items():
            if not value.is_floating_point():
                average[name] = value.clone()
            else:
                average[name] = decay * average[name] + (1 - decay) * value if name in average else value.clone()
    return average


def test_the_kept_model_is_a_moving_average_of_the_weights_after_each_step(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from timm.utils import ModelEmaV3

    snapshots: list[dict[str, torch.Tensor]] = []
    update = ModelEmaV3.update

    def recording_update(self: ModelEmaV3, model: torch.nn.Module, step: int | None = None) -> None:
        snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        update(self, model, step=step)

    monkeypatch.setattr(ModelEmaV3, "update", recording_update)
    train_set, _ = _datasets(data_root)
    out = tmp_path / "run"
    train(_config(epochs=2, batches_per_epoch=2, ema_decay=0.9), train_set, None, out)

    assert len(snapshots) == 4  # one update per optimizer step
    expected = _ema_reference(snapshots, cap=0.9)
    kept = load_embedder(out).state_dict()
    assert set(kept) == set(expected)
    for name, value in expected.items():
        assert torch.allclose(kept[name].float(), value.float(), atol=1e-6), name
    # The average is not the last weights: the test would pass vacuously if it were.
    assert not torch.allclose(kept["head.weight"], snapshots[-1]["head.weight"])


def test_a_resumed_run_with_a_moving_average_ends_where_an_uninterrupted_one_does(
    data_root: Path, tmp_path: Path
) -> None:
    train_set, val_set = _datasets(data_root)
    config = _config(epochs=3, batches_per_epoch=2, ema_decay=0.9)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(config, train_set, val_set, out, _InterruptAfter(1))
    resumed = train(config, train_set, val_set, out)
    straight = train(config, train_set, val_set, tmp_path / "straight")

    resumed_map = [h["val"]["map@r"] for h in resumed.history]
    assert resumed_map == pytest.approx([h["val"]["map@r"] for h in straight.history], rel=1e-4)
    ema_resumed, ema_straight = _state(out)["ema"], _state(tmp_path / "straight")["ema"]
    assert ema_resumed.keys() == ema_straight.keys()
    assert all(torch.allclose(ema_resumed[k].float(), ema_straight[k].float(), atol=1e-5) for k in ema_resumed)
    with pytest.raises(TrainingError, match="ema_decay must be in"):
        _config(ema_decay=1.0).check()


def test_a_truncated_training_image_is_reported_and_stood_in_for_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A truncated file passes the header check made when the folder is scanned; training must not die on it."""
    from simsearch.errors import ImageError
    from simsearch.evaluation import TransformedDataset
    from simsearch.models import random_embedder

    root = _make_classes(tmp_path / "data", n_classes=4, per_class=3)
    cut = _truncate(root / "class01" / "1.png")
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
        result = train(_config(epochs=1, batches_per_epoch=2, k=3), dataset, None, tmp_path / "run")
    assert result.epochs_run == 1 and str(cut) in caplog.text


def test_a_truncated_image_is_left_out_of_eval_and_validation_and_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from cli.main import main
    from simsearch.models import random_embedder, save_checkpoint

    root = _make_classes(tmp_path / "data", n_classes=6, per_class=3)
    cut = _truncate(root / "class05" / "2.png")
    checkpoint = save_checkpoint(random_embedder(TINY.removeprefix("random:")), tmp_path / "tiny")
    record_path = tmp_path / "e.json"
    args = ["eval", str(root), "--model", str(checkpoint), "--device", "cpu", "--out", str(record_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"skipped unreadable image {cut}" in result.stderr
    record = json.loads(record_path.read_text())
    assert record["images"] == 17 and len(record["skipped"]) == 1 and str(cut) in record["skipped"][0]

    train_set, val_set = _datasets(root)
    with caplog.at_level(logging.WARNING, logger="simsearch.training"):
        train(_config(epochs=2, batches_per_epoch=1, k=3), train_set, val_set, tmp_path / "run")
    assert caplog.text.count(str(cut)) == 1


def test_a_crash_between_the_history_and_the_state_loses_no_epoch(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """history.json is written before last/state.pt: a crash between the two leaves a history one epoch ahead,
    which the resumed run cuts back and replays, so every epoch is in the history once."""
    import simsearch.runs.run as run_module

    train_set, val_set = _datasets(data_root)
    config = _config(epochs=3, batches_per_epoch=1)
    out = tmp_path / "run"
    real_save_state, calls = run_module.save_state, []

    def crash_on_the_second(path: Path, state: dict) -> None:
        calls.append(state["epoch"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_save_state(path, state)

    monkeypatch.setattr(run_module, "save_state", crash_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        train(config, train_set, val_set, out)
    assert _state(out)["epoch"] == 1
    # The file starts with epoch 0, the scores before training, written with the first epoch's record.
    assert [h["epoch"] for h in json.loads((out / "history.json").read_text())] == [0, 1, 2]

    monkeypatch.setattr(run_module, "save_state", real_save_state)
    result = train(config, train_set, val_set, out)
    assert [h["epoch"] for h in result.history] == [1, 2, 3] and result.epochs_run == 3
    assert [h["epoch"] for h in json.loads((out / "history.json").read_text())] == [0, 1, 2, 3]
    assert result.best_metrics == next(h["val"] for h in result.history if h["epoch"] == result.best_epoch)


def test_a_restart_forgets_the_old_run_before_its_first_epoch(data_root: Path, tmp_path: Path) -> None:
    """Interrupted during its first epoch, a restart leaves nothing that the next call would resume."""
    train_set, val_set = _datasets(data_root)
    config = _config(epochs=2, batches_per_epoch=1)
    out = tmp_path / "run"
    train(config, train_set, val_set, out)
    assert (out / LAST_DIR / STATE_FILE).is_file()

    class InterruptAtFirstStep(_InterruptAfter):
        def step(self, loss: float, samples_per_second: float) -> None:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, train_set, val_set, out, InterruptAtFirstStep(0), resume=False)
    assert not (out / LAST_DIR / STATE_FILE).exists() and not (out / "history.json").exists()
    assert [h["epoch"] for h in train(config, train_set, val_set, out).history] == [1, 2]


def test_a_validation_set_without_a_class_of_two_images_is_refused_before_training(
    data_root: Path, tmp_path: Path
) -> None:
    train_set, _ = _datasets(data_root)
    singles = ArrayDataset(np.zeros((2, 32, 32, 3), np.uint8), np.array([0, 1]), classes=["a", "b"])
    with pytest.raises(TrainingError, match="class with at least two images"):
        train(_config(), train_set, singles, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_labels_with_gaps_train_a_loss_with_class_weights(tmp_path: Path) -> None:
    """A library caller's labels need not be 0..C-1: they index the loss's classes, and a gap leaves one unused."""
    data = _fashion_subset(4)
    gapped = ArrayDataset(data.images, data.labels * 2 + 1, to_rgb=True)
    config = _config(loss="softmax", image_size=28, p=4, k=2, epochs=1, batches_per_epoch=2)
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
        _config(seed=-1).check()
    result = CliRunner().invoke(main, ["train", str(data_root), "--out", str(tmp_path / "run"), "--seed", "-1"])
    assert result.exit_code == 2 and "--seed" in result.output and "Traceback" not in result.output


def test_resuming_with_another_recipe_is_refused(data_root: Path, tmp_path: Path) -> None:
    train_set, val_set = _datasets(data_root)
    train(_config(epochs=1, batches_per_epoch=1), train_set, val_set, tmp_path / "run")
    with pytest.raises(TrainingError, match="another recipe"):
        train(_config(epochs=2, batches_per_epoch=1, lr=0.5), train_set, val_set, tmp_path / "run")


def test_resuming_on_other_classes_is_refused_and_the_checkpoint_names_its_split(
    data_root: Path, tmp_path: Path
) -> None:
    train_set, val_set = _datasets(data_root)
    config = _config(epochs=2, batches_per_epoch=1)
    with pytest.raises(KeyboardInterrupt):
        train(config, train_set, val_set, tmp_path / "run", _InterruptAfter(1))
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["data"]
    assert saved["val"] == {"classes": val_set.classes, "images": len(val_set)}
    assert saved["train"]["classes"] == train_set.classes
    # Another validation split (e.g. another --val-fraction) under the same recipe: not the same run.
    classes = sorted(p.name for p in data_root.iterdir())
    other_train, other_val = (
        ImageFolderDataset(data_root, classes=classes[:5]),
        ImageFolderDataset(data_root, classes=classes[5:]),
    )
    with pytest.raises(
        TrainingError, match="other data \\(train classes, train images, val classes, val images differ"
    ):
        train(config, other_train, other_val, tmp_path / "run")
    assert train(config, train_set, val_set, tmp_path / "run").epochs_run == 2


def test_frozen_backbone_epochs_change_the_head_only(data_root: Path, tmp_path: Path) -> None:
    train_set, val_set = _datasets(data_root)
    # Both runs start from the same weights (same seed); one trains its backbone, the other keeps it frozen.
    train(_config(epochs=1, batches_per_epoch=2), train_set, val_set, tmp_path / "free")
    before = _state(tmp_path / "free")["model"]
    train(_config(epochs=1, batches_per_epoch=2, freeze_backbone_epochs=1), train_set, val_set, tmp_path / "frozen")
    after = _state(tmp_path / "frozen")["model"]

    torch.manual_seed(0)
    start = build_embedder(_config()).state_dict()
    for name, value in after.items():
        if name.startswith("backbone."):
            assert torch.equal(value, start[name]), f"{name} moved while the backbone was frozen"
    assert not torch.equal(after["head.weight"], start["head.weight"])
    # The unfrozen run moved its backbone.
    assert any(not torch.equal(before[n], start[n]) for n in before if n.startswith("backbone."))


def test_freeze_stages_keeps_the_stem_and_first_stages_as_they_were_even_after_the_backbone_thaws(
    data_root: Path, tmp_path: Path
) -> None:
    train_set, val_set = _datasets(data_root)
    config = _config(epochs=2, batches_per_epoch=2, freeze_stages=2, freeze_backbone_epochs=1)
    torch.manual_seed(config.seed)
    start = build_embedder(config).state_dict()
    train(config, train_set, val_set, tmp_path / "run")
    after = _state(tmp_path / "run")["model"]
    fixed = ("backbone.conv_stem.", "backbone.bn1.", "backbone.blocks.0.", "backbone.blocks.1.")
    frozen = [name for name in after if name.startswith(fixed)]
    assert any(name.endswith("running_mean") for name in frozen)
    assert all(torch.equal(after[name], start[name]) for name in frozen), "a frozen stage moved"
    later = [name for name in after if name.startswith("backbone.blocks.4.") and name.endswith(".weight")]
    assert later and all(not torch.equal(after[name], start[name]) for name in later)
    # No gradient reaches the fixed part, so no backward pass runs through it (the time an epoch saves).
    from simsearch.training.model import frozen_stages, set_backbone_frozen

    embedder = build_embedder(config)
    fixed_params, fixed_modules = frozen_stages(embedder.backbone, 2)
    set_backbone_frozen(embedder, False, fixed_params)
    assert not any(p.requires_grad for module in fixed_modules for p in module.parameters())
    assert all(p.requires_grad for p in embedder.backbone.blocks[2].parameters())


def test_freeze_stages_of_a_vit_fix_its_patch_embedding_tokens_and_first_blocks() -> None:
    import timm

    from simsearch.training import frozen_stages

    vit = timm.create_model("vit_tiny_patch16_224", num_classes=0)
    params, modules = frozen_stages(vit, 2)
    names = {name for name, p in vit.named_parameters() if any(p is q for q in params)}
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.1.mlp.fc2.bias"} <= names
    assert not any(name.startswith(("blocks.2.", "norm.")) for name in names)
    assert vit.blocks[0] in modules and vit.blocks[2] not in modules and vit not in modules


def test_freeze_stages_is_refused_when_nothing_would_train_or_there_are_no_stages(
    data_root: Path, tmp_path: Path
) -> None:
    train_set, val_set = _datasets(data_root)
    with pytest.raises(TrainingError, match="a stem and 5 layer groups after it, so at most 4"):
        train(_config(freeze_stages=5), train_set, val_set, tmp_path / "all")
    with pytest.raises(TrainingError, match="no layer groups"):
        config = _config(backbone="random:simsearch_conv4", freeze_stages=1, image_size=28)
        train(config, train_set, val_set, tmp_path / "conv4")
    # GeM's p is pooling, not one more stage: it does not raise the limit.
    with pytest.raises(TrainingError, match="a stem and 5 layer groups after it, so at most 4"):
        train(_config(freeze_stages=5, backbone_kwargs={"gem_p": 2.0}), train_set, val_set, tmp_path / "gem")


@pytest.mark.parametrize("crop_pct", [0.0, -0.5, 1.5])
def test_a_crop_pct_outside_0_to_1_is_refused(crop_pct: float) -> None:
    with pytest.raises(TrainingError, match=r"crop_pct must be in \(0, 1\]"):
        TrainConfig(crop_pct=crop_pct).check()


def _reference_factor(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """The schedule as it was written by hand before timm computed it: linear warm-up from ~0 to 1, then half a
    cosine down to 0 at `total_steps`. The reference that the timm-based schedule must reproduce."""

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def test_the_schedule_warms_up_linearly_then_follows_half_a_cosine_to_zero() -> None:
    from simsearch.training.schedule import rate_factor

    total, warmup = 20, 4
    factor = _reference_factor(total, warmup)
    expected = []
    for step in range(total + 2):  # two steps past the end stay at zero
        if step < warmup:
            expected.append((step + 1) / warmup)
        else:
            t = min(1.0, (step - warmup) / (total - warmup))
            expected.append((1 + math.cos(math.pi * t)) / 2)
    assert [factor(step) for step in range(total + 2)] == pytest.approx(expected)
    assert [rate_factor(total, warmup, step) for step in range(total + 2)] == pytest.approx(expected, rel=1e-12)
    assert rate_factor(total, warmup, warmup - 1) == 1.0 and rate_factor(total, warmup, warmup) == 1.0
    assert rate_factor(total, warmup, total) == pytest.approx(0.0)
    assert rate_factor(10, 0, 0) == 1.0  # no warm-up: the cosine starts at once


@pytest.mark.parametrize(
    ("steps_per_epoch", "epochs", "warmup_epochs"),
    [(5, 4, 1.0), (3, 2, 0.0), (7, 3, 0.5), (1, 1, 0.0), (2, 1, 1.0), (4, 2, 3.0), (6, 10, 0.25)],
)
def test_timm_s_cosine_scheduler_gives_every_step_the_rate_of_the_hand_written_schedule(
    steps_per_epoch: int, epochs: int, warmup_epochs: float
) -> None:
    """Per step and per parameter group (backbone at lr x 0.1, head, loss at its own lr), the optimizer's rates under
    `WarmupCosine` (timm's CosineLRScheduler) are those of torch's LambdaLR driven by the hand-written formula, from
    the first step to two steps past the end; and resuming from a saved step count gives the same rates."""
    from simsearch.training.schedule import WarmupCosine

    total, warmup = steps_per_epoch * epochs, round(warmup_epochs * steps_per_epoch)

    def optimizer() -> torch.optim.Optimizer:
        groups = [{"params": [torch.zeros(1, requires_grad=True)], "lr": lr} for lr in (1e-4, 1e-3, 0.05)]
        return torch.optim.AdamW(groups, lr=1e-3)

    reference_optimizer = optimizer()
    reference = torch.optim.lr_scheduler.LambdaLR(reference_optimizer, _reference_factor(total, warmup))
    timm_optimizer = optimizer()
    schedule = WarmupCosine(timm_optimizer, total, warmup)
    for step in range(total + 2):
        expected = [group["lr"] for group in reference_optimizer.param_groups]
        assert schedule.get_last_lr() == pytest.approx(expected, rel=1e-12, abs=1e-18), step
        assert [group["lr"] for group in timm_optimizer.param_groups] == schedule.get_last_lr()
        reference_optimizer.step()
        reference.step()
        schedule.step()
        if step == total // 2:  # a resumed run: a new schedule loaded from the saved step count (LambdaLR's too)
            state = schedule.state_dict()
            assert state == {"last_epoch": reference.state_dict()["last_epoch"]}
            schedule = WarmupCosine(timm_optimizer, total, warmup)
            schedule.load_state_dict(reference.state_dict())


def test_resuming_with_more_epochs_jumps_to_the_rate_of_the_longer_cosine_as_the_hand_written_schedule_did() -> None:
    from simsearch.training.schedule import WarmupCosine, rate_factor

    steps_per_epoch, warmup = 4, 2
    for done in range(0, 9):
        for new_epochs in (2, 3, 5):
            longer = _reference_factor(steps_per_epoch * new_epochs, warmup)(done)
            assert rate_factor(steps_per_epoch * new_epochs, warmup, done) == pytest.approx(longer, rel=1e-12)
            group = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
            schedule = WarmupCosine(group, steps_per_epoch * new_epochs, warmup)
            schedule.load_state_dict({"last_epoch": done})
            assert schedule.get_last_lr()[0] == pytest.approx(0.01 * longer, rel=1e-12)


def _bn_means(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: value for name, value in state.items() if name.endswith("running_mean")}


@pytest.mark.parametrize("freeze_bn", [True, False], ids=["frozen", "free"])
def test_freeze_bn_keeps_every_running_statistic_while_the_weights_train(
    data_root: Path, tmp_path: Path, freeze_bn: bool
) -> None:
    train_set, val_set = _datasets(data_root)
    config = _config(epochs=1, batches_per_epoch=2, freeze_bn=freeze_bn)
    torch.manual_seed(config.seed)
    start = build_embedder(config).state_dict()
    train(config, train_set, val_set, tmp_path / "run")
    after = _state(tmp_path / "run")["model"]
    means = _bn_means(after)
    assert means, "the test backbone has no BatchNorm"
    moved = [name for name, value in means.items() if not torch.equal(value, start[name])]
    assert (not moved) if freeze_bn else (len(moved) == len(means))
    assert not torch.equal(after["backbone.conv_stem.weight"], start["backbone.conv_stem.weight"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (mixed precision runs on CUDA only)")
def test_training_on_a_gpu_with_mixed_precision_still_learns(data_root: Path, tmp_path: Path) -> None:
    train_set, val_set = _datasets(data_root)
    result = train(_config(epochs=3, batches_per_epoch=3, device="cuda"), train_set, val_set, tmp_path / "run")
    losses = [h["loss"] for h in result.history]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert load_embedder(result.checkpoint, device="cuda").embed_dim == 16


def test_early_stopping_ends_the_run_after_patience_epochs_without_progress(data_root: Path, tmp_path: Path) -> None:
    train_set, val_set = _datasets(data_root)
    result = train(_config(epochs=6, batches_per_epoch=1, patience=1, lr=1e-9), train_set, val_set, tmp_path / "run")
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
    train_set, val_set = _datasets(data_root)
    with pytest.raises(TrainingError, match="at least p=8"):
        train(_config(p=8), train_set, val_set, tmp_path / "run")


def test_cli_train_then_eval_then_index_with_the_checkpoint(data_root: Path, tmp_path: Path) -> None:
    from cli.main import main
    from simsearch import Collection

    runner = CliRunner()
    out = tmp_path / "run"
    args = ["train", str(data_root), "--out", str(out), "--backbone", TINY, "--embed-dim", "8", "--epochs", "2"]
    args += ["-p", "3", "-k", "3", "--image-size", "32", "--device", "cpu", "--val-fraction", "0.34", "--no-augment"]
    args += ["--loss-option", "margin=0.1", "--ema-decay", "0.99", "--json"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["epochs_run"] == 2
    assert (out / "model.safetensors").is_file()
    assert json.loads((out / "config.json").read_text())["recipe"]["ema_decay"] == 0.99
    refused = runner.invoke(main, [*args[:2], "--out", str(tmp_path / "other"), "--ema-decay", "1"])
    assert refused.exit_code == 2 and "--ema-decay" in refused.output

    record_path = tmp_path / "eval.json"
    result = runner.invoke(
        main, ["eval", str(data_root), "--model", str(out), "--device", "cpu", "--out", str(record_path)]
    )
    assert result.exit_code == 0, result.output
    assert "map@r" in result.output
    record = json.loads(record_path.read_text())
    metrics = record["metrics"]
    assert record["images"] == 36 and record["classes"] == 6
    for k in (1, 8):  # hit rates over the 36 leave-one-out queries: whole numbers of hits
        assert metrics[f"recall@{k}"] * 36 == pytest.approx(round(metrics[f"recall@{k}"] * 36))
    assert metrics["recall@1"] <= metrics["recall@8"] and metrics["map@r"] <= metrics["r_precision"] + 1e-9
    assert 0.0 <= metrics["nmi"] <= 1.0 + 1e-9
    # The documented command, without --out: the record and its plot land beside the checkpoint's weights.
    result = runner.invoke(main, ["eval", str(data_root), "--model", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    default_record = out / f"eval-{data_root.name}.json"
    assert json.loads(default_record.read_text())["metrics"] == metrics
    assert default_record.with_suffix(".png").stat().st_size > 0
    (tmp_path / "a_file").write_text("not a folder")
    result = runner.invoke(
        main, ["eval", str(data_root), "--model", str(out), "--device", "cpu", "--out", str(tmp_path / "a_file/e.json")]
    )
    assert result.exit_code == 1 and "cannot write" in result.output and "Traceback" not in result.output

    with Collection.open(tmp_path / "col", model=str(out), device="cpu", create=True) as col:
        col.index_folder(data_root, workers=0)
        assert len(col) == 36


def test_cli_train_options_reach_the_recipe_and_embed_dim_0_keeps_a_checkpoint_head(
    data_root: Path, tmp_path: Path
) -> None:
    from cli.main import main

    runner = CliRunner()
    base = ["--device", "cpu", "-p", "3", "-k", "2", "--epochs", "1", "--image-size", "32", "--no-augment"]
    first = tmp_path / "first"
    args = ["train", str(data_root), "--out", str(first), "--backbone", TINY, "--embed-dim", "8", *base]
    result = runner.invoke(main, args)
    assert result.exit_code == 0 and "epoch 1: loss" in result.stderr
    # Phase two from the checkpoint: its trained 8-d head stays (embed_dim 0), with its own loss lr, no early stop.
    second = tmp_path / "second"
    args = ["train", str(data_root), "--out", str(second), "--backbone", str(first), "--embed-dim", "0", *base]
    args += ["--loss", "proxy_anchor", "--loss-lr", "0.05", "--patience", "0", "--crop-pct", "0.5", "-q"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "epoch 1: loss" not in result.stderr and "best epoch 1" in result.stderr  # quiet: the final line only
    config = json.loads((second / "config.json").read_text())
    assert config["embed_dim"] == 8 and config["recipe"]["embed_dim"] is None
    # The crop is the checkpoint's: whoever loads it (eval, index) resizes to 32 / 0.5 before the 32 px centre crop.
    assert json.loads((first / "config.json").read_text())["data_config"]["crop_pct"] != 0.5
    assert config["data_config"]["crop_pct"] == 0.5 and config["recipe"]["crop_pct"] == 0.5
    assert "Resize(size=64" in repr(create_transform(load_embedder(second)))
    assert config["recipe"]["loss_lr"] == 0.05 and config["recipe"]["patience"] is None
    state = torch.load(second / LAST_DIR / STATE_FILE, map_location="cpu", weights_only=True)
    assert sorted(group["initial_lr"] for group in state["optimizer"]["param_groups"]) == [1e-4, 1e-3, 0.05]

    conflicts = {
        "--augment-option has no effect with --no-augment": ["--augment-option", "hflip=0"],
        "takes no weights file": ["--weights", str(first / "model.safetensors")],
        "Invalid value for '--crop-pct'": ["--crop-pct", "0"],
    }
    for message, extra in conflicts.items():
        args = ["train", str(data_root), "--out", str(tmp_path / "bad"), "--backbone", TINY, *base, *extra]
        result = runner.invoke(main, args)
        assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output


def test_nan_embeddings_are_an_error_in_evaluation_and_in_validation(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A diverged model's NaN vectors must not be scored (faiss would answer them with index -1, read as a hit)."""
    import simsearch.training.validation as validation_module
    from simsearch.evaluation import EvaluationError
    from simsearch.models import random_embedder

    embedder = random_embedder(TINY.removeprefix("random:"))
    vectors = np.full((6, 4), np.nan, dtype=np.float32)
    with pytest.raises(EvaluationError, match="6 of 6 vectors hold NaN"):
        evaluate_embeddings(embedder, vectors, np.array([0, 0, 1, 1, 2, 2]))

    def nan_vectors(model: object, dataset: object, **kwargs: object) -> tuple[np.ndarray, np.ndarray]:
        labels = np.asarray(dataset.labels)  # type: ignore[attr-defined]
        return np.full((len(labels), 16), np.nan, dtype=np.float32), labels

    monkeypatch.setattr(validation_module, "embed_dataset", nan_vectors)
    train_set, val_set = _datasets(data_root)
    with pytest.raises(TrainingError, match="validation before training: .*NaN"):
        train(_config(epochs=1, batches_per_epoch=1), train_set, val_set, tmp_path / "run")

    # A model that diverges in its first epoch: the scores before training are fine, those after it are NaN.
    calls: list[int] = []

    def nan_after_training(model: object, dataset: object, **kwargs: object) -> tuple[np.ndarray, np.ndarray]:
        calls.append(1)
        return embed_dataset(model, dataset, **kwargs) if len(calls) == 1 else nan_vectors(model, dataset)  # type: ignore[arg-type]

    monkeypatch.setattr(validation_module, "embed_dataset", nan_after_training)
    with pytest.raises(TrainingError, match="validation after epoch 1: .*NaN"):
        train(_config(epochs=1, batches_per_epoch=1), train_set, val_set, tmp_path / "run2")


def test_cli_train_reports_a_bad_loss_option_in_one_line(data_root: Path, tmp_path: Path) -> None:
    from cli.main import main

    args = ["train", str(data_root), "--out", str(tmp_path / "run"), "--backbone", TINY, "--device", "cpu"]
    args += ["-p", "3", "-k", "2", "--loss-option", "bogus=1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert "bogus" in result.output and "Traceback" not in result.output


# --------------------------------------------------------------------------------------------------------------------
# Backbone options, Siamese pairs, LMDB stores (real data from the shared folder)
# --------------------------------------------------------------------------------------------------------------------


def _fashion_subset(per_class: int) -> ArrayDataset:
    """The first `per_class` Fashion-MNIST test images of each of the ten classes: real grey 28x28 images."""
    try:
        fm = load_fashion_mnist("test")
    except DataNotFoundError as exc:
        pytest.skip(f"Fashion-MNIST not found ({exc}); set SIMSEARCH_DATA to the shared data folder")
    idx = np.concatenate([np.flatnonzero(fm.labels == c)[:per_class] for c in range(10)])
    return ArrayDataset(fm.images[idx], fm.labels[idx], classes=fm.classes)


def test_a_random_one_channel_backbone_trains_and_its_checkpoint_embeds_grey_images(tmp_path: Path) -> None:
    data = _fashion_subset(4)
    config = _config(backbone="random:resnet10t", backbone_kwargs={"in_chans": 1}, image_size=28, p=4, k=2, epochs=1)
    result = train(dataclasses.replace(config, batches_per_epoch=2), data, None, tmp_path / "run")
    saved = json.loads((result.checkpoint / "config.json").read_text())
    assert saved["backbone_kwargs"] == {"in_chans": 1} and saved["recipe"]["backbone_kwargs"] == {"in_chans": 1}
    assert saved["data_config"]["input_size"] == [1, 28, 28] and len(saved["data_config"]["mean"]) == 1

    model = load_embedder(result.checkpoint)
    tensor = create_transform(model)(data[0][0])
    assert tensor.shape == (1, 28, 28)
    vectors, labels = embed_dataset(model, data)
    assert vectors.shape == (40, 16) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert labels.tolist() == data.labels.tolist()


def test_a_pretrained_backbone_with_in_chans_1_sums_its_rgb_stem_filters(default_embedder: Embedder) -> None:
    model = build_embedder(TrainConfig(backbone="default", backbone_kwargs={"in_chans": 1}, embed_dim=8))
    rgb = default_embedder.backbone.conv_stem.weight
    grey = model.backbone.conv_stem.weight
    assert grey.shape == (rgb.shape[0], 1, *rgb.shape[2:])
    assert torch.allclose(grey, rgb.sum(dim=1, keepdim=True), atol=1e-6)
    # Every other weight is the pretrained one.
    assert torch.equal(model.backbone.conv_head.weight, default_embedder.backbone.conv_head.weight)
    assert model.data_config["input_size"][0] == 1 and model.data_config["mean"] == (0.5,)
    # Without a projection head the rebuilt base model itself is returned: its config follows the new stem too.
    bare = build_embedder(TrainConfig(backbone="default", backbone_kwargs={"in_chans": 1}, embed_dim=None))
    assert bare.data_config["input_size"][0] == 1 and bare.data_config["mean"] == (0.5,)


def test_a_backbone_option_that_changes_the_weights_of_a_loaded_model_is_refused(tmp_path: Path) -> None:
    from simsearch.models import save_checkpoint
    from simsearch.models.registry import random_embedder

    checkpoint = save_checkpoint(random_embedder("test_resnet", embed_dim=8), tmp_path / "ckpt")
    with pytest.raises(TrainingError, match="stem_width change .* do not fit"):
        build_embedder(TrainConfig(backbone=str(checkpoint), backbone_kwargs={"stem_width": 24}))
    # An option that leaves the weights' shapes alone keeps the checkpoint's weights and records the option.
    model = build_embedder(TrainConfig(backbone=str(checkpoint), backbone_kwargs={"drop_rate": 0.1}, embed_dim=None))
    assert model.backbone_kwargs == {"drop_rate": 0.1}
    assert torch.equal(model.head.weight, load_embedder(checkpoint).head.weight)


def test_gem_on_a_loaded_backbone_keeps_its_weights_and_its_p_trains(data_root: Path, tmp_path: Path) -> None:
    from simsearch.models import GeM, save_checkpoint
    from simsearch.models.registry import random_embedder

    checkpoint = save_checkpoint(random_embedder("test_resnet", embed_dim=8), tmp_path / "ckpt")
    model = build_embedder(TrainConfig(backbone=str(checkpoint), backbone_kwargs={"gem_p": 2.0}, embed_dim=None))
    assert isinstance(model.backbone.global_pool, GeM) and model.backbone.global_pool.p.item() == 2.0
    before = load_embedder(checkpoint).backbone.state_dict()
    after = model.backbone.state_dict()
    assert set(after) - set(before) == {"global_pool.p"}
    assert all(torch.equal(before[k], after[k]) for k in before)

    config = _config(backbone=str(checkpoint), backbone_kwargs={"gem_p": 2.0}, embed_dim=None, epochs=1)
    train(config, *_datasets(data_root), tmp_path / "run")
    trained = load_embedder(tmp_path / "run")
    assert trained.backbone_kwargs == {"gem_p": 2.0}
    assert isinstance(trained.backbone.global_pool, GeM) and trained.backbone.global_pool.p.item() != 2.0
    # From a GeM checkpoint, p goes on from its learnt value, unless gem_p says where it starts.
    learnt = trained.backbone.global_pool.p.item()
    again = build_embedder(TrainConfig(backbone=str(tmp_path / "run"), backbone_kwargs={"drop_rate": 0.1}))
    assert again.backbone.global_pool.p.item() == learnt
    restarted = build_embedder(TrainConfig(backbone=str(tmp_path / "run"), backbone_kwargs={"gem_p": 3.0}))
    assert restarted.backbone.global_pool.p.item() == 3.0


def _ae_checkpoint(folder: Path) -> Path:
    """A tiny untrained conv-autoencoder checkpoint for 1x28x28 images, as `simsearch pretrain` writes one."""
    from simsearch.models import save_checkpoint
    from simsearch.models.registry import random_embedder

    ae = random_embedder("simsearch-ae:conv", input_shape=[1, 28, 28], code_dim=8, options={"channels": [4, 8]})
    return save_checkpoint(ae, folder)


class _Unreadable:
    """A labelled dataset whose images must not be read: proves a check ran before any data loading."""

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> object:
        raise AssertionError("an image was read")


def test_an_image_size_an_autoencoder_encoder_cannot_take_is_refused_before_any_image_is_read(tmp_path: Path) -> None:
    checkpoint = _ae_checkpoint(tmp_path / "ae")
    data = _Unreadable(np.repeat(np.arange(4), 3))
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"image_size 32 .* takes 1x28x28 images only: set it to 28"):
        train(_config(backbone=str(checkpoint), image_size=32, p=4, k=2), data, None, out)
    assert not out.exists()
    # An untrained autoencoder backbone has the same fixed input.
    kwargs = {"input_shape": [1, 28, 28], "code_dim": 8, "options": {"channels": [4, 8]}}
    with pytest.raises(TrainingError, match="1x28x28 images only"):
        build_embedder(TrainConfig(backbone="random:simsearch-ae:conv", backbone_kwargs=kwargs, image_size=24))


def test_an_image_size_a_fixed_size_timm_backbone_cannot_take_is_refused_and_dynamic_size_fixes_it() -> None:
    # A ViT is built for 224 x 224 and asserts it at its first forward; the check runs it once, on a zero image.
    with pytest.raises(TrainingError, match=r"image_size 64 does not fit backbone vit_tiny_patch16_224 .*224"):
        build_embedder(TrainConfig(backbone="random:vit_tiny_patch16_224", image_size=64))
    fixed = build_embedder(
        TrainConfig(backbone="random:vit_tiny_patch16_224", backbone_kwargs={"dynamic_img_size": True}, image_size=64)
    )
    assert fixed.data_config["input_size"] == (3, 64, 64)
    unprobed = build_embedder(
        TrainConfig(backbone="random:vit_tiny_patch16_224", backbone_kwargs={"dynamic_img_size": True})
    )
    assert fixed.backbone.training == unprobed.backbone.training  # the probe leaves the mode as it found it
    # A convolutional net takes any size and passes.
    assert build_embedder(TrainConfig(backbone="random:simsearch_conv4", image_size=20)).embed_dim is not None


@pytest.mark.parametrize("image_size", [None, 28])
def test_an_autoencoder_checkpoint_trains_at_its_own_size_or_without_image_size(
    image_size: int | None, data_root: Path, tmp_path: Path
) -> None:
    checkpoint = _ae_checkpoint(tmp_path / "ae")
    train_set, _ = _datasets(data_root)  # 32x32 RGB photos: the encoder's data config makes them 1x28x28
    config = _config(backbone=str(checkpoint), image_size=image_size, epochs=1, p=4, k=2, batches_per_epoch=1)
    result = train(config, train_set, None, tmp_path / "run")
    assert result.epochs_run == 1
    saved = json.loads((result.checkpoint / "config.json").read_text())
    assert saved["backbone"] == "simsearch-ae:conv" and saved["data_config"]["input_size"] == [1, 28, 28]


def test_cli_train_refuses_an_autoencoder_backbone_at_another_image_size_in_one_line(
    data_root: Path, tmp_path: Path
) -> None:
    from cli.main import main

    checkpoint = _ae_checkpoint(tmp_path / "ae")
    args = ["train", str(data_root), "--out", str(tmp_path / "run"), "--backbone", str(checkpoint)]
    result = CliRunner().invoke(main, [*args, "--image-size", "32", "--device", "cpu", "-p", "3", "-k", "2", "-q"])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: image_size 32 does not fit backbone simsearch-ae:conv")
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def _loss_on_fixed_pairs(model: Embedder, data: ArrayDataset, loss_name: str) -> float:
    """The pair loss over 200 fixed pairs, all images in one batch with batch statistics (as in training)."""
    pairs = SiamesePairs(data, 200, seed=99).pairs
    transform = create_transform(model)
    images = torch.stack([transform(data[i][0]) for i in range(len(data))])
    model.train()
    with torch.no_grad():
        vectors = model(images)
    loss_fn = create_loss(loss_name, embed_dim=vectors.shape[1])
    return float(loss_fn.pair_loss(vectors[pairs[:, 0]], vectors[pairs[:, 1]], torch.from_numpy(pairs[:, 2])))


def test_siamese_pair_training_lowers_the_pair_loss_on_fashion_mnist(tmp_path: Path) -> None:
    data = _fashion_subset(20)
    config = _config(
        backbone="random:resnet10t",
        backbone_kwargs={"in_chans": 1},
        image_size=28,
        loss="pair_regression",
        sampler="pairs",
        pairs_per_epoch=64,
        pair_batch_size=16,
        epochs=4,
        lr=3e-3,
    )
    torch.manual_seed(config.seed)
    before = _loss_on_fixed_pairs(build_embedder(config), data, "pair_regression")
    result = train(config, data, None, tmp_path / "run")
    assert len(result.history) == 4 and all(h["samples_per_second"] > 0 for h in result.history)
    after = _loss_on_fixed_pairs(load_embedder(result.checkpoint), data, "pair_regression")
    assert after < 0.7 * before
    assert json.loads((result.checkpoint / "config.json").read_text())["recipe"]["sampler"] == "pairs"


def test_pairs_with_a_batch_loss_or_a_bad_sampler_are_clear_errors() -> None:
    with pytest.raises(TrainingError, match="pair loss .*contrastive, pair_regression"):
        TrainConfig(sampler="pairs", loss="triplet").check()
    with pytest.raises(TrainingError, match="sampler"):
        TrainConfig(sampler="quads").check()
    with pytest.raises(TrainingError, match="in_chans"):
        TrainConfig(backbone_kwargs={"in_chans": 2}).check()


def test_pair_losses_score_explicit_pairs_as_the_batch_api_scores_the_same_pairs() -> None:
    torch.manual_seed(0)
    first, second = torch.randn(6, 4), torch.randn(6, 4)
    same = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    # The batch API over the 2B embeddings with labels that make exactly pair i positive when same[i] is 1.
    embeddings = torch.cat([first, second])
    labels = torch.cat([torch.arange(6) * 2, torch.arange(6) * 2 + (1 - same.long())])
    index = (torch.arange(6), torch.arange(6) + 6)
    for name in ("contrastive", "pair_regression"):
        for distance in ("euclidean", "cosine"):
            loss_fn = create_loss(name, embed_dim=4, distance=distance)
            expected = loss_fn(embeddings, labels, pairs=index)
            assert torch.allclose(loss_fn.pair_loss(first, second, same), expected, atol=1e-6), (name, distance)


def test_a_run_saved_before_new_recipe_fields_existed_still_resumes(data_root: Path, tmp_path: Path) -> None:
    train_set, val_set = _datasets(data_root)
    config = _config(epochs=2, batches_per_epoch=1)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(config, train_set, val_set, out, _InterruptAfter(1))
    state = _state(out)
    old_recipe = json.loads(state["recipe"])
    for key in ("backbone_kwargs", "sampler", "pairs_per_epoch", "positive_fraction", "pair_batch_size"):
        del old_recipe[key]
    state["recipe"] = json.dumps(old_recipe, sort_keys=True)
    torch.save(state, out / LAST_DIR / STATE_FILE)
    assert [h["epoch"] for h in train(config, train_set, val_set, out).history] == [1, 2]


def test_cli_trains_on_an_lmdb_store_with_pairs_and_a_backbone_option(tmp_path: Path) -> None:
    from cli.main import main

    store = tmp_path / "fashion.lmdb"
    write_lmdb_dataset(_fashion_subset(6), store)
    out = tmp_path / "run"
    args = ["train", str(store), "--out", str(out), "--backbone", "random:resnet10t", "--backbone-option", "in_chans=1"]
    args += ["--embed-dim", "8", "--epochs", "1", "--image-size", "28", "--device", "cpu", "--val-fraction", "0.3"]
    args += ["--sampler", "pairs", "--loss", "contrastive", "--pairs-per-epoch", "16", "--pair-batch-size", "8"]
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["epochs_run"] == 1
    saved = json.loads((out / "config.json").read_text())
    assert saved["recipe"]["sampler"] == "pairs" and saved["backbone_kwargs"] == {"in_chans": 1}
    assert "map@r" in saved["metrics"]  # the class-disjoint validation came from the LMDB store too

    result = CliRunner().invoke(main, [*args[:-2], "--loss", "triplet", "--restart"])
    assert result.exit_code == 1 and "pair loss" in result.output and "Traceback" not in result.output
