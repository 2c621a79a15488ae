"""Small backbones for small images (28-32 px), registered as timm models so every timm path takes them.

Conv-N is the small backbone of the few-shot literature; the small ResNet is He et al.'s CIFAR network.

Blocks of 3x3 conv, BatchNorm, ReLU and 2x2 max-pool, then a global average pool. Four blocks of 64 on 28 x 28
images (`simsearch_conv4`) is the network of Matching Networks (Vinyals et al. 2016) and Prototypical Networks (Snell
et al. 2017): the published Omniglot results were measured with it, so a comparison with them uses it too. On a
2-core CPU it trains at about 1,200 images/s, where resnet10t at 84 px trains at about 100.

Importing this module registers the names; `simsearch.models.backbones` imports it, so `random:simsearch_conv4` and
`timm.create_model("simsearch_conv4", in_chans=1, num_classes=0)` both work once simsearch is imported. There are no
pretrained weights: these nets are trained from scratch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, downsample_conv
from torch import nn

__all__ = ["ConvNet", "SmallResNet"]


class _PooledNet(nn.Module):
    """What both small nets share after their feature map: average pooling, dropout and an optional linear
    classifier, behind timm's hooks (`get_classifier`, `reset_classifier`, `forward_head`)."""

    num_features: int

    def _init_head(self, channels: int, num_classes: int, drop_rate: float) -> None:
        self.num_features = channels
        self.head_hidden_size = channels
        self.drop = nn.Dropout(drop_rate)
        self.num_classes = num_classes
        self.fc: nn.Module = nn.Linear(channels, num_classes) if num_classes else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """timm's hook for swapping the classifier; only average pooling exists here."""
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(x.mean(dim=(2, 3)))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class ConvNet(_PooledNet):
    """`len(widths)` conv blocks, each halving the side; `(N, C, H, W)` -> `(N, widths[-1])` pooled features.

    Args:
        widths: Output channels of each block.
        in_chans: Input channels (1 for grey images).
        num_classes: A linear classifier on the pooled features; 0 gives the features (timm's convention).
        drop_rate: Dropout before the classifier.
    """

    def __init__(
        self,
        widths: Sequence[int] = (64, 64, 64, 64),
        in_chans: int = 3,
        num_classes: int = 0,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if not widths or any(int(w) < 1 for w in widths):
            raise ValueError(f"widths must be positive channel counts, got {list(widths)}")
        blocks: list[nn.Module] = []
        channels = in_chans
        for width in widths:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(channels, int(width), 3, padding=1, bias=False),
                    nn.BatchNorm2d(int(width)),
                    nn.ReLU(inplace=True),
                    # ceil_mode keeps a side of 1 (28 -> 14 -> 7 -> 4 -> 2) instead of failing on an odd side.
                    nn.MaxPool2d(2, ceil_mode=True),
                )
            )
            channels = int(width)
        self.blocks = nn.Sequential(*blocks)
        self._init_head(channels, num_classes, drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """`(N, C, H, W)` -> `(N, widths[-1], H / 2^n, W / 2^n)` feature map."""
        return self.blocks(x)


class SmallResNet(_PooledNet):
    """The CIFAR ResNet of He et al. 2016 (section 4.2): a 3x3 stem at full resolution, then stages of timm's basic
    blocks, each stage after the first halving the side. ImageNet ResNets quarter a 28 px image in their stem, which
    leaves too little of it; this keeps it whole, at about the compute of Conv-4 wide for ResNet-20.

    Args:
        depths: Basic blocks per stage (3, 3, 3 is ResNet-20).
        widths: Channels of each stage.
        in_chans: Input channels (1 for grey images).
        num_classes: A linear classifier on the pooled features; 0 gives the features (timm's convention).
        drop_rate: Dropout before the classifier.
    """

    def __init__(
        self,
        depths: Sequence[int] = (3, 3, 3),
        widths: Sequence[int] = (16, 32, 64),
        in_chans: int = 3,
        num_classes: int = 0,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if len(depths) != len(widths) or not widths or any(int(v) < 1 for v in (*depths, *widths)):
            raise ValueError(f"depths and widths must be positive and of one length: {list(depths)}, {list(widths)}")
        channels = int(widths[0])
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)
        )
        stages: list[nn.Module] = []
        for index, (depth, width) in enumerate(zip(depths, widths, strict=True)):
            width, stride = int(width), 1 if index == 0 else 2
            blocks: list[nn.Module] = []
            for block in range(int(depth)):
                down = None
                if block == 0 and (stride != 1 or channels != width):
                    down = downsample_conv(channels, width, 1, stride=stride, norm_layer=nn.BatchNorm2d)
                blocks.append(BasicBlock(channels, width, stride=stride if block == 0 else 1, downsample=down))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        for module in self.modules():  # each residual branch starts as the identity, as timm's ResNet does
            if isinstance(module, BasicBlock):
                module.zero_init_last()
        self._init_head(channels, num_classes, drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """`(N, C, H, W)` -> `(N, widths[-1], H / 2^(stages-1), W / 2^(stages-1))` feature map."""
        return self.stages(self.stem(x))


def _cfg(**overrides: Any) -> dict[str, Any]:
    # Grey or colour images in [0, 1] centred at 0.5: BatchNorm after the first conv makes the exact values moot.
    return {
        "num_classes": 0,
        "input_size": (3, 28, 28),
        "pool_size": None,
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "first_conv": "blocks.0.0",
        "classifier": "fc",
        "license": "apache-2.0",
        **overrides,
    }


default_cfgs = generate_default_cfgs(
    {
        "simsearch_conv4": _cfg(),
        "simsearch_conv4_wide": _cfg(input_size=(3, 32, 32)),
        "simsearch_resnet20": _cfg(input_size=(3, 32, 32), first_conv="stem.0"),
    }
)


def _create(variant: str, widths: Sequence[int], pretrained: bool, **kwargs: Any) -> ConvNet:
    kwargs.setdefault("widths", tuple(widths))
    return build_model_with_cfg(ConvNet, variant, pretrained, **kwargs)  # type: ignore[no-any-return]


@register_model
def simsearch_conv4(pretrained: bool = False, **kwargs: Any) -> ConvNet:
    """Conv-4, 64 channels per block: the network of the published few-shot results (28 x 28 input)."""
    return _create("simsearch_conv4", (64, 64, 64, 64), pretrained, **kwargs)


@register_model
def simsearch_conv4_wide(pretrained: bool = False, **kwargs: Any) -> ConvNet:
    """Conv-4 of widths 64, 128, 256, 512: more capacity for 28-32 px photos such as Fashion-MNIST."""
    return _create("simsearch_conv4_wide", (64, 128, 256, 512), pretrained, **kwargs)


@register_model
def simsearch_resnet20(pretrained: bool = False, **kwargs: Any) -> SmallResNet:
    """ResNet-20 of He et al. 2016: three stages of three basic blocks, 16, 32 and 64 channels (0.27 M parameters)."""
    kwargs.setdefault("depths", (3, 3, 3))
    kwargs.setdefault("widths", (16, 32, 64))
    return build_model_with_cfg(SmallResNet, "simsearch_resnet20", pretrained, **kwargs)  # type: ignore[no-any-return]
