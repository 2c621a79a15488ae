"""The dedup model (copy-detection descriptor) on real photos: it loads offline from the package, a photo's edited
copies score closer to it than other photos of its class, and `dedup FOLDER` uses it for a new collection and finds
planted variants at its shipped calibrated line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SAMPLE_PHOTOS
from PIL import Image

from cli.main import main
from simsearch import Collection
from simsearch.dedup.variants import make_variant
from simsearch.models import load_embedder, load_embedder_from_spec

#: Classes of the benchmark's held-out half (its calibration was fitted on the first 50 sorted classes).
UNSEEN = ("pizza", "starfish", "sunflower", "watch")


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    return load_embedder("dedup")


def test_loads_offline_from_the_package_with_its_own_identity(model) -> None:  # type: ignore[no-untyped-def]
    assert model.model_id == "dedup:tf_efficientnet_lite0"
    assert model.spec["kind"] == "dedup" and model.embed_dim == 1280
    assert model.data_config["crop_mode"] == "squash" and model.data_config["crop_pct"] == 1.0
    default = load_embedder(None)
    assert model.weights_sha256 != default.weights_sha256
    # A mirrored image is the same vector: the descriptor averages an image and its mirror image.
    with Image.open(SAMPLE_PHOTOS / "pizza" / "image_0001.jpg") as im:
        photo, mirrored = model.embed([im, im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    assert float(photo @ mirrored) > 0.999
    again = load_embedder_from_spec(model.spec)
    assert again.weights_sha256 == model.weights_sha256 and again.model_id == model.model_id


def test_an_edited_copy_is_closer_than_another_photo_of_the_class(model) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    for cls in UNSEEN:
        photos = sorted((SAMPLE_PHOTOS / cls).glob("*.jpg"))[:4]
        with Image.open(photos[0]) as im:
            edits = [make_variant(im, how, rng)[0] for how in ("resize", "jpeg", "crop", "mirror", "rotate", "text")]
        vectors = model.embed([photos[0], *edits, *photos[1:]])
        scores = vectors[1:] @ vectors[0]
        copies, others = scores[: len(edits)], scores[len(edits) :]
        assert copies.min() > others.max(), (cls, copies, others)


def test_dedup_of_a_new_folder_uses_the_dedup_model_and_finds_the_planted_variants(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    rng = np.random.default_rng(1)
    planted = {}
    for cls in UNSEEN:
        for photo in sorted((SAMPLE_PHOTOS / cls).glob("*.jpg"))[:4]:
            (folder / cls).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(photo, folder / cls / photo.name)
        source = folder / cls / "image_0001.jpg"
        with Image.open(source) as im:
            data, _ = make_variant(im, ("resize", "crop", "jpeg", "mirror")[len(planted)], rng)
        (folder / "edits").mkdir(exist_ok=True)
        (folder / "edits" / f"{cls}.jpg").write_bytes(data)
        planted[cls] = {str(source.resolve()), str((folder / "edits" / f"{cls}.jpg").resolve())}
    col = tmp_path / "col"
    result = CliRunner().invoke(main, ["dedup", str(folder), "-c", str(col), "--json", "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    groups = [{m["path"] for m in g["members"]} for g in report["groups"]]
    assert sorted(groups, key=sorted) == sorted(planted.values(), key=sorted)
    assert "calibrated" in report["threshold_origin"]
    with Collection.open(col) as opened:
        assert opened.manifest.model.id == "dedup:tf_efficientnet_lite0"


def test_dedup_without_a_collection_keeps_its_own_beside_the_search_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SIMSEARCH_COLLECTION", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in sorted((SAMPLE_PHOTOS / UNSEEN[0]).glob("*.jpg"))[:3]:
        shutil.copyfile(photo, folder / photo.name)
    result = CliRunner().invoke(main, ["dedup", str(folder), "--json", "-q"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "data" / "simsearch" / "default").exists()
    with Collection.open(tmp_path / "data" / "simsearch" / "dedup") as opened:
        assert opened.manifest.model.id == "dedup:tf_efficientnet_lite0"
        assert len(opened) == 3
    dedup_collection = str(tmp_path / "data" / "simsearch" / "dedup")
    shown = CliRunner().invoke(main, ["query", str(folder / photo.name), "-c", dedup_collection, "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["results"][0]["meaning"].startswith("p>=")  # the shipped calibration speaks
