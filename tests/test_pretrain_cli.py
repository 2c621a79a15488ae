"""The `pretrain` command: training on a class folder with JSON out, one-line errors, and the kinds it lists."""

from __future__ import annotations

import json
from pathlib import Path

from pretraining_helpers import _invoke, _png_folder

from simsearch.autoencoders import KINDS

pytest_plugins = ["pretraining_helpers"]  # the fashion fixture


def test_pretrain_command_trains_on_a_class_folder_and_prints_json(fashion, tmp_path: Path) -> None:
    folder = _png_folder(fashion, tmp_path / "images", per_class=8)
    out = tmp_path / "ckpt"
    result = _invoke(
        [folder, "--kind", "vae", "--beta", "0.5", "--code-dim", "2", "--epochs", "1", "--batch-size", "16"]
        + ["--option", "channels=[8,16]", "--out", out, "--device", "cpu", "--json", "-q"]
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["epochs_run"] == 1 and record["checkpoint"] == str(out)
    assert sorted(Path(p).name for p in record["pictures"]) == [
        "interpolation.png",
        "latent.png",
        "reconstructions.png",
        "samples.png",
    ]
    options = json.loads((out / "config.json").read_text())["autoencoder"]["options"]
    assert options["beta"] == 0.5 and options["channels"] == [8, 16]


def test_pretrain_command_turns_bad_input_into_one_line_errors(fashion, tmp_path: Path) -> None:
    folder = _png_folder(fashion, tmp_path / "images", per_class=2)
    unknown = _invoke([folder, "--kind", "conv", "--option", "hidden=[4]", "--out", tmp_path / "x", "-q"])
    assert unknown.exit_code == 1 and "Error:" in unknown.output and "Traceback" not in unknown.output
    assert "hidden" in unknown.output
    clash = _invoke([folder, "--kind", "vae", "--beta", "1", "--option", "beta=2", "--out", tmp_path / "y"])
    assert clash.exit_code == 2 and "disagree" in clash.output
    missing = _invoke(["no-such-folder", "--out", tmp_path / "z"])
    assert missing.exit_code == 2 and "fashion-mnist" in missing.output
    unpool_vae = _invoke([folder, "--kind", "vae", "--decoder", "unpool", "--out", tmp_path / "u", "-q"])
    assert unpool_vae.exit_code == 1 and "cannot decode prior samples" in unpool_vae.output
    assert "Traceback" not in unpool_vae.output
    negative = _invoke([folder, "--seed", "-1", "--out", tmp_path / "s", "-q"])
    assert negative.exit_code == 2 and "--seed" in negative.output and "Traceback" not in negative.output


def test_a_shared_set_name_without_the_data_folder_names_the_variable(tmp_path: Path) -> None:
    result = _invoke(["omniglot", "--out", tmp_path / "o", "-q"], env={"SIMSEARCH_DATA": str(tmp_path / "nothing")})
    assert result.exit_code == 1 and "SIMSEARCH_DATA" in result.output


def test_the_command_lists_the_same_kinds_as_the_library() -> None:
    from cli.pretrain import KINDS as CLI_KINDS

    assert CLI_KINDS == KINDS
