"""What training leaves alone: a frozen backbone, frozen first stages, frozen BatchNorm statistics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training_helpers import last_state, make_classes, split_datasets, tiny_config

from simsearch.training import TrainConfig, TrainingError, build_embedder, train


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_classes(tmp_path_factory.mktemp("classes"), n_classes=6, per_class=6)


def test_frozen_backbone_epochs_change_the_head_only(data_root: Path, tmp_path: Path) -> None:
    train_set, val_set = split_datasets(data_root)
    # Both runs start from the same weights (same seed); one trains its backbone, the other keeps it frozen.
    train(tiny_config(epochs=1, batches_per_epoch=2), train_set, val_set, tmp_path / "free")
    before = last_state(tmp_path / "free")["model"]
    train(tiny_config(epochs=1, batches_per_epoch=2, freeze_backbone_epochs=1), train_set, val_set, tmp_path / "frozen")
    after = last_state(tmp_path / "frozen")["model"]

    torch.manual_seed(0)
    start = build_embedder(tiny_config()).state_dict()
    for name, value in after.items():
        if name.startswith("backbone."):
            assert torch.equal(value, start[name]), f"{name} moved while the backbone was frozen"
    assert not torch.equal(after["head.weight"], start["head.weight"])
    # The unfrozen run moved its backbone.
    assert any(not torch.equal(before[n], start[n]) for n in before if n.startswith("backbone."))


def test_freeze_stages_keeps_the_stem_and_first_stages_as_they_were_even_after_the_backbone_thaws(
    data_root: Path, tmp_path: Path
) -> None:
    train_set, val_set = split_datasets(data_root)
    config = tiny_config(epochs=2, batches_per_epoch=2, freeze_stages=2, freeze_backbone_epochs=1)
    torch.manual_seed(config.seed)
    start = build_embedder(config).state_dict()
    train(config, train_set, val_set, tmp_path / "run")
    after = last_state(tmp_path / "run")["model"]
    fixed = ("backbone.conv_stem.", "backbone.bn1.", "backbone.blocks.0.", "backbone.blocks.1.")
    frozen = [name for name in after if name.startswith(fixed)]
    assert any(name.endswith("running_mean") for name in frozen)
    assert all(torch.equal(after[name], start[name]) for name in frozen), "a frozen stage moved"
    later = [name for name in after if name.startswith("backbone.blocks.4.") and name.endswith(".weight")]
    assert later and all(not torch.equal(after[name], start[name]) for name in later)
    # No gradient reaches the fixed part, so no backward pass runs through it (the time an epoch saves).
    from simsearch.training.model import frozen_stages, set_backbone_frozen

    embedder = build_embedder(config)
    fixed_params, fixed_modules = frozen_stages(embedder.backbone, 2)
    set_backbone_frozen(embedder, False, fixed_params)
    assert not any(p.requires_grad for module in fixed_modules for p in module.parameters())
    assert all(p.requires_grad for p in embedder.backbone.blocks[2].parameters())


def test_freeze_stages_of_a_vit_fix_its_patch_embedding_tokens_and_first_blocks() -> None:
    import timm

    from simsearch.training import frozen_stages

    vit = timm.create_model("vit_tiny_patch16_224", num_classes=0)
    params, modules = frozen_stages(vit, 2)
    names = {name for name, p in vit.named_parameters() if any(p is q for q in params)}
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.1.mlp.fc2.bias"} <= names
    assert not any(name.startswith(("blocks.2.", "norm.")) for name in names)
    assert vit.blocks[0] in modules and vit.blocks[2] not in modules and vit not in modules


def test_freeze_stages_is_refused_when_nothing_would_train_or_there_are_no_stages(
    data_root: Path, tmp_path: Path
) -> None:
    train_set, val_set = split_datasets(data_root)
    with pytest.raises(TrainingError, match="a stem and 5 layer groups after it, so at most 4"):
        train(tiny_config(freeze_stages=5), train_set, val_set, tmp_path / "all")
    with pytest.raises(TrainingError, match="no layer groups"):
        config = tiny_config(backbone="random:simsearch_conv4", freeze_stages=1, image_size=28)
        train(config, train_set, val_set, tmp_path / "conv4")
    # GeM's p is pooling, not one more stage: it does not raise the limit.
    with pytest.raises(TrainingError, match="a stem and 5 layer groups after it, so at most 4"):
        train(tiny_config(freeze_stages=5, backbone_kwargs={"gem_p": 2.0}), train_set, val_set, tmp_path / "gem")


@pytest.mark.parametrize("crop_pct", [0.0, -0.5, 1.5])
def test_a_crop_pct_outside_0_to_1_is_refused(crop_pct: float) -> None:
    with pytest.raises(TrainingError, match=r"crop_pct must be in \(0, 1\]"):
        TrainConfig(crop_pct=crop_pct).check()


def _bn_means(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: value for name, value in state.items() if name.endswith("running_mean")}


@pytest.mark.parametrize("freeze_bn", [True, False], ids=["frozen", "free"])
def test_freeze_bn_keeps_every_running_statistic_while_the_weights_train(
    data_root: Path, tmp_path: Path, freeze_bn: bool
) -> None:
    train_set, val_set = split_datasets(data_root)
    config = tiny_config(epochs=1, batches_per_epoch=2, freeze_bn=freeze_bn)
    torch.manual_seed(config.seed)
    start = build_embedder(config).state_dict()
    train(config, train_set, val_set, tmp_path / "run")
    after = last_state(tmp_path / "run")["model"]
    means = _bn_means(after)
    assert means, "the test backbone has no BatchNorm"
    moved = [name for name, value in means.items() if not torch.equal(value, start[name])]
    assert (not moved) if freeze_bn else (len(moved) == len(means))
    assert not torch.equal(after["backbone.conv_stem.weight"], start["backbone.conv_stem.weight"])
