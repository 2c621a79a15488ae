"""The small-image backbones (Conv-N, ResNet-20; timm-registered) and the training-augmentation options of a recipe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import timm.data
import torch
from click.testing import CliRunner
from PIL import Image

import simsearch  # noqa: F401 - registers the simsearch_* timm models
from simsearch.data import ArrayDataset
from simsearch.errors import ModelError
from simsearch.evaluation import embed_dataset
from simsearch.models import create_transform, load_embedder
from simsearch.models.convnet import ConvNet, SmallResNet
from simsearch.training import TrainConfig, TrainingError, build_embedder, train


def test_conv4_is_a_timm_model_that_pools_to_64_features_at_any_size() -> None:
    model = timm.create_model("simsearch_conv4", in_chans=1, num_classes=0).eval()
    assert model.num_features == 64
    with torch.no_grad():
        for side in (28, 105, 7):
            assert model(torch.rand(2, 1, side, side)).shape == (2, 64)
    config = timm.data.resolve_data_config(model=model)
    assert config["input_size"] == (3, 28, 28) and config["crop_pct"] == 1.0
    assert "simsearch_conv4" in timm.list_models("simsearch_*") and not timm.is_model_pretrained("simsearch_conv4")


def test_conv4_matches_a_plain_loop_over_its_blocks() -> None:
    torch.manual_seed(0)
    model = ConvNet((8, 16), in_chans=1).eval()
    x = torch.rand(3, 1, 12, 12)
    y = x
    for conv, bn in ((model.blocks[0][0], model.blocks[0][1]), (model.blocks[1][0], model.blocks[1][1])):
        y = torch.nn.functional.conv2d(y, conv.weight, padding=1)
        y = (y - bn.running_mean[None, :, None, None]) / torch.sqrt(bn.running_var[None, :, None, None] + bn.eps)
        y = y * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]
        y = torch.nn.functional.max_pool2d(y.clamp_min(0), 2, ceil_mode=True)
    with torch.no_grad():
        assert torch.allclose(model(x), y.mean(dim=(2, 3)), atol=1e-6)


def test_a_classifier_and_its_reset_follow_timm_conventions() -> None:
    model = timm.create_model("simsearch_conv4_wide", num_classes=5)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 5)
    model.reset_classifier(0)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 512)
    with pytest.raises(ValueError, match="widths"):
        ConvNet(widths=())


def test_resnet20_keeps_a_28_px_image_whole_until_its_second_stage() -> None:
    model = timm.create_model("simsearch_resnet20", in_chans=1, num_classes=0).eval()
    assert model.num_features == 64 and sum(p.numel() for p in model.parameters()) == 271_536  # He et al.: 0.27 M
    with torch.no_grad():
        assert model.forward_features(torch.rand(2, 1, 28, 28)).shape == (2, 64, 7, 7)
        assert model(torch.rand(2, 1, 32, 32)).shape == (2, 64)
    assert len(model.stages) == 3 and [len(stage) for stage in model.stages] == [3, 3, 3]
    assert timm.data.resolve_data_config(model=model)["input_size"] == (3, 32, 32)
    with pytest.raises(ValueError, match="one length"):
        SmallResNet(depths=(1, 1), widths=(8,))
    # An option these nets do not have is refused, not silently dropped (timm's ResNets take drop_path_rate).
    for name in ("simsearch_resnet20", "simsearch_conv4"):
        with pytest.raises(TypeError, match="drop_path_rate"):
            timm.create_model(name, drop_path_rate=0.1)


def test_resnet20_blocks_match_a_plain_residual_loop() -> None:
    """Every block is relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)); checked with random BatchNorm statistics, since
    the zero-initialised last BatchNorm would otherwise hide the residual branch."""
    torch.manual_seed(0)
    model = SmallResNet(depths=(1, 2), widths=(4, 8), in_chans=1).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)

    def bn(y: torch.Tensor, norm: torch.nn.BatchNorm2d) -> torch.Tensor:
        y = (y - norm.running_mean[None, :, None, None]) / torch.sqrt(norm.running_var[None, :, None, None] + norm.eps)
        return y * norm.weight[None, :, None, None] + norm.bias[None, :, None, None]

    x = torch.rand(2, 1, 12, 12)
    y = bn(torch.nn.functional.conv2d(x, model.stem[0].weight, padding=1), model.stem[1]).clamp_min(0)
    for stage in model.stages:
        for block in stage:
            stride = block.conv1.stride[0]
            inner = bn(torch.nn.functional.conv2d(y, block.conv1.weight, stride=stride, padding=1), block.bn1)
            inner = bn(torch.nn.functional.conv2d(inner.clamp_min(0), block.conv2.weight, padding=1), block.bn2)
            shortcut = y
            if block.downsample is not None:
                projected = torch.nn.functional.conv2d(y, block.downsample[0].weight, stride=stride)
                shortcut = bn(projected, block.downsample[1])
            y = (inner + shortcut).clamp_min(0)
    assert y.shape == (2, 8, 6, 6)
    with torch.no_grad():
        assert torch.allclose(model(x), y.mean(dim=(2, 3)), atol=1e-5)


def test_conv4_has_no_pretrained_weights_to_load_by_name() -> None:
    with pytest.raises(ModelError, match="no pretrained weights"):
        load_embedder("simsearch_conv4")


def _grey_classes(n_classes: int = 4, per_class: int = 4) -> ArrayDataset:
    """Grey 28x28 images whose class is the position of a bright square: learnable, and what a grey net sees."""
    rng = np.random.default_rng(0)
    images, labels = [], []
    for c in range(n_classes):
        for _ in range(per_class):
            image = rng.integers(0, 40, (28, 28)).astype(np.uint8)
            row, col = divmod(c, 2)
            image[row * 14 : row * 14 + 10, col * 14 : col * 14 + 10] = 255
            images.append(image)
            labels.append(c)
    return ArrayDataset(np.stack(images), np.array(labels))


def test_a_grey_conv4_trains_and_its_checkpoint_reloads_with_the_same_embeddings(tmp_path: Path) -> None:
    data = _grey_classes()
    config = TrainConfig(
        backbone="random:simsearch_conv4",
        backbone_kwargs={"in_chans": 1},
        embed_dim=8,
        epochs=1,
        p=2,
        k=2,
        batches_per_epoch=2,
        augment=True,
        augment_kwargs={"hflip": 0, "scale": [0.8, 1.0], "color_jitter": 0},
        device="cpu",
        patience=None,
    )
    result = train(config, data, None, tmp_path / "run")
    model = load_embedder(result.checkpoint)
    assert model.arch == "simsearch_conv4" and model.data_config["input_size"] == (1, 28, 28)
    assert create_transform(model)(data[0][0]).shape == (1, 28, 28)
    first, _ = embed_dataset(model, data)
    again, _ = embed_dataset(load_embedder(result.checkpoint), data)
    assert first.shape == (16, 8) and np.array_equal(first, again)


def test_augment_options_reach_timm_s_training_transform() -> None:
    from simsearch.training.model import train_transform

    embedder = build_embedder(TrainConfig(backbone="random:simsearch_conv4", backbone_kwargs={"in_chans": 1}))
    default = repr(train_transform(embedder, True))
    chosen = repr(train_transform(embedder, True, {"hflip": 0, "scale": [0.5, 1.0], "re_prob": 0.25}))
    assert "RandomHorizontalFlip" in default and "RandomHorizontalFlip" not in chosen
    assert "scale=(0.5, 1.0)" in chosen and "RandomErasing" in chosen and "RandomErasing" not in default
    # Still a transform of grey images to (1, 28, 28) tensors.
    tensor = train_transform(embedder, True, {"hflip": 0})(Image.new("L", (105, 105), 255))
    assert tensor.shape == (1, 28, 28)


def test_an_unknown_or_bad_augment_option_is_a_training_error() -> None:
    from simsearch.training.model import train_transform

    with pytest.raises(TrainingError, match="unknown augmentation option.*bogus"):
        TrainConfig(augment_kwargs={"bogus": 1}).check()
    for bad in ({"scale": "wide"}, {"scale": [1.0, 0.5]}, {"ratio": [1.0]}, {"hflip": 2}, {"re_prob": "x"}):
        with pytest.raises(TrainingError, match=f"option {next(iter(bad))} "):
            TrainConfig(augment_kwargs=bad).check()
    embedder = build_embedder(TrainConfig(backbone="random:simsearch_conv4", embed_dim=None))
    with pytest.raises(TrainingError, match="bad augmentation options"):
        train_transform(embedder, True, {"re_mode": "nonsense", "re_prob": 1.0})
    # Without augmentation the options are not used at all: the training transform is the eval one.
    assert repr(train_transform(embedder, False, {"hflip": 0})) == repr(create_transform(embedder))


def test_cli_train_refuses_an_unknown_augment_option_in_one_line(tmp_path: Path) -> None:
    from cli.main import main

    root = tmp_path / "classes"
    data = _grey_classes()
    for i, (image, label) in enumerate(data):
        (root / f"c{label}").mkdir(parents=True, exist_ok=True)
        image.save(root / f"c{label}" / f"{i}.png")
    args = ["train", str(root), "--out", str(tmp_path / "run"), "--backbone", "random:simsearch_conv4"]
    args += ["--device", "cpu", "-p", "2", "-k", "2", "--augment-option", "bogus=1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert "bogus" in result.output and "Traceback" not in result.output
