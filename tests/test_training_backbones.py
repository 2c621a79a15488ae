"""Backbones in training: options (one channel, GeM) on random, pretrained and loaded models, and image sizes that an
autoencoder encoder or a fixed-size timm model cannot take, refused before any image is read."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from training_helpers import fashion_subset, make_classes, split_datasets, tiny_config

from simsearch.evaluation import embed_dataset
from simsearch.models import Embedder, create_transform, load_embedder
from simsearch.training import TrainConfig, TrainingError, build_embedder, train


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_classes(tmp_path_factory.mktemp("classes"), n_classes=6, per_class=6)


def test_a_random_one_channel_backbone_trains_and_its_checkpoint_embeds_grey_images(tmp_path: Path) -> None:
    data = fashion_subset(4)
    config = tiny_config(
        backbone="random:resnet10t", backbone_kwargs={"in_chans": 1}, image_size=28, p=4, k=2, epochs=1
    )
    result = train(dataclasses.replace(config, batches_per_epoch=2), data, None, tmp_path / "run")
    saved = json.loads((result.checkpoint / "config.json").read_text())
    assert saved["backbone_kwargs"] == {"in_chans": 1} and saved["recipe"]["backbone_kwargs"] == {"in_chans": 1}
    assert saved["data_config"]["input_size"] == [1, 28, 28] and len(saved["data_config"]["mean"]) == 1

    model = load_embedder(result.checkpoint)
    tensor = create_transform(model)(data[0][0])
    assert tensor.shape == (1, 28, 28)
    vectors, labels = embed_dataset(model, data)
    assert vectors.shape == (40, 16) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert labels.tolist() == data.labels.tolist()


def test_a_pretrained_backbone_with_in_chans_1_sums_its_rgb_stem_filters(default_embedder: Embedder) -> None:
    model = build_embedder(TrainConfig(backbone="default", backbone_kwargs={"in_chans": 1}, embed_dim=8))
    rgb = default_embedder.backbone.conv_stem.weight
    grey = model.backbone.conv_stem.weight
    assert grey.shape == (rgb.shape[0], 1, *rgb.shape[2:])
    assert torch.allclose(grey, rgb.sum(dim=1, keepdim=True), atol=1e-6)
    # Every other weight is the pretrained one.
    assert torch.equal(model.backbone.conv_head.weight, default_embedder.backbone.conv_head.weight)
    assert model.data_config["input_size"][0] == 1 and model.data_config["mean"] == (0.5,)
    # Without a projection head the rebuilt base model itself is returned: its config follows the new stem too.
    bare = build_embedder(TrainConfig(backbone="default", backbone_kwargs={"in_chans": 1}, embed_dim=None))
    assert bare.data_config["input_size"][0] == 1 and bare.data_config["mean"] == (0.5,)


def test_a_backbone_option_that_changes_the_weights_of_a_loaded_model_is_refused(tmp_path: Path) -> None:
    from simsearch.models import save_checkpoint
    from simsearch.models.registry import random_embedder

    checkpoint = save_checkpoint(random_embedder("test_resnet", embed_dim=8), tmp_path / "ckpt")
    with pytest.raises(TrainingError, match="stem_width change .* do not fit"):
        build_embedder(TrainConfig(backbone=str(checkpoint), backbone_kwargs={"stem_width": 24}))
    # An option that leaves the weights' shapes alone keeps the checkpoint's weights and records the option.
    model = build_embedder(TrainConfig(backbone=str(checkpoint), backbone_kwargs={"drop_rate": 0.1}, embed_dim=None))
    assert model.backbone_kwargs == {"drop_rate": 0.1}
    assert torch.equal(model.head.weight, load_embedder(checkpoint).head.weight)


def test_gem_on_a_loaded_backbone_keeps_its_weights_and_its_p_trains(data_root: Path, tmp_path: Path) -> None:
    from simsearch.models import GeM, save_checkpoint
    from simsearch.models.registry import random_embedder

    checkpoint = save_checkpoint(random_embedder("test_resnet", embed_dim=8), tmp_path / "ckpt")
    model = build_embedder(TrainConfig(backbone=str(checkpoint), backbone_kwargs={"gem_p": 2.0}, embed_dim=None))
    assert isinstance(model.backbone.global_pool, GeM) and model.backbone.global_pool.p.item() == 2.0
    before = load_embedder(checkpoint).backbone.state_dict()
    after = model.backbone.state_dict()
    assert set(after) - set(before) == {"global_pool.p"}
    assert all(torch.equal(before[k], after[k]) for k in before)

    config = tiny_config(backbone=str(checkpoint), backbone_kwargs={"gem_p": 2.0}, embed_dim=None, epochs=1)
    train(config, *split_datasets(data_root), tmp_path / "run")
    trained = load_embedder(tmp_path / "run")
    assert trained.backbone_kwargs == {"gem_p": 2.0}
    assert isinstance(trained.backbone.global_pool, GeM) and trained.backbone.global_pool.p.item() != 2.0
    # From a GeM checkpoint, p goes on from its learnt value, unless gem_p says where it starts.
    learnt = trained.backbone.global_pool.p.item()
    again = build_embedder(TrainConfig(backbone=str(tmp_path / "run"), backbone_kwargs={"drop_rate": 0.1}))
    assert again.backbone.global_pool.p.item() == learnt
    restarted = build_embedder(TrainConfig(backbone=str(tmp_path / "run"), backbone_kwargs={"gem_p": 3.0}))
    assert restarted.backbone.global_pool.p.item() == 3.0


def _ae_checkpoint(folder: Path) -> Path:
    """A tiny untrained conv-autoencoder checkpoint for 1x28x28 images, as `simsearch pretrain` writes one."""
    from simsearch.models import save_checkpoint
    from simsearch.models.registry import random_embedder

    ae = random_embedder("simsearch-ae:conv", input_shape=[1, 28, 28], code_dim=8, options={"channels": [4, 8]})
    return save_checkpoint(ae, folder)


class _Unreadable:
    """A labelled dataset whose images must not be read: proves a check ran before any data loading."""

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> object:
        raise AssertionError("an image was read")


def test_an_image_size_an_autoencoder_encoder_cannot_take_is_refused_before_any_image_is_read(tmp_path: Path) -> None:
    checkpoint = _ae_checkpoint(tmp_path / "ae")
    data = _Unreadable(np.repeat(np.arange(4), 3))
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"image_size 32 .* takes 1x28x28 images only: set it to 28"):
        train(tiny_config(backbone=str(checkpoint), image_size=32, p=4, k=2), data, None, out)
    assert not out.exists()
    # An untrained autoencoder backbone has the same fixed input.
    kwargs = {"input_shape": [1, 28, 28], "code_dim": 8, "options": {"channels": [4, 8]}}
    with pytest.raises(TrainingError, match="1x28x28 images only"):
        build_embedder(TrainConfig(backbone="random:simsearch-ae:conv", backbone_kwargs=kwargs, image_size=24))


def test_an_image_size_a_fixed_size_timm_backbone_cannot_take_is_refused_and_dynamic_size_fixes_it() -> None:
    # A ViT is built for 224 x 224 and asserts it at its first forward; the check runs it once, on a zero image.
    with pytest.raises(TrainingError, match=r"image_size 64 does not fit backbone vit_tiny_patch16_224 .*224"):
        build_embedder(TrainConfig(backbone="random:vit_tiny_patch16_224", image_size=64))
    fixed = build_embedder(
        TrainConfig(backbone="random:vit_tiny_patch16_224", backbone_kwargs={"dynamic_img_size": True}, image_size=64)
    )
    assert fixed.data_config["input_size"] == (3, 64, 64)
    unprobed = build_embedder(
        TrainConfig(backbone="random:vit_tiny_patch16_224", backbone_kwargs={"dynamic_img_size": True})
    )
    assert fixed.backbone.training == unprobed.backbone.training  # the probe leaves the mode as it found it
    # A convolutional net takes any size and passes.
    assert build_embedder(TrainConfig(backbone="random:simsearch_conv4", image_size=20)).embed_dim is not None


@pytest.mark.parametrize("image_size", [None, 28])
def test_an_autoencoder_checkpoint_trains_at_its_own_size_or_without_image_size(
    image_size: int | None, data_root: Path, tmp_path: Path
) -> None:
    checkpoint = _ae_checkpoint(tmp_path / "ae")
    train_set, _ = split_datasets(data_root)  # 32x32 RGB photos: the encoder's data config makes them 1x28x28
    config = tiny_config(backbone=str(checkpoint), image_size=image_size, epochs=1, p=4, k=2, batches_per_epoch=1)
    result = train(config, train_set, None, tmp_path / "run")
    assert result.epochs_run == 1
    saved = json.loads((result.checkpoint / "config.json").read_text())
    assert saved["backbone"] == "simsearch-ae:conv" and saved["data_config"]["input_size"] == [1, 28, 28]


def test_cli_train_refuses_an_autoencoder_backbone_at_another_image_size_in_one_line(
    data_root: Path, tmp_path: Path
) -> None:
    from cli.main import main

    checkpoint = _ae_checkpoint(tmp_path / "ae")
    args = ["train", str(data_root), "--out", str(tmp_path / "run"), "--backbone", str(checkpoint)]
    result = CliRunner().invoke(main, [*args, "--image-size", "32", "--device", "cpu", "-p", "3", "-k", "2", "-q"])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: image_size 32 does not fit backbone simsearch-ae:conv")
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()
