"""Tests of model checkpoints: round trips, a crash half-way through a save, format versions, data configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors.torch
import torch
from model_helpers import _random_images

from simsearch.errors import ModelError
from simsearch.models import load_embedder, registry, save_checkpoint, weights


def test_checkpoint_round_trip_reproduces_outputs_and_config(tmp_path: Path) -> None:
    original = registry.random_embedder("test_efficientnet", embed_dim=32)
    folder = save_checkpoint(original, tmp_path / "ckpt", extra_config={"recipe": {"loss": "triplet"}})
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == "simsearch-checkpoint" and config["version"] == 1
    assert config["backbone"] == "test_efficientnet" and config["embed_dim"] == 32
    assert config["recipe"] == {"loss": "triplet"}
    saved = safetensors.torch.load_file(str(folder / "model.safetensors"))
    assert all(k.startswith(("backbone.", "head.")) for k in saved) and "head.weight" in saved

    loaded = load_embedder(folder)
    assert loaded.model_id == "checkpoint:ckpt"
    assert loaded.weights_sha256 == weights.file_sha256(folder / "model.safetensors")
    assert loaded.spec == {"kind": "checkpoint", "name": "test_efficientnet", "path": str(folder.resolve())}
    assert loaded.embed_dim == 32 and loaded.data_config == original.data_config
    x = _random_images(4, original.data_config["input_size"][-1])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), original(x), atol=1e-6, rtol=1e-5)


def test_checkpoint_without_head_has_only_backbone_keys_and_round_trips(tmp_path: Path) -> None:
    original = registry.random_embedder("test_resnet")
    folder = save_checkpoint(original, tmp_path / "plain")
    assert json.loads((folder / "config.json").read_text())["embed_dim"] is None
    assert all(k.startswith("backbone.") for k in safetensors.torch.load_file(str(folder / "model.safetensors")))
    loaded = load_embedder(str(folder))
    assert loaded.embed_dim == original.embed_dim == original.backbone.num_features
    x = _random_images(2, original.data_config["input_size"][-1])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), original(x), atol=1e-6, rtol=1e-5)


def test_a_crash_between_the_weights_and_the_config_leaves_a_checkpoint_that_says_it_is_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The weights are written first and config.json last, recording their size and SHA-256: a crash between the two
    writes leaves new weights beside the old config, which loading refuses in one line instead of mixing them."""
    from simsearch.models import checkpoint

    first = registry.random_embedder("test_resnet", embed_dim=4)
    folder = save_checkpoint(first, tmp_path / "ckpt", extra_config={"metrics": {"epoch": 1}})
    recorded = json.loads((folder / "config.json").read_text())["files"]["model.safetensors"]
    assert recorded == {
        "bytes": (folder / "model.safetensors").stat().st_size,
        "sha256": weights.file_sha256(folder / "model.safetensors"),
    }
    assert load_embedder(folder).weights_sha256 == recorded["sha256"]

    real_write_text = checkpoint.atomic_write_text

    def crash(path: object, text: str) -> None:
        raise KeyboardInterrupt  # the process dies after the weights' rename, before the config's

    monkeypatch.setattr(checkpoint, "atomic_write_text", crash)
    torch.manual_seed(1)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(registry.random_embedder("test_resnet", embed_dim=4), folder, {"metrics": {"epoch": 2}})
    assert json.loads((folder / "config.json").read_text())["metrics"] == {"epoch": 1}  # the old config is intact
    assert weights.file_sha256(folder / "model.safetensors") != recorded["sha256"]  # beside the new weights
    with pytest.raises(ModelError, match="half-written: model.safetensors is not the file its config.json describes"):
        load_embedder(folder)
    try:
        load_embedder(folder)
    except ModelError as exc:
        assert "\n" not in str(exc)

    # The next complete save makes it whole again; a config from before "files" existed is read as before.
    monkeypatch.setattr(checkpoint, "atomic_write_text", real_write_text)
    save_checkpoint(first, folder)
    assert load_embedder(folder).weights_sha256 == recorded["sha256"]
    config = json.loads((folder / "config.json").read_text())
    del config["files"]
    (folder / "config.json").write_text(json.dumps(config))
    assert load_embedder(folder).embed_dim == 4
    with pytest.raises(ModelError, match="reserved checkpoint keys: files"):
        save_checkpoint(first, folder, extra_config={"files": {}})


def test_checkpoint_of_a_newer_format_version_or_a_plain_folder_is_refused(tmp_path: Path) -> None:
    folder = save_checkpoint(registry.random_embedder("test_resnet"), tmp_path / "future")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "version": 99}))
    with pytest.raises(ModelError, match="newer"):
        load_embedder(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not a simsearch checkpoint"):
        load_embedder(tmp_path / "empty")


@pytest.mark.parametrize(
    ("data_config", "message"),
    [
        ({"input_size": [3, 28]}, "input_size must be 3 positive integers"),
        ({"input_size": "abc"}, "input_size must be 3 positive integers"),
        ({"input_size": [3, 0, 28]}, "input_size must be 3 positive integers"),
        ({"input_size": [3, 28, 28], "mean": "abc"}, "mean must be 3 numbers"),
        ({"input_size": [1, 28, 28], "mean": [0.5, 0.5, 0.5]}, "mean must be 1 numbers"),
        ({"std": [0.5, 0.0, 0.5]}, "std must be positive"),
        ({"interpolation": "nope"}, "interpolation 'nope' is unknown"),
        ({"crop_pct": 0}, "crop_pct must be a number > 0"),
        ({"crop_pct": "0.9"}, "crop_pct must be a number > 0"),
        ({"crop_mode": "nope"}, "crop_mode 'nope' is unknown"),
        ({"input_size": [3, 28, 28], "crop_size": 20}, "has unknown keys crop_size"),
    ],
)
def test_a_malformed_data_config_in_a_checkpoint_is_a_one_line_model_error(
    tmp_path: Path, data_config: dict[str, object], message: str
) -> None:
    folder = save_checkpoint(registry.random_embedder("simsearch_conv4", embed_dim=4), tmp_path / "ckpt")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "data_config": data_config}))
    with pytest.raises(ModelError, match=f"config.json: data_config {message}") as info:
        load_embedder(folder)
    assert "\n" not in str(info.value)


def test_a_checkpoint_keeps_a_crop_pct_above_one_as_timm_gives_some_models(tmp_path: Path) -> None:
    folder = save_checkpoint(registry.random_embedder("simsearch_conv4", embed_dim=4), tmp_path / "ckpt")
    config = json.loads((folder / "config.json").read_text())
    config["data_config"]["crop_pct"] = 1.15  # volo_d5_512's, resized to 1.15x the input then centre-cropped
    (folder / "config.json").write_text(json.dumps(config))
    assert load_embedder(folder).data_config["crop_pct"] == 1.15
