"""A pretrained autoencoder checkpoint in the rest of simsearch: as the model of `index` and `query`, and as the
start of metric training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pretraining_helpers import _png_folder

from simsearch.models import load_embedder
from simsearch.pretraining import load_autoencoder
from simsearch.training import TrainConfig, train

pytest_plugins = ["pretraining_helpers"]  # the conv_run, fashion, unpool_run fixtures


@pytest.mark.parametrize("run", ["conv_run", "unpool_run"])
def test_index_and_query_commands_take_the_checkpoint_as_model(run: str, fashion, tmp_path: Path, request) -> None:
    from cli.main import main

    out, _ = request.getfixturevalue(run)
    folder = _png_folder(fashion, tmp_path / "images", per_class=3)
    collection = tmp_path / "col"
    runner = CliRunner()
    args = ["index", str(folder), "-c", str(collection), "--model", str(out), "--device", "cpu", "--workers", "0"]
    indexed = runner.invoke(main, [*args, "-q", "--json"])
    assert indexed.exit_code == 0, indexed.output
    assert json.loads(indexed.stdout)["images"] == 12
    query = next(folder.rglob("*.png"))
    found = runner.invoke(main, ["query", str(query), "-c", str(collection), "-k", "3", "--json", "--device", "cpu"])
    assert found.exit_code == 0, found.output
    assert Path(json.loads(found.stdout)["results"][0]["path"]).resolve() == query.resolve()


@pytest.mark.parametrize("run", ["conv_run", "unpool_run"])
def test_metric_training_starts_from_the_pretrained_encoder(run: str, fashion, tmp_path: Path, request) -> None:
    out, _ = request.getfixturevalue(run)
    config = TrainConfig(
        backbone=str(out),
        embed_dim=4,
        loss="triplet",
        epochs=1,
        p=4,
        k=2,
        batches_per_epoch=2,
        warmup_epochs=0,
        patience=None,
        device="cpu",
    )
    result = train(config, fashion, None, tmp_path / "metric")
    assert result.epochs_run == 1
    tuned = load_embedder(tmp_path / "metric")
    assert tuned.arch == "simsearch-ae:conv" and tuned.embed_dim == 4
    backbone_kwargs = json.loads((tmp_path / "metric" / "config.json").read_text())["backbone_kwargs"]
    assert backbone_kwargs["code_dim"] == 8
    assert backbone_kwargs["options"] == load_autoencoder(out).options  # e.g. the unpool decoder's pooling encoder


@pytest.mark.parametrize("option", [{"in_chans": 1}, {"gem_p": 3.0}])
def test_timm_options_on_the_pretrained_encoder_are_refused_by_name(conv_run, option: dict[str, Any]) -> None:
    from simsearch.errors import SimSearchError
    from simsearch.training import build_embedder

    out, _ = conv_run
    config = TrainConfig(backbone=str(out), embed_dim=4, device="cpu", backbone_kwargs=option)
    with pytest.raises(SimSearchError, match=f"takes no backbone option {next(iter(option))}: .* fixed by its pretr"):
        build_embedder(config)
