"""Interrupted training runs: resuming reaches where an uninterrupted run ends (moving average included), a crash
between two writes loses no epoch, and another recipe or other data are refused."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
from training_helpers import InterruptAfter, last_state, make_classes, split_datasets, tiny_config

from simsearch.data import ImageFolderDataset
from simsearch.models import load_embedder
from simsearch.training import LAST_DIR, STATE_FILE, TrainingError, train


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_classes(tmp_path_factory.mktemp("classes"), n_classes=6, per_class=6)


@pytest.mark.parametrize("augment", [False, True], ids=["plain", "augmented"])
def test_resume_continues_from_the_saved_epoch_with_the_same_optimizer_steps(
    data_root: Path, tmp_path: Path, augment: bool
) -> None:
    """With augmentation too: a resumed epoch must draw the crops the uninterrupted run drew, not epoch 1's again."""
    train_set, val_set = split_datasets(data_root)
    config = tiny_config(epochs=3, batches_per_epoch=2, augment=augment)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(config, train_set, val_set, out, InterruptAfter(1))
    first = last_state(out)
    assert first["epoch"] == 1 and first["scheduler"]["last_epoch"] == 2

    result = train(config, train_set, val_set, out)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    resumed = last_state(out)
    assert resumed["epoch"] == 3 and resumed["scheduler"]["last_epoch"] == 6
    assert {int(s["step"]) for s in resumed["optimizer"]["state"].values()} == {6}

    # An uninterrupted run of the same recipe ends in the same place.
    straight = train(config, train_set, val_set, tmp_path / "straight")
    assert [h["loss"] for h in straight.history] == pytest.approx([h["loss"] for h in result.history], rel=1e-4)
    assert torch.allclose(last_state(tmp_path / "straight")["model"]["head.weight"], resumed["model"]["head.weight"])


def test_resuming_with_more_epochs_follows_the_new_schedule_and_says_the_rate_jumps(
    data_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Extending a run is allowed; the cosine is recomputed for the new length, and the log names both rates."""
    train_set, val_set = split_datasets(data_root)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(epochs=2, batches_per_epoch=2), train_set, val_set, out, InterruptAfter(1))
    with caplog.at_level(logging.WARNING, logger="simsearch.training"):
        result = train(tiny_config(epochs=4, batches_per_epoch=2), train_set, val_set, out)
    # At step 2: half-way down a 4-step cosine (0.5 x 1e-2), a quarter of the way down an 8-step one.
    expected = f"from {0.005:.3g} to {1e-2 * 0.5 * (1 + math.cos(math.pi / 4)):.3g}"
    assert [r.getMessage() for r in caplog.records if expected in r.getMessage()], caplog.text
    # Epoch 2 now ends half-way down the 8-step cosine, where the 4-step one would have reached zero.
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert result.history[1]["lr"] == pytest.approx(0.005)

    caplog.clear()
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(epochs=2, batches_per_epoch=2), train_set, val_set, tmp_path / "same", InterruptAfter(1))
    with caplog.at_level(logging.WARNING, logger="simsearch.training"):
        train(tiny_config(epochs=2, batches_per_epoch=2), train_set, val_set, tmp_path / "same")
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
    train_set, _ = split_datasets(data_root)
    out = tmp_path / "run"
    train(tiny_config(epochs=2, batches_per_epoch=2, ema_decay=0.9), train_set, None, out)

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
    train_set, val_set = split_datasets(data_root)
    config = tiny_config(epochs=3, batches_per_epoch=2, ema_decay=0.9)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(config, train_set, val_set, out, InterruptAfter(1))
    resumed = train(config, train_set, val_set, out)
    straight = train(config, train_set, val_set, tmp_path / "straight")

    resumed_map = [h["val"]["map@r"] for h in resumed.history]
    assert resumed_map == pytest.approx([h["val"]["map@r"] for h in straight.history], rel=1e-4)
    ema_resumed, ema_straight = last_state(out)["ema"], last_state(tmp_path / "straight")["ema"]
    assert ema_resumed.keys() == ema_straight.keys()
    assert all(torch.allclose(ema_resumed[k].float(), ema_straight[k].float(), atol=1e-5) for k in ema_resumed)
    with pytest.raises(TrainingError, match="ema_decay must be in"):
        tiny_config(ema_decay=1.0).check()


def test_a_crash_between_the_history_and_the_state_loses_no_epoch(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """history.json is written before last/state.pt: a crash between the two leaves a history one epoch ahead,
    which the resumed run cuts back and replays, so every epoch is in the history once."""
    import simsearch.runs.run as run_module

    train_set, val_set = split_datasets(data_root)
    config = tiny_config(epochs=3, batches_per_epoch=1)
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
    assert last_state(out)["epoch"] == 1
    # The file starts with epoch 0, the scores before training, written with the first epoch's record.
    assert [h["epoch"] for h in json.loads((out / "history.json").read_text())] == [0, 1, 2]

    monkeypatch.setattr(run_module, "save_state", real_save_state)
    result = train(config, train_set, val_set, out)
    assert [h["epoch"] for h in result.history] == [1, 2, 3] and result.epochs_run == 3
    assert [h["epoch"] for h in json.loads((out / "history.json").read_text())] == [0, 1, 2, 3]
    assert result.best_metrics == next(h["val"] for h in result.history if h["epoch"] == result.best_epoch)


def test_a_restart_forgets_the_old_run_before_its_first_epoch(data_root: Path, tmp_path: Path) -> None:
    """Interrupted during its first epoch, a restart leaves nothing that the next call would resume."""
    train_set, val_set = split_datasets(data_root)
    config = tiny_config(epochs=2, batches_per_epoch=1)
    out = tmp_path / "run"
    train(config, train_set, val_set, out)
    assert (out / LAST_DIR / STATE_FILE).is_file()

    class InterruptAtFirstStep(InterruptAfter):
        def step(self, loss: float, samples_per_second: float) -> None:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, train_set, val_set, out, InterruptAtFirstStep(0), resume=False)
    assert not (out / LAST_DIR / STATE_FILE).exists() and not (out / "history.json").exists()
    assert [h["epoch"] for h in train(config, train_set, val_set, out).history] == [1, 2]


def test_resuming_with_another_recipe_is_refused(data_root: Path, tmp_path: Path) -> None:
    train_set, val_set = split_datasets(data_root)
    train(tiny_config(epochs=1, batches_per_epoch=1), train_set, val_set, tmp_path / "run")
    with pytest.raises(TrainingError, match="another recipe"):
        train(tiny_config(epochs=2, batches_per_epoch=1, lr=0.5), train_set, val_set, tmp_path / "run")


def test_resuming_on_other_classes_is_refused_and_the_checkpoint_names_its_split(
    data_root: Path, tmp_path: Path
) -> None:
    train_set, val_set = split_datasets(data_root)
    config = tiny_config(epochs=2, batches_per_epoch=1)
    with pytest.raises(KeyboardInterrupt):
        train(config, train_set, val_set, tmp_path / "run", InterruptAfter(1))
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


def test_a_run_saved_before_new_recipe_fields_existed_still_resumes(data_root: Path, tmp_path: Path) -> None:
    train_set, val_set = split_datasets(data_root)
    config = tiny_config(epochs=2, batches_per_epoch=1)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(config, train_set, val_set, out, InterruptAfter(1))
    state = last_state(out)
    old_recipe = json.loads(state["recipe"])
    for key in ("backbone_kwargs", "sampler", "pairs_per_epoch", "positive_fraction", "pair_batch_size"):
        del old_recipe[key]
    state["recipe"] = json.dumps(old_recipe, sort_keys=True)
    torch.save(state, out / LAST_DIR / STATE_FILE)
    assert [h["epoch"] for h in train(config, train_set, val_set, out).history] == [1, 2]
