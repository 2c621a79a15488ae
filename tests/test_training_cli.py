"""The `train` and `eval` commands: options reach the recipe, conflicts are one-line errors, a trained checkpoint
evaluates and indexes, an LMDB store trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from training_helpers import TINY, fashion_subset, make_classes

from simsearch.data import write_lmdb_dataset
from simsearch.models import create_transform, load_embedder
from simsearch.training import LAST_DIR, STATE_FILE


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_classes(tmp_path_factory.mktemp("classes"), n_classes=6, per_class=6)


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


def test_cli_train_reports_a_bad_loss_option_in_one_line(data_root: Path, tmp_path: Path) -> None:
    from cli.main import main

    args = ["train", str(data_root), "--out", str(tmp_path / "run"), "--backbone", TINY, "--device", "cpu"]
    args += ["-p", "3", "-k", "2", "--loss-option", "bogus=1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert "bogus" in result.output and "Traceback" not in result.output


def test_cli_trains_on_an_lmdb_store_with_pairs_and_a_backbone_option(tmp_path: Path) -> None:
    from cli.main import main

    store = tmp_path / "fashion.lmdb"
    write_lmdb_dataset(fashion_subset(6), store)
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
