"""Autoencoder pretraining on a few hundred real Fashion-MNIST images: the loop, checkpoints, resuming and bad
recipes (the checkpoint elsewhere in simsearch, the pictures and the command have their own modules)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image
from pretraining_helpers import PNG_MAGIC, SMALL, _config, _raw

from simsearch.autoencoders import KINDS, build_autoencoder
from simsearch.data import ArrayDataset, load_fashion_mnist
from simsearch.models import create_transform, load_embedder
from simsearch.pretraining import AE_WEIGHTS, PICTURES_DIR, PretrainError, load_autoencoder, pretrain
from simsearch.training import LAST_DIR

pytest_plugins = ["pretraining_helpers"]  # the conv_run, fashion, unpool_run fixtures


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(path))


def _state(out: Path) -> dict[str, Any]:
    return torch.load(out / LAST_DIR / "state.pt", map_location="cpu", weights_only=True)


# --------------------------------------------------------------------------------------------------------------------
# The loop and the checkpoint
# --------------------------------------------------------------------------------------------------------------------


def test_pretrain_writes_an_embedding_checkpoint_the_full_autoencoder_history_and_state(conv_run) -> None:
    out, result = conv_run
    for name in ("model.safetensors", "config.json", AE_WEIGHTS, "history.json", f"{LAST_DIR}/state.pt"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["backbone"] == "simsearch-ae:conv"
    assert config["embed_dim"] is None
    assert config["backbone_kwargs"]["input_shape"] == [1, 28, 28]
    assert config["data_config"]["mean"] == [0.0] and config["data_config"]["std"] == [1.0]
    assert config["autoencoder"]["kind"] == "conv"
    assert config["metrics"]["epoch"] == result.best_epoch
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(np.isfinite(h["val_loss"]) for h in history)
    # A conv autoencoder learns something in two epochs: the validation loss falls.
    assert history[1]["val_loss"] < history[0]["val_loss"]
    assert result.best_epoch == 2 and result.monitor == "val loss"


def test_the_checkpoint_reloads_the_best_epochs_weights_exactly(conv_run) -> None:
    out, result = conv_run
    assert result.best_epoch == 2  # the last epoch, whose weights last/state.pt holds too
    ae = load_autoencoder(out)
    saved = _state(out)["model"]
    loaded = ae.state_dict()
    assert loaded.keys() == saved.keys()
    for key, value in saved.items():
        assert torch.equal(loaded[key], value), key
    embedder = load_embedder(out)
    for key, value in embedder.state_dict().items():
        assert torch.equal(value, loaded[key.removeprefix("backbone.")]), key


def test_the_checkpoint_embeds_pil_images_as_unit_vectors_equal_to_the_normalised_codes(conv_run, fashion) -> None:
    out, _ = conv_run
    embedder = load_embedder(out)
    assert embedder.embed_dim == 8
    transform = create_transform(embedder)
    # RGB input: the model's transform turns it grey, as its data config has one channel.
    batch = torch.stack([transform(Image.fromarray(fashion.images[i]).convert("RGB")) for i in range(6)])
    with torch.no_grad():
        vectors = embedder(batch)
        codes = load_autoencoder(out).encode(_raw(fashion, 6))
    assert vectors.shape == (6, 8)
    assert torch.allclose(vectors.norm(dim=1), torch.ones(6), atol=1e-5)
    assert torch.allclose(vectors, torch.nn.functional.normalize(codes, dim=1), atol=1e-5)


def test_the_unpool_decoder_trains_on_real_images_and_its_checkpoint_loads_back(unpool_run) -> None:
    from simsearch.autoencoders.conv import UnpoolDecoder

    out, record = unpool_run
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    ae = load_autoencoder(out)
    assert ae.options["decoder"] == "unpool" and isinstance(ae.decoder, UnpoolDecoder)
    torch.manual_seed(0)
    untrained = build_autoencoder("conv", (1, 28, 28), 8, decoder="unpool", **SMALL).eval()
    x = torch.from_numpy(load_fashion_mnist("test").images[:300].copy()).float()[:, None] / 255.0
    with torch.no_grad():
        before, after = float(untrained.loss(x)["loss"]), float(ae.loss(x)["loss"])
    assert after < 0.5 * before, f"test loss {before:.4f} -> {after:.4f}"
    # The encoder alone embeds: the normalised codes, computed without the pooling positions.
    with torch.no_grad():
        vectors, codes = load_embedder(out)(x[:6]), ae.encode(x[:6])
    assert torch.allclose(vectors, torch.nn.functional.normalize(codes, dim=1), atol=1e-5)
    # No interpolation picture: the decoder cannot decode a bare code.
    assert sorted(Path(p).name for p in record["pictures"]) == ["latent.png", "reconstructions.png"]


def test_a_crash_between_the_autoencoder_weights_and_the_config_is_a_half_written_checkpoint(
    conv_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both weights files come before config.json, which records their digests: when the process dies after the
    weights of a newer epoch were renamed into place, neither half loads beside the older config."""
    import shutil

    from simsearch.errors import ModelError
    from simsearch.models import checkpoint
    from simsearch.pretraining.model import save

    out, _ = conv_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = json.loads((copy / "config.json").read_text())
    assert set(before["files"]) == {"model.safetensors", AE_WEIGHTS}

    def crash(path: object, text: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "atomic_write_text", crash)
    other = build_autoencoder("conv", (1, 28, 28), 8, **SMALL)
    with pytest.raises(KeyboardInterrupt):
        save(other, copy, {"metrics": {"epoch": 3}})
    assert json.loads((copy / "config.json").read_text()) == before
    with pytest.raises(PretrainError, match=f"half-written: {AE_WEIGHTS} is not the file"):
        load_autoencoder(copy)
    with pytest.raises(ModelError, match="half-written: model.safetensors is not the file"):
        load_embedder(copy)


class _Interrupt(Exception):
    pass


class _StopAt:
    """A progress receiver that interrupts the run at a given step of a given epoch."""

    def __init__(self, epoch: int, step: int) -> None:
        self.stop = (epoch, step)
        self.epoch, self.steps = 0, 0

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.epoch, self.steps = epoch, 0

    def step(self, loss: float, samples_per_second: float) -> None:
        self.steps += 1
        if (self.epoch, self.steps) == self.stop:
            raise _Interrupt

    def end_epoch(self, epoch: int, record: dict[str, Any]) -> None:
        pass


def test_a_run_interrupted_mid_epoch_and_resumed_equals_an_uninterrupted_run(fashion, tmp_path: Path) -> None:
    # A VAE draws noise every step, so an equal result needs the random state restored too.
    config = _config(kind="vae", epochs=2, val_fraction=0.2, max_images=120, batch_size=32)
    whole = pretrain(config, fashion, tmp_path / "whole", pictures=False)
    with pytest.raises(_Interrupt):
        pretrain(config, fashion, tmp_path / "resumed", progress=_StopAt(epoch=2, step=1), pictures=False)
    assert json.loads((tmp_path / "resumed" / "history.json").read_text())[-1]["epoch"] == 1
    resumed = pretrain(config, fashion, tmp_path / "resumed", pictures=False)
    assert resumed.epochs_run == 2 and resumed.best_epoch == whole.best_epoch
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    a, b = _tensors(tmp_path / "whole" / AE_WEIGHTS), _tensors(tmp_path / "resumed" / AE_WEIGHTS)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_more_epochs_continue_a_finished_run_and_another_recipe_is_refused(fashion, tmp_path: Path) -> None:
    pretrain(_config(epochs=1, val_fraction=0.0, max_images=64), fashion, tmp_path / "run", pictures=False)
    longer = pretrain(_config(epochs=2, val_fraction=0.0, max_images=64), fashion, tmp_path / "run", pictures=False)
    assert [h["epoch"] for h in longer.history] == [1, 2]
    assert longer.monitor == "train loss"
    with pytest.raises(PretrainError, match="code_dim"):
        pretrain(_config(epochs=3, code_dim=4, val_fraction=0.0, max_images=64), fashion, tmp_path / "run")
    other = _config(epochs=1, code_dim=4, val_fraction=0.0, max_images=64)
    restarted = pretrain(other, fashion, tmp_path / "run", resume=False, pictures=False)
    assert restarted.epochs_run == 1


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_trains_and_its_checkpoint_embeds(kind: str, fashion, tmp_path: Path) -> None:
    options = {"hidden": [32]} if kind == "mlp" else {} if kind == "linear" else dict(SMALL)
    config = _config(kind=kind, epochs=1, options=options, max_images=96)
    result = pretrain(config, fashion, tmp_path / kind, pictures=False)
    assert result.best_epoch == 1 and np.isfinite(result.best_value)
    embedder = load_embedder(tmp_path / kind)
    with torch.no_grad():
        vectors = embedder(_raw(fashion, 4))
    assert vectors.shape == (4, 8)
    assert torch.allclose(vectors.norm(dim=1), torch.ones(4), atol=1e-5)
    optimizers = _state(tmp_path / kind)["optimizers"]
    assert len(optimizers) == (2 if kind == "vaegan" else 1)
    if kind == "vaegan":
        # The second Adam stepped over every discriminator weight.
        disc = load_autoencoder(tmp_path / kind).discriminator
        assert len(optimizers[1]["state"]) == len(list(disc.parameters()))
        assert all(float(s["step"]) == 2 for s in optimizers[1]["state"].values())  # 96 images * 0.75 / 64
        assert "disc_loss" in result.history[0]["train"]


def test_image_size_and_channels_resize_and_colour_the_input(fashion, tmp_path: Path) -> None:
    result = pretrain(
        _config(epochs=1, image_size=16, channels=3, max_images=64, val_fraction=0.0), fashion, tmp_path / "rgb16"
    )
    embedder = load_embedder(result.checkpoint)
    assert tuple(embedder.data_config["input_size"]) == (3, 16, 16)
    vector = embedder(create_transform(embedder)(Image.fromarray(fashion.images[0]))[None])
    assert vector.shape == (1, 8)


def test_bad_recipes_are_refused_before_anything_is_written(fashion, tmp_path: Path) -> None:
    with pytest.raises(PretrainError, match="kind"):
        pretrain(_config(kind="pca"), fashion, tmp_path / "a")
    with pytest.raises(PretrainError, match="channels"):
        pretrain(_config(channels=2), fashion, tmp_path / "b")
    with pytest.raises(PretrainError, match="unknown option"):
        pretrain(_config(options={"widths": [4]}), fashion, tmp_path / "c")
    with pytest.raises(PretrainError, match="seed must be an integer >= 0"):
        pretrain(_config(seed=-1), fashion, tmp_path / "d")
    assert not any(tmp_path.iterdir())


def _subset(dataset: ArrayDataset, classes: list[int], n: int = 100) -> ArrayDataset:
    """Up to `n` images of `classes`, relabelled 0.. in that order and named after them."""
    keep = np.flatnonzero(np.isin(dataset.labels, classes))[:n]
    relabel = {c: i for i, c in enumerate(classes)}
    labels = np.asarray([relabel[int(label)] for label in dataset.labels[keep]], dtype=np.int64)
    return ArrayDataset(dataset.images[keep].copy(), labels, classes=[dataset.classes[c] for c in classes])


def test_a_validation_loss_that_diverges_stops_the_run_with_one_line(fashion, tmp_path: Path) -> None:
    # One step per epoch: that step's own loss is measured before the huge update, so only validation sees it.
    config = _config(epochs=1, lr=1e9, batch_size=256, max_images=96)
    for out in (tmp_path / "fresh", tmp_path / "existing"):
        if out.name == "existing":
            out.mkdir()
        with pytest.raises(
            PretrainError, match=r"^the validation loss became (nan|inf) in epoch 1: lower the learning rate$"
        ):
            pretrain(config, fashion, out, pictures=False)
        assert not (out / "model.safetensors").exists()


def test_resuming_on_other_images_is_refused_but_a_state_without_a_data_summary_resumes(
    fashion, tmp_path: Path
) -> None:
    first = ArrayDataset(fashion.images[:96].copy(), fashion.labels[:96].copy(), classes=fashion.classes)
    other = ArrayDataset(fashion.images[96:192].copy(), fashion.labels[96:192].copy(), classes=fashion.classes)
    out = tmp_path / "run"
    pretrain(_config(epochs=1), first, out, pictures=False)
    with pytest.raises(PretrainError, match=r"holds a run on other data \(train content, val content differ\)"):
        pretrain(_config(epochs=2), other, out, pictures=False)
    # A state written before the data summary was kept resumes as it did.
    state = _state(out)
    del state["data"]
    torch.save(state, out / LAST_DIR / "state.pt")
    resumed = pretrain(_config(epochs=2), other, out, pictures=False)
    assert [h["epoch"] for h in resumed.history] == [1, 2]


def test_pictures_name_the_validation_images_by_the_validation_sets_classes(
    fashion, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from simsearch import ae_pictures

    drawn: dict[str, Any] = {}

    def spy(ae: Any, images: torch.Tensor, labels: np.ndarray, out_dir: Path, **kwargs: Any) -> list[Path]:
        drawn.update(labels=labels, **kwargs)
        return []

    monkeypatch.setattr(ae_pictures, "write_pictures", spy)
    train_set, val_set = _subset(fashion, [0, 1, 2, 3, 4]), _subset(fashion, [5, 6, 7, 8, 9])
    pretrain(_config(epochs=1), train_set, tmp_path / "conv", val_data=val_set)
    assert drawn["classes"] == val_set.classes
    assert np.array_equal(drawn["labels"], val_set.labels)
    # A cvae is conditioned on the training classes: validating it on others would be meaningless.
    with pytest.raises(PretrainError, match="a cvae validates on the training classes"):
        pretrain(_config(kind="cvae", epochs=1), train_set, tmp_path / "cvae", val_data=val_set)


def test_a_restart_leaves_no_pictures_of_the_old_model(fashion, tmp_path: Path) -> None:
    out = tmp_path / "run"
    (out / PICTURES_DIR).mkdir(parents=True)
    for name in ("denoising.png", "samples.png"):  # what a denoising or vae run before would have drawn
        (out / PICTURES_DIR / name).write_bytes(PNG_MAGIC)
    restarted = pretrain(_config(epochs=1, max_images=64), fashion, out, resume=False, pictures=False)
    assert restarted.pictures == [] and not any((out / PICTURES_DIR).iterdir())
    # Drawing without a restart (here: resuming the finished run) removes the files of the set it does not redraw.
    (out / PICTURES_DIR / "samples.png").write_bytes(PNG_MAGIC)
    drawn = pretrain(_config(epochs=1, max_images=64), fashion, out)
    names = ["interpolation.png", "latent.png", "reconstructions.png"]
    assert sorted(p.name for p in drawn.pictures) == names
    assert sorted(p.name for p in (out / PICTURES_DIR).iterdir()) == names
