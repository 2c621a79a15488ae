"""The benchmarks' helpers: class limits, Markdown tables, result names, peak memory, the CLI-run record, the
Fashion-MNIST benchmark, recipes built as the library's, the autoencoder pictures."""

from __future__ import annotations

import json
import mmap
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from benchmark_helpers import PNG_MAGIC
from click.testing import CliRunner
from conftest import DATA

from benchmarks import suites
from benchmarks.record import ENVIRONMENT_KEYS, PeakRSS, default_result_path, markdown_table
from benchmarks.suites import BenchmarkError, class_balanced_rows

# --------------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------------


def test_limit_takes_whole_classes_of_at_least_two_images() -> None:
    labels = np.repeat(np.arange(10), 7)  # 10 classes of 7
    rows = class_balanced_rows(labels, 9)
    kept = labels[rows]
    assert len(rows) <= 9 and len(np.unique(kept)) == 4
    assert all(np.sum(kept == c) == 2 for c in np.unique(kept))
    assert list(class_balanced_rows(labels, None)) == list(range(70))
    rows = class_balanced_rows(labels, 35)  # 4 per class: 8 whole classes fit
    assert len(rows) == 32 and list(rows[:4]) == [0, 1, 2, 3]
    with pytest.raises(BenchmarkError):
        class_balanced_rows(labels, 1)


def test_markdown_table_takes_the_union_of_the_columns_in_order() -> None:
    table = markdown_table([{"a": 1, "b": 0.12345}, {"a": 2, "c": "x|y"}])
    lines = table.strip().splitlines()
    assert lines[0] == "| a | b | c |" and lines[1] == "|---|---|---|"
    assert lines[2] == "| 1 | 0.123 |  |" and lines[3] == "| 2 |  | x\\|y |"


def test_default_result_names_tell_recipes_apart() -> None:
    def name(**recipe: Any) -> str:
        fields = {"loss": "triplet", "backbone": "random:simsearch_conv4_wide", "epochs": 30, "seed": 0, **recipe}
        return default_result_path("omniglot", types.SimpleNamespace(**fields)).name

    assert name() == "omniglot_triplet_simsearch_conv4_wide_30ep_seed0.json"
    others = {name(loss="center"), name(backbone="random:simsearch_conv4"), name(epochs=40), name(seed=1)}
    assert len(others) == 4 and name() not in others
    assert name(backbone="runs/fashion_c4w/") == "omniglot_triplet_fashion_c4w_30ep_seed0.json"


def test_peak_rss_sees_memory_allocated_inside_it() -> None:
    with PeakRSS() as before:
        pass
    # A fresh anonymous mapping, every page touched: a numpy array could reuse heap pages that earlier tests freed but
    # left resident, and then the RSS would not grow.
    with PeakRSS() as during:
        block = mmap.mmap(-1, 64 * 2**20)
        block[:: mmap.PAGESIZE] = b"\x01" * (64 * 2**20 // mmap.PAGESIZE)
    assert during.peak_self >= before.peak_self + 48 * 2**20
    assert during.as_dict()["peak_pss_with_workers_mib"] > 0
    block.close()


def test_cli_run_record_is_assembled_from_what_train_and_eval_wrote(tmp_path: Path) -> None:
    from PIL import Image

    from benchmarks.cli_run import build_record
    from cli.main import main

    rng = np.random.default_rng(0)
    for c in range(6):
        (tmp_path / "data" / f"c{c}").mkdir(parents=True)
        for i in range(4):
            pixels = np.clip(rng.integers(0, 256, 3) + rng.normal(0, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / f"c{c}" / f"{i}.png")
    run, data = tmp_path / "run", str(tmp_path / "data")
    common = ["--device", "cpu", "-q"]
    train = ["train", data, "--out", str(run), "--backbone", "random:test_efficientnet", "--embed-dim", "8"]
    train += ["--epochs", "2", "-p", "2", "-k", "2", "--image-size", "32", "--no-augment", "--val-fraction", "0.34"]
    assert CliRunner().invoke(main, [*train, *common]).exit_code == 0
    result = CliRunner().invoke(main, ["eval", data, "--model", str(run), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    evaluation = json.loads((run / "eval-data.json").read_text())

    record = build_record(
        run, evaluation, off_the_shelf=evaluation, goals={"map@r": 2.0}, commands=["a", "b"], note="n"
    )
    history = json.loads((run / "history.json").read_text())
    assert record["test"]["map@r"] == evaluation["metrics"]["map@r"] and record["history"] == history
    assert [h["epoch"] for h in record["history"]] == [0, 1, 2] and record["recipe"]["epochs"] == 2  # 0: untrained
    assert record["off_the_shelf"]["recall@1"] == evaluation["metrics"]["recall@1"]
    assert record["goal_met"] is False and record["commands"] == ["a", "b"]
    reachable = {"map@r": evaluation["metrics"]["map@r"]}
    assert build_record(run, evaluation, off_the_shelf=None, goals=reachable, commands=[], note="")["goal_met"]

    # The same checkpoint read with test-time flips sits beside the plain reading, with its own verdict.
    result = CliRunner().invoke(main, ["eval", data, "--model", str(run), "--device", "cpu", "--tta", "hflip"])
    assert result.exit_code == 0, result.output
    flipped = json.loads((run / "eval-data-hflip.json").read_text())
    both = build_record(run, evaluation, off_the_shelf=None, goals=reachable, commands=[], note="", with_tta=[flipped])
    assert both["test"] == record["test"] and both["test_with_tta"]["hflip"]["map@r"] == flipped["metrics"]["map@r"]
    assert both["goal_met_with_tta"] == {"hflip": flipped["metrics"]["map@r"] >= evaluation["metrics"]["map@r"]}
    with pytest.raises(ValueError, match="without --tta"):
        build_record(run, flipped, off_the_shelf=None, goals={}, commands=[], note="")
    assert set(ENVIRONMENT_KEYS) <= set(record["environment"])


@pytest.mark.slow
def test_fashion_mnist_benchmark_writes_both_readings_and_resumes(tmp_path: Path) -> None:
    """A smoke run of the Fashion-MNIST script: P@1 with and without flips in [0, 1], and a second call on the same
    run dir resumes (no epoch trained again) and says after which epoch. Slow: it embeds the 10k test images twice."""
    if not (DATA / "fashion-mnist").exists():
        pytest.skip(f"fashion-mnist not found under {DATA} (set SIMSEARCH_DATA to the shared data folder)")
    from benchmarks import fashion_mnist

    run, out = tmp_path / "run", tmp_path / "fm.json"
    argv = ["--limit", "400", "--val-images", "100", "--set", "epochs=1", "--set", "batches_per_epoch=2"]
    argv += ["--set", "p=4", "--set", "k=4", "--set", "backbone=random:simsearch_conv4_wide"]
    argv += ["--threads", "1", "--run-dir", str(run), "--out", str(out)]
    fashion_mnist.main(argv)
    first = json.loads(out.read_text())
    for key in ("p@1", "p@1_hflip_tta"):  # a share of the 10k test images (rounded to 4 digits)
        assert first[key] * 10_000 == pytest.approx(round(first[key] * 10_000)) and 0 <= first[key] <= 1
    assert first["resumed_after_epoch"] == 0 and first["epochs_run"] == 1
    fashion_mnist.main(argv)
    again = json.loads(out.read_text())
    assert again["resumed_after_epoch"] == 1 and again["p@1"] == first["p@1"]


@pytest.mark.slow
def test_fashion_mnist_benchmark_without_validation_keeps_the_last_epoch(tmp_path: Path) -> None:
    """`--val-images 0` trains on every training image, with no validation split, and keeps the last epoch."""
    if not (DATA / "fashion-mnist").exists():
        pytest.skip(f"fashion-mnist not found under {DATA} (set SIMSEARCH_DATA to the shared data folder)")
    from benchmarks import fashion_mnist

    out = tmp_path / "fm.json"
    argv = ["--limit", "400", "--val-images", "0", "--set", "epochs=2", "--set", "batches_per_epoch=2"]
    argv += ["--set", "p=4", "--set", "k=4", "--set", "backbone=random:simsearch_conv4_wide"]
    argv += ["--threads", "1", "--out", str(out)]
    fashion_mnist.main(argv)
    record = json.loads(out.read_text())
    assert record["best_epoch"] == 2 and record["best_val"] == {}
    assert "none held out" in record["protocol"] and "last epoch" in record["note"]
    assert record["p@1"] * 10_000 == pytest.approx(round(record["p@1"] * 10_000)) and 0 <= record["p@1"] <= 1


def test_latency_percentiles_are_in_milliseconds_and_ordered() -> None:
    stats = suites.percentiles_ms(np.linspace(0.001, 0.1, 101), points=(50, 95, 99))
    assert stats["p50_ms"] == pytest.approx(50.5) and stats["p50_ms"] <= stats["p95_ms"] <= stats["p99_ms"] <= 100
    assert stats["min_ms"] == pytest.approx(1.0) and "p99_ms" not in suites.percentiles_ms([0.001, 0.002])


def test_the_training_benchmarks_build_their_recipe_as_the_library_s_train_config_changed_by_set(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One recipe object: each benchmark writes its recipe as a TrainConfig, and `--set FIELD=VALUE` changes it through
    the library's KEY=VALUE reading (the one `simsearch train --loss-option` uses); no JSON copies of its fields."""
    from benchmarks import caltech, fashion_mnist, omniglot
    from simsearch.runs import with_changes
    from simsearch.training import TrainConfig

    assert fashion_mnist.parse_args([]).recipe == fashion_mnist.RECIPE
    args = omniglot.parse_args(["--set", "loss=center", "--set", "augment_kwargs.hflip=0.5", "--set", "epochs=40"])
    assert isinstance(args.recipe, TrainConfig)
    assert args.recipe == with_changes(omniglot.RECIPE, {"loss": "center", "epochs": 40, "augment_kwargs.hflip": 0.5})
    assert args.recipe.augment_kwargs == {**omniglot.RECIPE.augment_kwargs, "hflip": 0.5}
    assert default_result_path("omniglot", args.recipe).name == "omniglot_center_simsearch_conv4_wide_40ep_seed0.json"
    args = caltech.parse_args(["--loss", "triplet", "center", "--set", "freeze_stages=4"])
    triplet = caltech.loss_recipe(args, "triplet")
    assert triplet.loss_kwargs == caltech.LOSS_OPTIONS["triplet"] and triplet.freeze_stages == 4
    assert caltech.loss_recipe(args, "multi_similarity").loss_kwargs == {}
    for module in (omniglot, fashion_mnist):
        with pytest.raises(SystemExit) as exit_info:
            module.parse_args(["--set", "epoch=3"])
        assert exit_info.value.code == 2
        assert "TrainConfig has no field 'epoch'; did you mean epochs?" in capsys.readouterr().err


def test_the_autoencoder_benchmark_removes_only_the_pictures_it_draws(tmp_path: Path) -> None:
    """A picture drawn by another command (the CVAE samples of `simsearch pretrain`) survives a run; one of this
    benchmark's pictures from a run with other code sizes does not."""
    import argparse

    import torch

    from benchmarks.autoencoders_output import draw_pictures

    kept, stale = tmp_path / "cvae_samples_code2.png", tmp_path / "reconstructions_code8.png"
    for path in (kept, stale):
        path.write_bytes(PNG_MAGIC)
    args = argparse.Namespace(seed=0, codes=[2, 16])
    written = draw_pictures(
        {},
        {},
        torch.zeros(3, 1, 28, 28),
        np.zeros(3),
        [],
        tmp_path,
        args,
        model_names=("vae",),
        conv_decoders=("conv_unpool",),
    )
    assert written == [] and sorted(p.name for p in tmp_path.iterdir()) == [kept.name]


def test_records_name_this_machines_folders_portably(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import REPO
    from benchmarks.record import _jsonable

    monkeypatch.setenv("SIMSEARCH_DATA", str(tmp_path / "data"))
    record = _jsonable({"out": REPO / "benchmarks" / "results", "data": str(tmp_path / "data"), "n": 3})
    assert record == {"out": "./benchmarks/results", "data": "$SIMSEARCH_DATA", "n": 3}
