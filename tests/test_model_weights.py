"""Tests of weights files given with a model name: strict loading, other architectures, pickles, missing files
and unknown names."""

from __future__ import annotations

from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch

from simsearch.errors import ModelError
from simsearch.models import load_embedder, weights


def _classifier_state(name: str, seed: int) -> dict[str, torch.Tensor]:
    """A random-init full model's state dict, classifier included, as a downloaded file would hold it."""
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False, num_classes=1000).state_dict()


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_file_for_a_timm_name_loads_strictly_without_its_classifier(tmp_path: Path, suffix: str) -> None:
    state = _classifier_state("test_resnet", seed=1)
    assert any(k.startswith("fc.") for k in state)
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        safetensors.torch.save_file(state, str(path))
    else:
        torch.save({"state_dict": state, "epoch": 3}, path)  # nested, as training scripts save it
    e = load_embedder("test_resnet", weights=path)
    assert e.model_id == "file:test_resnet"
    assert e.weights_sha256 == weights.file_sha256(path)
    assert e.spec == {"kind": "file", "name": "test_resnet", "path": str(path.resolve())}
    loaded = e.backbone.state_dict()
    assert set(loaded) == {k for k in state if not k.startswith("fc.")}
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)


def test_local_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "resnet.safetensors"
    safetensors.torch.save_file(_classifier_state("test_resnet", seed=2), str(path))
    with pytest.raises(ModelError, match="do not fit"):
        load_embedder("test_efficientnet", weights=path)


class _NotATensor:
    pass


def test_a_pickle_holding_objects_is_refused_not_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(2), "payload": _NotATensor()}, path)
    with pytest.raises(ModelError, match="refusing"):
        load_embedder("test_resnet", weights=path)


def test_a_weights_file_without_a_name_and_a_missing_path_raise_model_errors(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    safetensors.torch.save_file(_classifier_state("test_resnet", seed=4), str(path))
    with pytest.raises(ModelError, match="--model"):
        load_embedder(path)
    with pytest.raises(ModelError, match="--model"):
        load_embedder(None, weights=path)
    with pytest.raises(ModelError, match="no such model file or folder"):
        load_embedder(str(tmp_path / "missing.pth"))
    with pytest.raises(ModelError, match="no such model file or folder"):
        load_embedder(str(tmp_path / "missing_folder") + "/")


def test_unknown_timm_name_raises_with_close_matches() -> None:
    with pytest.raises(ModelError, match="resnet18") as info:
        load_embedder("resnt18")
    assert "unknown model" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ModelError, match="no pretrained tag"):
        load_embedder("resnet18.no_such_tag")


def test_weights_without_batchnorm_step_counters_load_as_torch_strict_loading_accepts_them(tmp_path: Path) -> None:
    state = {k: v for k, v in _classifier_state("test_resnet", seed=5).items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old-export.safetensors"
    safetensors.torch.save_file(state, str(path))
    loaded = load_embedder("test_resnet", weights=path).backbone.state_dict()
    assert any(k.endswith("num_batches_tracked") for k in loaded)
    assert all(torch.equal(loaded[k], state[k]) for k in state if k in loaded)
    weight = next(k for k in state if k.endswith(".weight"))
    safetensors.torch.save_file({k: v for k, v in state.items() if k != weight}, str(path))
    with pytest.raises(ModelError, match=rf"1 missing \(e.g. {weight}\)"):  # a real weight is still required
        load_embedder("test_resnet", weights=path)
