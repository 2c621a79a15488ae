"""The max-unpooling conv decoder: shapes, the unpooled positions against a plain loop, a short `simsearch pretrain`
on real Fashion-MNIST images, its checkpoint as a backbone (index, metric training), and the kinds that refuse it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import DATA
from PIL import Image

from simsearch.autoencoders import autoencoder_from_config, build_autoencoder, encoder_backbone
from simsearch.autoencoders.conv import PooledFeatures, UnpoolDecoder
from simsearch.data import ArrayDataset, DataNotFoundError, load_fashion_mnist
from simsearch.errors import ModelError

SHAPES = [(1, 28, 28), (1, 105, 105), (3, 64, 64), (1, 11, 13)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: these small models gain nothing from more, and the CPU may be shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


# --------------------------------------------------------------------------------------------------------------------
# Training on real images through the command, and the checkpoint as a backbone
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fashion() -> ArrayDataset:
    """The first 400 Fashion-MNIST training images."""
    try:
        full = load_fashion_mnist("train", root=DATA)
    except DataNotFoundError as exc:
        pytest.skip(f"Fashion-MNIST not found ({exc}); set SIMSEARCH_DATA to the shared data folder")
    return ArrayDataset(full.images[:400].copy(), full.labels[:400].copy(), classes=full.classes)


def _png_folder(dataset: ArrayDataset, root: Path, per_class: int, classes: int = 4) -> Path:
    for c in range(classes):
        folder = root / dataset.classes[c].replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(dataset.labels == c)[:per_class]:
            Image.fromarray(dataset.images[i]).save(folder / f"{i}.png")
    return root


def _pretrain(args: list[Any]) -> Any:
    from cli.pretrain import pretrain as command

    group = click.Group(commands={"pretrain": command})
    return CliRunner().invoke(group, ["pretrain", *[str(a) for a in args]], env={"SIMSEARCH_DATA": str(DATA)})


@pytest.fixture(scope="module")
def unpool_run(fashion: ArrayDataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """`simsearch pretrain fashion-mnist --kind conv --decoder unpool` on 400 images, 3 epochs."""
    out = tmp_path_factory.mktemp("unpool") / "run"
    result = _pretrain(
        ["fashion-mnist", "--kind", "conv", "--decoder", "unpool", "--code-dim", "8", "--epochs", "3"]
        + ["--batch-size", "32", "--lr", "3e-3", "--max-images", "400", "--val-fraction", "0.25"]
        + ["--option", "channels=[8,16]", "--out", out, "--device", "cpu", "--json", "-q"]
    )
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def _raw(dataset: ArrayDataset, rows: slice) -> torch.Tensor:
    return torch.from_numpy(dataset.images[rows].copy()).float()[:, None] / 255.0


def test_training_lowers_the_loss_and_the_checkpoint_loads_back_with_its_decoder(unpool_run, fashion) -> None:
    from simsearch.pretraining import load_autoencoder

    out, record = unpool_run
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    ae = load_autoencoder(out)
    assert ae.options["decoder"] == "unpool" and isinstance(ae.decoder, UnpoolDecoder)
    torch.manual_seed(0)
    untrained = unpool_ae(channels=[8, 16]).eval()
    x = _raw(fashion, slice(0, 300))
    with torch.no_grad():
        before, after = float(untrained.loss(x)["loss"]), float(ae.loss(x)["loss"])
    assert after < 0.5 * before, f"loss {before:.4f} -> {after:.4f}"
    # No interpolation picture: the decoder cannot decode a bare code.
    assert sorted(Path(p).name for p in record["pictures"]) == ["latent.png", "reconstructions.png"]


def test_the_checkpoint_embeds_with_the_encoder_alone(unpool_run, fashion) -> None:
    from simsearch.models import load_embedder
    from simsearch.pretraining import load_autoencoder

    out, _ = unpool_run
    embedder = load_embedder(out)
    x = _raw(fashion, slice(0, 6))
    with torch.no_grad():
        vectors = embedder(x)
        codes = load_autoencoder(out).encode(x)
    assert vectors.shape == (6, 8)
    assert torch.allclose(vectors, torch.nn.functional.normalize(codes, dim=1), atol=1e-5)


def test_index_and_metric_training_take_the_unpool_checkpoint(unpool_run, fashion, tmp_path: Path) -> None:
    from cli.main import main
    from simsearch.models import load_embedder
    from simsearch.training import TrainConfig, train

    out, _ = unpool_run
    folder = _png_folder(fashion, tmp_path / "images", per_class=3)
    args = ["index", str(folder), "-c", str(tmp_path / "col"), "--model", str(out), "--device", "cpu"]
    indexed = CliRunner().invoke(main, [*args, "--workers", "0", "-q", "--json"])
    assert indexed.exit_code == 0, indexed.output
    assert json.loads(indexed.stdout)["images"] == 12

    config = TrainConfig(
        backbone=str(out),
        embed_dim=4,
        loss="triplet",
        epochs=1,
        p=4,
        k=2,
        batches_per_epoch=2,
        warmup_epochs=0,
        patience=None,
        device="cpu",
    )
    assert train(config, fashion, None, tmp_path / "metric").epochs_run == 1
    tuned = load_embedder(tmp_path / "metric")
    assert tuned.arch == "simsearch-ae:conv" and tuned.embed_dim == 4
    kwargs = json.loads((tmp_path / "metric" / "config.json").read_text())["backbone_kwargs"]
    assert kwargs["options"]["decoder"] == "unpool"


def test_the_command_refuses_unpool_for_a_vae_in_one_line(fashion, tmp_path: Path) -> None:
    folder = _png_folder(fashion, tmp_path / "images", per_class=2)
    result = _pretrain([folder, "--kind", "vae", "--decoder", "unpool", "--out", tmp_path / "v", "-q"])
    assert result.exit_code == 1 and "Error:" in result.output and "Traceback" not in result.output
    assert "cannot decode prior samples" in result.output
