"""The model a metric-learning run trains: the embedder its recipe names (backbone options, image size, crop, head),
the training transform, which parts train when (frozen stages, a frozen backbone, fixed BatchNorm statistics) and
the optimizer over them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import timm.data
import timm.models
import torch
from PIL import Image
from torch import nn

from simsearch.autoencoders import EncoderBackbone
from simsearch.losses import MetricLoss, loss_has_parameters
from simsearch.models import (
    GEM_OPTION,
    Embedder,
    GeM,
    channel_data_config,
    create_backbone,
    create_transform,
    load_embedder,
    random_embedder,
)
from simsearch.training.recipe import RANDOM_PREFIX, TrainConfig, TrainingError

__all__ = [
    "build_embedder",
    "frozen_stages",
    "make_optimizer",
    "set_backbone_frozen",
    "set_train_mode",
    "train_transform",
]


def build_embedder(config: TrainConfig) -> Embedder:
    """The model to train: the backbone of `config.backbone` (with `config.backbone_kwargs`) and a fresh projection
    head of `config.embed_dim`; its data config matches the backbone's input channels."""
    if config.backbone.startswith(RANDOM_PREFIX):
        base = random_embedder(config.backbone[len(RANDOM_PREFIX) :], **config.backbone_kwargs)
    else:
        base = load_embedder(config.backbone, weights=config.weights, device="cpu")
        base.use_channels_last(False)
        if config.backbone_kwargs:
            _rebuild_backbone(base, config.backbone_kwargs)
    if config.embed_dim is None:
        embedder = base
    else:
        embedder = Embedder(
            base.backbone,
            arch=base.arch,
            embed_dim=config.embed_dim,
            spec={"kind": "trained", "name": base.arch, "path": None},
            data_config=dict(base.data_config),
            backbone_kwargs=base.backbone_kwargs,
        )
    if config.image_size is not None:
        _check_fixed_input(embedder, config.image_size)
        channels = embedder.data_config.get("input_size", (3,))[0]
        embedder.data_config["input_size"] = (channels, config.image_size, config.image_size)
    if config.crop_pct is not None:
        embedder.data_config["crop_pct"] = float(config.crop_pct)
    return embedder


def _check_fixed_input(embedder: Embedder, image_size: int) -> None:
    """Refuse an `image_size` the backbone cannot take, before any image is read.

    Every autoencoder kind flattens its input into a Linear layer and `EncoderBackbone` checks the shape, so the
    encoder takes its `input_shape` only. Some timm models (ViTs and other patch-grid nets) also fix their input
    size when built; one zero image through the backbone finds those, since they would fail at the first batch.
    """
    if isinstance(embedder.backbone, EncoderBackbone):
        shape = tuple(embedder.backbone.input_shape)
        if shape[1:] != (image_size, image_size):
            # A non-square input has no square size that fits; its own data config already resizes to it.
            fix = f"set it to {shape[1]} or leave it unset" if shape[1] == shape[2] else "leave it unset"
            raise TrainingError(
                f"image_size {image_size} does not fit backbone {embedder.arch}, whose encoder takes "
                f"{'x'.join(map(str, shape))} images only: {fix}"
            )
        return
    channels = embedder.data_config.get("input_size", (3,))[0]
    backbone = embedder.backbone
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            backbone(torch.zeros(1, channels, image_size, image_size, device=next(backbone.parameters()).device))
    except (AssertionError, RuntimeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TrainingError(
            f"image_size {image_size} does not fit backbone {embedder.arch} ({reason}); a timm ViT takes other "
            "sizes with --backbone-option dynamic_img_size=true, or leave image_size unset"
        ) from None
    finally:
        backbone.train(was_training)


def _rebuild_backbone(embedder: Embedder, options: dict[str, Any]) -> None:
    """Rebuild a loaded backbone with more timm options and carry its weights over (in place).

    A changed `in_chans` adapts the stem as timm does for pretrained weights (`adapt_input_conv`: one channel sums
    the RGB filters); options that change any other weight's shape cannot keep the weights and are refused.
    """
    from timm.models import adapt_input_conv

    kwargs = {**embedder.backbone_kwargs, **options}
    backbone = create_backbone(embedder.arch, **kwargs)
    state = embedder.backbone.state_dict()
    first_conv = (getattr(backbone, "pretrained_cfg", None) or {}).get("first_conv")
    for name in [first_conv] if isinstance(first_conv, str) else list(first_conv or ()):
        key = f"{name}.weight"
        target = backbone.state_dict().get(key)
        if key in state and target is not None and state[key].shape[1] != target.shape[1]:
            state[key] = adapt_input_conv(int(target.shape[1]), state[key])
    # A GeM layer's p starts at the value the options give; a loaded backbone's learnt p stays when they give none.
    fresh = backbone.state_dict()
    gem = {f"{name}.p" for name, m in backbone.named_modules() if isinstance(m, GeM)}
    if GEM_OPTION not in options:
        gem -= set(state)
    try:
        backbone.load_state_dict({**state, **{k: fresh[k] for k in gem}})
    except RuntimeError as exc:
        raise TrainingError(
            f"backbone option(s) {', '.join(sorted(options))} change {embedder.arch}'s weights, so its loaded "
            f"weights do not fit: {str(exc).splitlines()[0]}"
        ) from None
    embedder.backbone = backbone
    embedder.backbone_kwargs = kwargs
    # The config was resolved for the old stem: a changed in_chans changes the channels its transforms give.
    embedder.data_config = channel_data_config(embedder.data_config, kwargs.get("in_chans"))


def train_transform(
    embedder: Embedder, augment: bool, options: dict[str, Any] | None = None
) -> Callable[[Image.Image], torch.Tensor]:
    if not augment:
        return create_transform(embedder)
    kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in (options or {}).items()}
    try:
        return timm.data.create_transform(**embedder.data_config, is_training=True, **kwargs)  # type: ignore[no-any-return]
    except (TypeError, ValueError, AssertionError) as exc:
        raise TrainingError(f"bad augmentation options {options}: {exc}".splitlines()[0]) from None


def frozen_stages(backbone: nn.Module, stages: int) -> tuple[list[nn.Parameter], list[nn.Module]]:
    """The parameters of a timm backbone's stem and first `stages` layer groups after it, by timm's coarse layer
    groups (EfficientNet, ResNet: one a stage; a ViT: one a block, its stem holding the patch embedding, class token
    and position embedding), and every module wholly inside them (to set to eval mode, dropout included).

    Raises:
        TrainingError: the backbone has no layer groups, or too few for at least one group to train.
    """
    matcher = getattr(backbone, "group_matcher", None)
    if matcher is None:
        raise TrainingError(f"{type(backbone).__name__} has no layer groups (timm's group_matcher): no stages to fix")
    # A GeM layer's p is pooling, not a stage: timm cannot place it and would count it as a layer group of its own.
    pooling = {f"{name}.p" if name else "p" for name, m in backbone.named_modules() if isinstance(m, GeM)}
    grouped = timm.models.group_parameters(backbone, matcher(coarse=True)).values()
    groups = [kept for group in grouped if (kept := [name for name in group if name not in pooling])]
    if stages >= len(groups) - 1:
        raise TrainingError(
            f"freeze_stages {stages} leaves nothing of the backbone to train: it has a stem and {len(groups) - 1} "
            f"layer groups after it, so at most {len(groups) - 2} can stay frozen"
        )
    named = dict(backbone.named_parameters())
    params = [named[name] for group in groups[: stages + 1] for name in group]
    fixed = {id(p) for p in params}
    modules = [m for m in backbone.modules() if (ps := list(m.parameters())) and all(id(p) in fixed for p in ps)]
    return params, modules


def set_backbone_frozen(embedder: Embedder, frozen: bool, always: list[nn.Parameter]) -> None:
    for param in embedder.backbone.parameters():
        param.requires_grad_(not frozen)
    for param in always:
        param.requires_grad_(False)


def set_train_mode(
    embedder: Embedder, *, backbone_frozen: bool, freeze_bn: bool, always_frozen: list[nn.Module]
) -> None:
    embedder.train()
    if backbone_frozen:
        # A frozen backbone must not move at all, its BatchNorm running statistics included.
        embedder.backbone.eval()
    elif freeze_bn:
        for module in embedder.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    for module in always_frozen:
        module.eval()


def make_optimizer(
    config: TrainConfig, embedder: Embedder, loss_fn: MetricLoss, fixed_params: list[nn.Parameter]
) -> torch.optim.AdamW:
    """AdamW over the backbone (less its fixed stages) at lr * backbone_lr_mult, the head at lr and the loss's own
    parameters at loss_lr; refused when the backbone is frozen at first and nothing else would train."""
    fixed = {id(p) for p in fixed_params}
    backbone_params = [p for p in embedder.backbone.parameters() if id(p) not in fixed]
    groups: list[dict[str, Any]] = [
        {"params": backbone_params, "lr": config.lr * config.backbone_lr_mult, "name": "backbone"},
        {"params": list(embedder.head.parameters()), "lr": config.lr, "name": "head"},
    ]
    if loss_has_parameters(config.loss):
        loss_params = [p for p in loss_fn.parameters() if p.requires_grad]
        if loss_params:
            groups.append({"params": loss_params, "lr": config.loss_lr or config.lr, "name": "loss"})
    groups = [g for g in groups if g["params"]]
    if config.freeze_backbone_epochs and all(g["name"] == "backbone" for g in groups):
        raise TrainingError(
            f"nothing to train while the backbone is frozen: {embedder.arch} has no projection head here and loss "
            f"{config.loss!r} no parameters; set embed_dim (a head) or freeze_backbone_epochs 0"
        )
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
