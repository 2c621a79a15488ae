"""Tests of GeM pooling: the formula against a plain loop, the swap into timm backbones, checkpoints and training."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from timm.layers import SelectAdaptivePool2d

from simsearch.errors import ModelError
from simsearch.models import GeM, create_backbone, load_embedder, save_checkpoint, use_gem
from simsearch.models.embedder import Embedder


def _gem_reference(x: torch.Tensor, p: float) -> list[list[float]]:
    """(mean over pixels of max(v, eps)^p)^(1/p) per image and channel, one value at a time."""
    out = []
    for image in x.tolist():
        row = []
        for channel in image:
            values = [max(v, 1e-6) ** p for line in channel for v in line]
            row.append((sum(values) / len(values)) ** (1 / p))
        out.append(row)
    return out


@pytest.mark.parametrize("p", [1.0, 1.5, 3.0])
def test_gem_matches_a_plain_loop_and_p_1_is_average_pooling(p: float) -> None:
    x = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    x[0, 0, 0, 0] = -1.0  # a negative activation counts as eps
    got = GeM(p)(x)
    assert got.shape == (2, 3)
    torch.testing.assert_close(got, torch.tensor(_gem_reference(x, p)), rtol=1e-5, atol=1e-6)
    if p == 1.0:
        torch.testing.assert_close(got, x.clamp(min=1e-6).mean((2, 3)))


def test_gem_tends_to_max_pooling_and_its_p_gets_a_gradient() -> None:
    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(1)) + 0.1
    torch.testing.assert_close(GeM(200.0)(x), x.amax((2, 3)), rtol=0.02, atol=0)
    gem = GeM(2.0)
    gem(x).sum().backward()
    assert gem.p.grad is not None and math.isfinite(float(gem.p.grad)) and float(gem.p.grad) != 0.0


@pytest.mark.parametrize("arch", ["tf_efficientnet_lite0", "test_resnet"])
def test_gem_p_1_in_a_timm_backbone_gives_its_average_pooled_features(arch: str) -> None:
    gem = create_backbone(arch, gem_p=1.0).eval()
    plain = create_backbone(arch).eval()
    state = gem.state_dict()
    assert state.pop("global_pool.p").item() == 1.0
    plain.load_state_dict(state)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        # Both nets end in a ReLU(6), so the clamp at eps changes nothing but rounding.
        torch.testing.assert_close(gem(x), plain(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["test_efficientnet", "test_convnext"])
@pytest.mark.parametrize("pool", ["avg", "fast"])
def test_gem_p_1_pools_as_the_timm_layer_it_replaces_in_each_layout(arch: str, pool: str) -> None:
    # ConvNeXt pools without flattening (a norm follows); the fast pools flatten themselves.
    original = create_backbone(arch, global_pool=pool)
    layer_name = next(n for n, m in original.named_modules() if isinstance(m, SelectAdaptivePool2d))
    gem_layer = create_backbone(arch, global_pool=pool, gem_p=1.0).get_submodule(layer_name)
    assert isinstance(gem_layer, GeM)
    feature_map = torch.rand(2, 5, 3, 4, generator=torch.Generator().manual_seed(5)) + 0.01
    torch.testing.assert_close(gem_layer(feature_map), original.get_submodule(layer_name)(feature_map))


def test_gem_is_refused_without_a_feature_map_or_with_a_bad_p() -> None:
    with pytest.raises(ModelError, match="no timm global pooling layer"):
        create_backbone("test_vit", gem_p=3.0)
    for pool in ("max", "catavgmax", "fastcatavgmax"):
        with pytest.raises(ModelError, match=f"gem_p replaces average pooling, but .* pools with '{pool}'"):
            create_backbone("test_resnet", global_pool=pool, gem_p=3.0)
    for bad in (0, -1.0, "3", True):
        with pytest.raises(ModelError, match="gem_p must be a number > 0"):
            use_gem(create_backbone("test_resnet"), bad)  # type: ignore[arg-type]


def test_a_checkpoint_with_gem_keeps_its_learnt_p(tmp_path: Path) -> None:
    backbone = create_backbone("test_efficientnet", gem_p=3.0)
    with torch.no_grad():
        backbone.global_pool.p.fill_(2.25)
    embedder = Embedder(backbone, arch="test_efficientnet", embed_dim=8, backbone_kwargs={"gem_p": 3.0})
    save_checkpoint(embedder, tmp_path / "ckpt")
    loaded = load_embedder(tmp_path / "ckpt")
    assert isinstance(loaded.backbone.global_pool, GeM) and loaded.backbone.global_pool.p.item() == 2.25
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    loaded.use_channels_last(False)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), embedder.eval()(x))
