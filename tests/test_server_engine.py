"""What runs a server's model: the collection's ONNX export (ONNX Runtime, torch never imported) where it has one,
else torch; both answer an uploaded photo alike, and the server says which one it runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, copy_collection
from serving import QUERIES, serving

pytest.importorskip("onnx", reason="the export needs the `onnx` extra")
pytest.importorskip("onnxruntime", reason="the export needs the `onnx` extra")

PHOTOS = ("sunflower_0042.jpg", "starfish_0042.jpg", "pizza_0042.jpg")


@pytest.fixture(scope="module")
def exported(sample_collection: Path, tmp_path_factory) -> Path:
    """A copy of the sample collection with its model exported into it (as `simsearch index --onnx` does)."""
    from simsearch import open_collection
    from simsearch.collection.query_model import export_query_model

    path = copy_collection(sample_collection, tmp_path_factory.mktemp("exported") / "col")
    with open_collection(path, device="cpu") as col:
        export_query_model(col)
    return path


def _answers(collection: Path, **overrides) -> tuple[dict, str, list[list[dict]]]:
    with serving(collection, **overrides) as client:
        info = client.get("/info").json()
        ready = client.get("/health/ready").json()["detail"]
        found = []
        for name in PHOTOS:
            photo = {"image": (name, (QUERIES / name).read_bytes(), "image/jpeg")}
            response = client.post("/search", params={"k": 5}, files=photo)
            assert response.status_code == 200, response.text
            found.append(response.json()["results"])
    return info, ready, found


@pytest.mark.parametrize("workers", [1, 2])
def test_a_server_on_an_exported_collection_runs_onnxruntime_and_answers_as_torch(
    exported: Path, sample_collection: Path, workers: int
) -> None:
    info, ready, fast = _answers(exported, forward_workers=workers)
    assert info["engine"] == "onnxruntime" and info["device"] == "cpu" and "onnxruntime" in ready
    torch_info, torch_ready, slow = _answers(sample_collection)
    assert torch_info["engine"] == "torch" and "torch" in torch_ready
    for name, ours, theirs in zip(PHOTOS, fast, slow, strict=True):
        assert [h["id"] for h in ours] == [h["id"] for h in theirs], name
        np.testing.assert_allclose([h["score"] for h in ours], [h["score"] for h in theirs], atol=1e-4)
        assert Path(ours[0]["path"]).parent.name == name.rsplit("_", 1)[0]


def test_an_export_of_another_model_is_not_used(exported: Path, tmp_path: Path) -> None:
    from simsearch.models.exported import EXPORT_RECORD

    path = copy_collection(exported, tmp_path / "col")
    record = json.loads((path / EXPORT_RECORD).read_text())
    record["model"]["weights_sha256"] = "0" * 64
    (path / EXPORT_RECORD).write_text(json.dumps(record))
    info, _, found = _answers(path)
    assert info["engine"] == "torch" and Path(found[0][0]["path"]).parent.name == "sunflower"


def test_a_server_on_an_exported_collection_never_imports_torch(exported: Path) -> None:
    code = f"""
import json, sys
sys.path.insert(0, {str(REPO / "tests")!r})
from serving import QUERIES, serving
photo = {{"image": ("q.jpg", (QUERIES / "sunflower_0042.jpg").read_bytes(), "image/jpeg")}}
with serving({str(exported)!r}) as client:
    hits = client.post("/search", params={{"k": 3}}, files=photo).json()["results"]
    engine = client.get("/info").json()["engine"]
modules = sorted({{m.split(".")[0] for m in sys.modules}})
print(json.dumps({{"engine": engine, "first": hits[0]["path"], "modules": modules}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["engine"] == "onnxruntime" and Path(answer["first"]).parent.name == "sunflower"
    assert not {"torch", "torchvision", "timm"} & set(answer["modules"])
