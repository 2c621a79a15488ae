"""What a training run tells its user while it runs: the plan before the first batch, progress lines in a log (no
terminal), the validation scores before training (epoch 0) in history.json and in its plot."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from training_helpers import TINY, make_classes, split_datasets, tiny_config

from simsearch.evaluation import embed_dataset
from simsearch.metrics import retrieval_metrics
from simsearch.runs import seed_everything
from simsearch.training import RunPlan, build_embedder, train


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_classes(tmp_path_factory.mktemp("classes"), n_classes=6, per_class=6)


def test_cli_train_without_a_terminal_says_its_plan_then_progress_then_epoch_0_and_draws_the_history(
    data_root: Path, tmp_path: Path
) -> None:
    from cli.main import main

    out = tmp_path / "run"
    args = ["train", str(data_root), "--out", str(out), "--backbone", TINY, "--embed-dim", "8", "--epochs", "2"]
    args += ["-p", "3", "-k", "3", "--image-size", "32", "--device", "cpu", "--val-fraction", "0.34", "--no-augment"]
    result = CliRunner().invoke(main, [*args, "--batches-per-epoch", "2"])  # CliRunner's stderr is no terminal
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    threads = torch.get_num_threads()
    assert lines[0] == (
        "training on 4 classes (24 images), validating on 2 other classes (12 images, leave-one-out); "
        f"2 batches of 3 classes x 3 per epoch, 2 epochs; cpu, {threads} threads"
    )
    assert re.fullmatch(r"epoch 0 \(before training\): val R@1 [\d.]+ MAP@R [\d.]+", lines[1])
    assert re.fullmatch(r"epoch 1/2: batch 1/2, loss [\d.]+, [\d.]+ samples/s, \d+ s left in the epoch", lines[2])
    assert lines[3].startswith("epoch 1: loss")
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1, 2] and set(history[0]) == {"epoch", "val"}
    assert f"MAP@R {history[0]['val']['map@r']:.4f}" in lines[1]
    assert (out / "history.png").stat().st_size > 0 and "curves in" in lines[-1]

    # --json gives the same scores before training beside the trained epochs; -q says nothing until the end.
    again = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "quiet"), "-q", "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["before_training"] == history[0]["val"]
    assert "training on" not in again.stderr and "epoch 0" not in again.stderr


def test_epoch_0_scores_the_model_as_built_before_any_step_and_the_plan_reaches_a_progress_object(
    data_root: Path, tmp_path: Path
) -> None:
    train_set, val_set = split_datasets(data_root)
    config = tiny_config(epochs=1, batches_per_epoch=2)
    seen: dict[str, object] = {}

    class Listener:
        def start_run(self, plan: RunPlan) -> None:
            seen["plan"] = plan

        def before_training(self, scores: dict[str, float]) -> None:
            seen["scores"] = scores

        def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
            seen.setdefault("first epoch", epoch)

        def step(self, loss: float, samples_per_second: float) -> None:
            pass

        def end_epoch(self, epoch: int, record: dict) -> None:
            pass

    result = train(config, train_set, val_set, tmp_path / "run", Listener())
    plan = seen["plan"]
    assert isinstance(plan, RunPlan)
    assert (plan.train_classes, plan.train_images, plan.val_classes, plan.val_images) == (4, 24, 2, 12)
    assert (plan.steps_per_epoch, plan.start_epoch, plan.device) == (2, 0, "cpu")
    assert seen["scores"] == result.before_training and seen["first epoch"] == 1

    # The same numbers from the model the recipe builds, scored by hand.
    seed_everything(config.seed)
    untrained = build_embedder(config)
    vectors, labels = embed_dataset(untrained, val_set)
    expected = retrieval_metrics(vectors, labels, ks=(1,), nmi=False)
    assert result.before_training == pytest.approx({"recall@1": expected["recall@1"], "map@r": expected["map@r"]})
    assert result.epochs_run == 1 and [h["epoch"] for h in result.history] == [1]

    # A resumed run does not score epoch 0 again: the history keeps the first one.
    more = train(tiny_config(epochs=2, batches_per_epoch=2), train_set, val_set, tmp_path / "run")
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1, 2] and more.before_training == result.before_training


def test_progress_lines_come_every_interval_and_not_on_a_quiet_run(capsys: pytest.CaptureFixture[str]) -> None:
    from cli.progress import EpochBar

    bar = EpochBar(False, lambda epoch, record: f"done {epoch}", every_s=0.0)
    bar.start_epoch(1, 3, 4)
    for _ in range(4):
        bar.step(0.5, 10.0)
    bar.end_epoch(1, {})
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(",")[0] for line in lines[:4]] == [f"epoch 1/3: batch {i}/4" for i in range(1, 5)]
    assert lines[4] == "done 1"

    slow = EpochBar(False, lambda epoch, record: "", every_s=3600.0)
    slow.start_epoch(1, 1, 5)
    for _ in range(5):
        slow.step(0.5, 10.0)
    assert len(capsys.readouterr().err.splitlines()) == 1  # the first batch only, then an hour to wait

    quiet = EpochBar(True, lambda epoch, record: "", every_s=0.0)
    quiet.start_epoch(1, 1, 2)
    quiet.step(0.5, 10.0)
    quiet.end_epoch(1, {})
    assert capsys.readouterr().err == ""
