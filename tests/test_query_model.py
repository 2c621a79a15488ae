"""Queries without torch: the numpy eval transform gives timm's tensors, the ONNX export gives the model's vectors
on real photos (or is refused), it is used only for the model it was made from, and a CLI query through it loads
neither torch nor torchvision."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, SAMPLE_PHOTOS, copy_collection, unpack_caltech

from simsearch.errors import ModelError
from simsearch.models.preprocess import decode_min_side, numpy_transform

pytest.importorskip("onnx", reason="the export needs the `onnx` extra")
pytest.importorskip("onnxruntime", reason="the export needs the `onnx` extra")

QUERY = REPO / "samples" / "queries" / "starfish_0042.jpg"
#: Caltech-101 classes with grey, small, wide and tall photos among their first ones.
CLASSES = {"car_side": 6, "Faces_easy": 4, "accordion": 4, "Motorbikes": 4, "yin_yang": 4, "chair": 4}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("caltech")
    return [p for paths in unpack_caltech(folder, CLASSES).values() for p in paths]


@pytest.fixture(scope="module")
def exported(sample_collection: Path, tmp_path_factory, photos: list[Path]) -> Path:
    """A copy of the sample collection with its model exported into it, checked on Caltech-101 photos."""
    from simsearch import open_collection
    from simsearch.collection.query_model import export_query_model

    path = copy_collection(sample_collection, tmp_path_factory.mktemp("exported") / "col")
    with open_collection(path, device="cpu") as col:
        check = export_query_model(col, photos)
    assert check.photos == len(photos) and check.min_cosine >= 0.99999
    return path


def _transformed(embedder, photos: list[Path], config: dict) -> tuple[np.ndarray, np.ndarray]:
    """The same decoded photos through timm's transform of `config` and through the numpy one."""
    import timm.data

    from simsearch.images import load_image

    theirs = timm.data.create_transform(**config, is_training=False)
    ours = numpy_transform(config)
    assert ours is not None
    a, b = [], []
    for path in photos:
        image = load_image(path, min_side=decode_min_side(config))
        a.append(theirs(image.convert("L" if config["input_size"][0] == 1 else "RGB")).numpy())
        b.append(ours(image))
    return np.stack(a), np.stack(b)


@pytest.mark.parametrize(
    "change",
    [
        {},  # the default model's: bicubic, crop 0.875, mean and std 0.5
        {"interpolation": "bilinear", "crop_pct": 1.0, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
        {"input_size": (1, 28, 28), "mean": (0.5,), "std": (0.25,), "crop_pct": 1.0},
        {"input_size": (3, 96, 96), "crop_pct": 1.2},  # the crop is larger than the resized image: zero padding
    ],
    ids=["default", "imagenet-bilinear", "grey-small", "padded"],
)
def test_the_numpy_transform_gives_timms_tensor_on_real_photos(default_embedder, photos, change) -> None:
    config = {**default_embedder.data_config, **change}
    theirs, ours = _transformed(default_embedder, photos, config)
    assert ours.shape == theirs.shape == (len(photos), *config["input_size"])
    assert ours.dtype == np.float32
    # Resampling only the crop moves a few pixels by one or two 8-bit levels (Pillow's resize box is single
    # precision); everything else is timm's float for float.
    level = 1 / 255 / min(config["std"])
    gap = np.abs(ours - theirs)
    assert gap.max() <= 2 * level + 1e-6
    assert np.count_nonzero(gap > 1e-6) <= 5e-3 * gap.size


def test_the_numpy_transform_gives_the_models_vectors_on_real_photos(default_embedder, photos) -> None:
    import torch

    theirs, ours = _transformed(default_embedder, photos, dict(default_embedder.data_config))
    with torch.inference_mode():
        a, b = (default_embedder(torch.from_numpy(x)).numpy() for x in (theirs, ours))
    assert np.sum(a * b, axis=1).min() >= 0.99999


def test_configs_the_numpy_transform_does_not_reproduce_have_none(default_embedder) -> None:
    assert numpy_transform({**default_embedder.data_config, "crop_mode": "squash"}) is None
    assert numpy_transform({**default_embedder.data_config, "input_size": (3, 224, 160)}) is None
    assert numpy_transform({**default_embedder.data_config, "interpolation": "random"}) is None


def test_the_export_gives_the_models_vectors_on_real_photos(exported: Path, default_embedder, photos) -> None:
    from simsearch.collection.manifest import read_raw
    from simsearch.collection.query_model import recorded_identity
    from simsearch.models.exported import load_exported

    manifest = read_raw(exported / "manifest.json")
    model = load_exported(exported, recorded_identity(_model_info(manifest, exported)))
    assert model is not None
    more = [*photos, *sorted(SAMPLE_PHOTOS.rglob("*.jpg"))[::6], QUERY]
    ours = model.embed(more)
    theirs = default_embedder.embed(more)
    assert ours.shape == theirs.shape and ours.dtype == np.float32
    assert float(np.sum(ours * theirs, axis=1).min()) >= 0.99999
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_an_export_that_differs_from_the_model_is_refused_and_nothing_is_written(
    default_embedder, photos, tmp_path: Path
) -> None:
    from simsearch.models.exported import export_onnx

    with pytest.raises(ModelError, match="other vectors than the model"):
        export_onnx(default_embedder, tmp_path, photos[:3], min_cosine=1.5)  # no export reaches a cosine above 1
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ModelError, match="real photos"):
        export_onnx(default_embedder, tmp_path, [])


def test_an_export_is_used_only_for_the_model_it_was_made_from(exported: Path, tmp_path: Path) -> None:
    from simsearch.collection.manifest import read_raw
    from simsearch.collection.query_model import recorded_identity
    from simsearch.models.exported import EXPORT_FILE, EXPORT_RECORD, load_exported

    identity = recorded_identity(_model_info(read_raw(exported / "manifest.json"), exported))
    assert load_exported(exported, identity) is not None
    for key, other in [("weights_sha256", "0" * 64), ("id", "default:other"), ("tta", "hflip"), ("dim", 7)]:
        assert load_exported(exported, {**identity, key: other}) is None, key
    other_config = {**identity["data_config"], "crop_pct": 0.95}
    assert load_exported(exported, {**identity, "data_config": other_config}) is None
    # A changed model file is not the one that was checked.
    copy = copy_collection(exported, tmp_path / "col")
    data = bytearray((copy / EXPORT_FILE).read_bytes())
    data[-1] ^= 1
    (copy / EXPORT_FILE).write_bytes(bytes(data))
    assert load_exported(copy, identity) is None
    # Without its record, an export is never used.
    (copy / EXPORT_RECORD).unlink()
    assert load_exported(copy, identity) is None


def _model_info(manifest: dict, folder: Path):
    from simsearch.collection.manifest import Manifest

    return Manifest.from_dict(manifest, folder / "manifest.json").model


def _query(collection: Path, device: str) -> tuple[list[dict], set[str]]:
    """A CLI query in a fresh interpreter: its JSON results and the top-level modules it loaded."""
    code = f"""
import json, sys
from click.testing import CliRunner
from cli.main import main
result = CliRunner().invoke(main, ["query", {str(QUERY)!r}, "-c", {str(collection)!r}, "-k", "5", "--json",
                                   "--device", {device!r}])
assert result.exit_code == 0, result.output
print(json.dumps({{"out": result.output, "modules": sorted({{m.split(".")[0] for m in sys.modules}})}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    out = json.loads(answer["out"])
    results = out["results"] if isinstance(out, dict) else out
    return results, set(answer["modules"])


def test_a_cli_query_through_the_export_loads_neither_torch_nor_torchvision_and_finds_the_same(
    exported: Path, sample_collection: Path
) -> None:
    fast, modules = _query(exported, "cpu")
    assert not {"torch", "torchvision", "timm"} & modules
    with_torch, torch_modules = _query(sample_collection, "cpu")  # the same collection without an export
    assert "torch" in torch_modules
    assert [r["id"] for r in fast] == [r["id"] for r in with_torch]
    np.testing.assert_allclose([r["score"] for r in fast], [r["score"] for r in with_torch], atol=1e-4)


def test_index_onnx_exports_once_and_a_query_then_uses_it(sample_collection: Path, tmp_path: Path) -> None:
    from cli_helpers import ok, run

    from simsearch.models.exported import EXPORT_FILE, EXPORT_RECORD

    path = copy_collection(sample_collection, tmp_path / "col")
    first = ok(run("index", SAMPLE_PHOTOS, "-c", path, "--onnx", "-q"))
    assert "exported the model for queries (checked on 16 photos" in first.stderr
    record = json.loads((path / EXPORT_RECORD).read_text())
    assert record["checked"]["min_cosine"] >= 0.99999 and record["model"]["id"] == "default:tf_efficientnet_lite0"
    made = (path / EXPORT_FILE).stat().st_mtime_ns
    again = json.loads(ok(run("index", SAMPLE_PHOTOS, "-c", path, "--onnx", "-q", "--json")).stdout)
    assert again["onnx"] == "the model export for queries is up to date"
    assert (path / EXPORT_FILE).stat().st_mtime_ns == made
    results, modules = _query(path, "cpu")
    assert "torch" not in modules and results[0]["path"].split("/")[-2] == "starfish"
