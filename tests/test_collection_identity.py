"""Model identity: a collection refuses vectors of any other model (weights, preprocessing, test-time augmentation)
and follows a moved checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE_PHOTOS
from PIL import Image

from simsearch import Collection, CollectionError, ModelError, ModelMismatchError, open_collection

# ---------------------------------------------------------------------------------------------------- model identity


@pytest.fixture
def tiny_model_collection(tmp_path: Path) -> tuple[Path, Path]:
    """A collection built with a tiny random checkpoint (16-d): any other model must be refused."""
    from simsearch.models import save_checkpoint
    from simsearch.models.registry import random_embedder

    checkpoint = save_checkpoint(random_embedder("test_efficientnet", embed_dim=16), tmp_path / "tiny-model")
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("airplanes", "pizza", "watch"):
        shutil.copy(SAMPLE_PHOTOS / name / "image_0001.jpg", folder / f"{name}.jpg")
    path = tmp_path / "col"
    with Collection.open(path, model=str(checkpoint), create=True, device="cpu") as c:
        assert c.index_folder(folder, workers=0).added == 3
    return path, folder


def test_a_collection_opens_with_its_own_model_and_refuses_another(tiny_model_collection: tuple[Path, Path]) -> None:
    path, folder = tiny_model_collection
    with open_collection(path, device="cpu") as c:
        assert c.dim == 16
        top = c.search(folder / "pizza.jpg", k=1)[0]
        assert top.path == str((folder / "pizza.jpg").resolve()) and top.score >= 0.999

    with pytest.raises(ModelMismatchError, match="built with model"):
        open_collection(path, model="default", device="cpu")
    with pytest.raises(ModelMismatchError):
        Collection.open(path, model="default", create=True, device="cpu")
    with open_collection(path, device="cpu") as c:  # the refusal changed nothing
        assert len(c) == 3 and c.dim == 16


def test_a_collection_built_with_hflip_tta_keeps_it_for_queries_and_refuses_vectors_without_it(
    tiny_model_collection: tuple[Path, Path], tmp_path: Path
) -> None:
    _, folder = tiny_model_collection
    checkpoint = tmp_path / "tiny-model"
    path = tmp_path / "col-tta"
    import torch

    from simsearch.models import create_transform, load_embedder

    photo = folder / "pizza.jpg"
    key = str(photo.resolve())

    def stored(c: Collection) -> np.ndarray:
        return c.index.reconstruct(np.array([c.store.id_for_path(key)]))[0]

    with Collection.open(path, model=str(checkpoint), tta="hflip", create=True, device="cpu") as c:
        assert c.index_folder(folder, workers=0).added == 3
        built = stored(c)
    # A plain reference: the mean of the photo's and its mirror's raw vectors, then unit length.
    model = load_embedder(checkpoint, device="cpu")
    x = create_transform(model)(Image.open(photo)).unsqueeze(0)
    with torch.no_grad():
        mean = ((model(x, normalize=False) + model(x.flip(-1), normalize=False)) / 2)[0].numpy()
    np.testing.assert_allclose(built, mean / np.linalg.norm(mean), atol=1e-4)
    with open_collection(tmp_path / "col", device="cpu") as plain:  # the same photo without it: another vector
        assert not np.allclose(stored(plain), built, atol=1e-3)
    with open_collection(path, device="cpu") as c:
        assert c.embedder.tta == "hflip" and c.embedder.model_id.endswith("+hflip")
        top = c.search(photo, k=1)[0]
        assert top.path == key and top.score >= 0.999

    # Naming its model again keeps the collection's tta, with or without repeating it.
    for tta in (None, "hflip"):
        with open_collection(path, model=str(checkpoint), tta=tta, device="cpu") as c:
            assert c.embedder.tta == "hflip"
    with pytest.raises(ModelMismatchError, match="test-time augmentation 'hflip'"):
        open_collection(tmp_path / "col", tta="hflip", device="cpu")  # built without it
    with pytest.raises(ModelMismatchError, match="test-time augmentation 'hflip'"):
        open_collection(tmp_path / "col", model=str(checkpoint), tta="hflip", device="cpu")
    with pytest.raises(ModelError, match="unknown test-time augmentation 'vflip'"):
        open_collection(path, tta="vflip", device="cpu")


def test_the_same_weights_under_a_timm_tag_of_other_preprocessing_are_refused(tmp_path: Path) -> None:
    import safetensors.torch
    import timm
    import torch

    torch.manual_seed(0)
    weights = tmp_path / "w.safetensors"
    safetensors.torch.save_file(timm.create_model("mobilenetv4_conv_small", num_classes=0).state_dict(), str(weights))
    built, other = "mobilenetv4_conv_small.e3600_r256_in1k", "mobilenetv4_conv_small.e1200_r224_in1k"
    path = tmp_path / "col"
    Collection.open(path, model=built, weights=weights, create=True, device="cpu").close()
    # One id (file:mobilenetv4_conv_small) and one weights file, but 224 px instead of 256: other vectors.
    with pytest.raises(
        ModelMismatchError,
        match=r"differs now: input_size \(3, 256, 256\) not \(3, 224, 224\), .*crop_pct 0.95 not 0.875",
    ):
        open_collection(path, model=other, weights=weights, device="cpu")
    with open_collection(path, model=built, weights=weights, device="cpu") as c:
        assert c.embedder.data_config["input_size"] == (3, 256, 256)


def test_a_checkpoint_whose_config_changed_its_preprocessing_is_refused(
    tiny_model_collection: tuple[Path, Path], tmp_path: Path
) -> None:
    path, folder = tiny_model_collection
    config_path = tmp_path / "tiny-model" / "config.json"
    config = json.loads(config_path.read_text())
    config["data_config"]["crop_pct"] = 0.5  # same weights, same folder: only the crop changes
    config_path.write_text(json.dumps(config))
    with open_collection(path, device="cpu") as c, pytest.raises(ModelMismatchError, match=r"crop_pct 0.95 not 0.5"):
        c.search(folder / "pizza.jpg", k=1)
    with pytest.raises(ModelMismatchError, match=r"differs now: crop_pct 0.95 not 0.5"):
        open_collection(path, model=str(tmp_path / "tiny-model"), device="cpu")


def test_a_moved_checkpoint_with_the_same_weights_is_accepted_and_its_new_place_kept(
    tiny_model_collection: tuple[Path, Path], tmp_path: Path
) -> None:
    from simsearch.models import save_checkpoint
    from simsearch.models.registry import random_embedder

    path, folder = tiny_model_collection
    moved = tmp_path / "runs" / "renamed"
    moved.parent.mkdir()
    (tmp_path / "tiny-model").rename(moved)
    photo, key = folder / "pizza.jpg", str((folder / "pizza.jpg").resolve())
    with open_collection(path, device="cpu") as c, pytest.raises(ModelError, match="is gone: if it moved"):
        c.search(photo, k=1)
    with open_collection(path, model=str(moved), device="cpu") as c:
        top = c.search(photo, k=1)[0]
        assert top.path == key and top.score >= 0.999
        c.add([photo])  # any write keeps the new place in the manifest
    model = json.loads((path / "manifest.json").read_text())["model"]
    assert model["id"] == "checkpoint:renamed" and model["spec"]["path"] == str(moved.resolve())
    with open_collection(path, device="cpu") as c:
        assert c.search(photo, k=1)[0].path == key
    # Another checkpoint of the same architecture and size is still another model.
    other = save_checkpoint(random_embedder("test_efficientnet", embed_dim=16), tmp_path / "runs" / "other")
    with pytest.raises(ModelMismatchError, match="built with model checkpoint:renamed"):
        open_collection(path, model=str(other), device="cpu")


def test_a_manifest_data_config_compares_as_preprocessing_not_as_json(tiny_model_collection: tuple[Path, Path]) -> None:
    path, folder = tiny_model_collection
    manifest = json.loads((path / "manifest.json").read_text())
    data_config = manifest["model"]["data_config"]
    assert data_config.pop("crop_mode") == "center"  # timm's default when absent
    data_config["mean"] = [m + 1e-12 for m in data_config["mean"]]  # last-digit float noise
    data_config["input_size"] = [float(s) for s in data_config["input_size"]]
    (path / "manifest.json").write_text(json.dumps(manifest))
    with open_collection(path, device="cpu") as c:
        assert c.search(folder / "pizza.jpg", k=1)[0].score >= 0.999
    with open_collection(path, model=str(path.parent / "tiny-model"), device="cpu") as c:
        assert c.search(folder / "pizza.jpg", k=1)[0].score >= 0.999


def test_a_manifest_with_a_model_field_of_the_wrong_type_is_a_collection_error(
    tiny_model_collection: tuple[Path, Path],
) -> None:
    path, _ = tiny_model_collection
    original = (path / "manifest.json").read_text()
    damages = {
        "spec": ("x", "spec must be an object"),
        "dim": ("16", "dim must be a positive integer"),
        "data_config": (None, "data_config must be an object"),
        "id": (3, "id must be a string"),
    }
    specs = {
        "file": ({"kind": "file", "name": "test_resnet"}, "spec of kind file has no path"),
        "kindless": ({"name": "test_resnet"}, "spec names no kind"),
        "checkpoint": ({"kind": "checkpoint", "name": "x", "path": 7}, "spec of kind checkpoint has no path"),
    }
    for key, value, message in [(k, v, m) for k, (v, m) in damages.items()] + [
        ("spec", v, m) for v, m in specs.values()
    ]:
        manifest = json.loads(original)
        manifest["model"][key] = value
        (path / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(CollectionError, match=f"manifest.json is damaged: model {message}") as info:
            open_collection(path, device="cpu")
        assert "\n" not in str(info.value)
