"""The max-unpooling conv decoder: shapes, the unpooled positions against a plain loop, rebuilding, and the kinds that
take or refuse it. Training it on real images and its checkpoint as a backbone: test_pretraining.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from simsearch.autoencoders import autoencoder_from_config, build_autoencoder, encoder_backbone
from simsearch.autoencoders.conv import PooledFeatures, UnpoolDecoder
from simsearch.errors import ModelError

SHAPES = [(1, 28, 28), (1, 105, 105), (3, 64, 64), (1, 11, 13)]


def unpool_ae(shape: tuple[int, int, int] = (1, 28, 28), code_dim: int = 8, **options: Any):
    return build_autoencoder("conv", shape, code_dim, decoder="unpool", **options)


# --------------------------------------------------------------------------------------------------------------------
# Shapes and the unpooled positions
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_the_unpool_model_reconstructs_the_input_size_and_its_backbone_gives_the_same_codes(shape) -> None:
    torch.manual_seed(0)
    model = unpool_ae(shape, code_dim=12).eval()
    assert isinstance(model.encoder.features, PooledFeatures) and isinstance(model.decoder, UnpoolDecoder)
    x = torch.rand(3, *shape)
    with torch.no_grad():
        out = model(x)
        codes = encoder_backbone(model).eval()(x)
    assert out["recon"].shape == out["logits"].shape == (3, *shape)
    assert out["code"].shape == (3, 12)
    assert 0.0 <= float(out["recon"].min()) and float(out["recon"].max()) <= 1.0
    # The embedding path keeps no pooling positions and gives the code that the autoencoder decodes.
    assert torch.equal(codes, out["code"]) and torch.equal(model.encode(x), out["code"])
    assert not model.decodes_codes


def _python_unpool(values: list, pre_pool: list) -> list:
    """Each pooled value put where the maximum of its 2x2 window (cut at the border) lay in the pre-pool map."""
    height, width = len(pre_pool[0]), len(pre_pool[0][0])
    out = [[[0.0] * width for _ in range(height)] for _ in pre_pool]
    for c, plane in enumerate(values):
        for i, row in enumerate(plane):
            for j, value in enumerate(row):
                cells = [
                    (r, s) for r in range(2 * i, min(2 * i + 2, height)) for s in range(2 * j, min(2 * j + 2, width))
                ]
                r, s = max(cells, key=lambda cell: pre_pool[c][cell[0]][cell[1]])
                out[c][r][s] = value
    return out


def test_each_unpooled_value_lands_where_the_mirrored_encoder_stage_found_its_maximum() -> None:
    torch.manual_seed(0)
    model = unpool_ae((1, 11, 13), code_dim=5, channels=[2, 3]).eval()
    for stage in model.encoder.features.stages:
        stage[1].bias.data.fill_(5.0)  # every activation positive: no ties of zeros after the ReLU
    pre_pool: list[torch.Tensor] = []
    unpooled: list[tuple[torch.Tensor, torch.Tensor]] = []
    hooks = [s.register_forward_hook(lambda m, i, o: pre_pool.append(o)) for s in model.encoder.features.stages]
    hooks.append(model.decoder.unpool.register_forward_hook(lambda m, i, o: unpooled.append((i[0], o))))
    with torch.no_grad():
        model(torch.rand(2, 1, 11, 13))
    for hook in hooks:
        hook.remove()
    assert [tuple(t.shape[2:]) for t in pre_pool] == [(11, 13), (6, 7)]
    # The decoder unpools deepest first: its first unpooling mirrors the encoder's last pooling.
    assert [tuple(o.shape) for _, o in unpooled] == [(2, 3, 6, 7), (2, 2, 11, 13)]
    for (values, out), before in zip(unpooled, reversed(pre_pool), strict=True):
        for n in range(2):
            expected = _python_unpool(values[n].tolist(), before[n].tolist())
            assert out[n].tolist() == expected
            assert int((out[n] != 0).sum()) == int((values[n] != 0).sum())


def test_a_bare_code_cannot_be_decoded_and_the_interpolation_picture_says_why() -> None:
    from simsearch.ae_pictures import PictureError, save_interpolation

    model = unpool_ae()
    with pytest.raises(ModelError, match="not a bare code"):
        model.decode(torch.randn(2, 8))
    with pytest.raises(PictureError, match="cannot decode a bare code"):
        save_interpolation(model, torch.rand(4, 1, 28, 28), Path("unused.png"))


def test_the_model_rebuilds_from_its_json_config_and_loads_strictly() -> None:
    torch.manual_seed(0)
    model = unpool_ae((1, 32, 32), channels=[8, 16]).eval()
    assert model.options == {"channels": [8, 16], "decoder": "unpool", "recon": "mse"}
    again = autoencoder_from_config(json.loads(json.dumps(model.config()))).eval()
    again.load_state_dict(model.state_dict(), strict=True)
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x)["recon"], model(x)["recon"])


@pytest.mark.parametrize("kind", ["denoising", "sparse"])
def test_denoising_and_sparse_kinds_take_the_unpool_decoder(kind: str) -> None:
    torch.manual_seed(0)
    model = build_autoencoder(kind, (1, 28, 28), 6, decoder="unpool", channels=[8, 16])
    x = torch.rand(4, 1, 28, 28)
    loss = model.loss(x)["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.encoder.features.parameters())
    assert model(x)["recon"].shape == (4, 1, 28, 28)


@pytest.mark.parametrize("kind", ["vae", "cvae", "vaegan"])
def test_variational_kinds_refuse_the_unpool_decoder_with_one_line(kind: str) -> None:
    with pytest.raises(ModelError, match="cannot decode prior samples") as info:
        build_autoencoder(kind, (1, 28, 28), 4, num_classes=10, decoder="unpool")
    assert "\n" not in str(info.value)
