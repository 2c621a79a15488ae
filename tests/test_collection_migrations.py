"""Collections of an older format: a collection written by the previous release (tests/data/collection-v1, see
tests/data/README.md) is read through its upgrade without writing, upgraded in place by its first writer, crash-safely,
and answers the same queries as that release did."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lmdb
import numpy as np
import pytest
from collection_helpers import QUERIES, assert_consistent
from conftest import REPO, SAMPLE_PHOTOS

from simsearch import Collection, open_collection
from simsearch.collection.manifest import VERSION, Manifest
from simsearch.collection.migrations import open_manifest

FIXTURE = REPO / "tests" / "data" / "collection-v1"
EXPECTED = json.loads((REPO / "tests" / "data" / "collection-v1-queries.json").read_text())
FILES = ("manifest.json", "vectors.faiss", "vectors.faiss.json", "store.lmdb/data.mdb")


@pytest.fixture
def old(tmp_path: Path) -> Path:
    """A private copy of the previous release's collection."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "col"))


def assert_same_answers(c: Collection) -> None:
    """The three bundled query photos find what the previous release found: same images, same order, same scores."""
    for name, expected in EXPECTED.items():
        found = c.search(QUERIES / name, k=len(expected))
        assert [(r.id, r.path) for r in found] == [(e["id"], e["path"]) for e in expected], name
        # Queries now resample only the crop they keep (a few pixels a level or two apart): scores move by ~1e-4.
        np.testing.assert_allclose([r.score for r in found], [e["score"] for e in expected], atol=5e-4)


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in FILES}


def test_the_fixture_is_a_format_1_collection() -> None:
    assert json.loads((FIXTURE / "manifest.json").read_text())["version"] == 1 < VERSION


def test_a_reader_reads_an_old_collection_through_its_upgrade_and_writes_nothing(old: Path) -> None:
    before = file_bytes(old)
    with open_collection(old, device="cpu") as c:
        assert c.manifest.version == VERSION and c.manifest.model.hub_name_unknown is False
        assert c.info().images == 5 and c.info().index_factory == "Flat"
        assert_consistent(c)
        assert_same_answers(c)
    assert file_bytes(old) == before
    assert json.loads((old / "manifest.json").read_text())["version"] == 1


def test_the_first_writer_upgrades_an_old_collection_in_place(old: Path, tmp_path: Path) -> None:
    with open_collection(old, device="cpu") as c:
        c.remove([])  # any write takes the lock, and the upgrade comes with it
        saved = json.loads((old / "manifest.json").read_text())
        assert saved["version"] == VERSION and saved["model"]["hub_name_unknown"] is False
        assert saved["index"]["generation"] == c.store.generation
        skipped = c.store.skipped("/mnt/photos/notes.jpg")
        assert skipped is not None and skipped.reason == "not an image", "a skip record of today's form is kept"
        assert_same_answers(c)
        copy = tmp_path / "pizza-again.jpg"
        shutil.copy(SAMPLE_PHOTOS / "pizza" / "image_0001.jpg", copy)  # the content of the stored pizza.jpg
        report = c.add([copy], workers=0)
        assert (report.added, report.reused, report.embedded) == (1, 1, 0)
        assert_consistent(c)
    with open_collection(old, device="cpu") as c:
        assert len(c) == 6 and c.manifest.version == VERSION
        top = c.search(copy, k=2)
        assert {r.path for r in top} == {"/mnt/photos/pizza.jpg", str(copy.resolve())}


def test_an_upgrade_cut_short_before_its_manifest_is_done_again_by_the_next_writer(
    old: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:

        def crash(self: Manifest, path: Path) -> None:
            raise OSError("the power went out")

        patch.setattr(Manifest, "save", crash)
        with open_collection(old, device="cpu") as c, pytest.raises(OSError, match="power"):
            c.remove([])
    assert json.loads((old / "manifest.json").read_text())["version"] == 1
    with open_collection(old, device="cpu") as c:
        c.remove([])
        assert_same_answers(c)
    assert json.loads((old / "manifest.json").read_text())["version"] == VERSION


def test_skip_records_without_a_pixel_limit_or_marked_for_retry_are_dropped(old: Path) -> None:
    records = {
        b"/mnt/photos/old.jpg": {"size": 3, "mtime_ns": 1, "reason": "not an image"},
        b"/mnt/photos/flaky.jpg": {"size": 3, "mtime_ns": 1, "reason": "unreadable", "max_pixels": 9, "retry": True},
    }
    env = lmdb.open(str(old / "store.lmdb"), max_dbs=8)
    with env.begin(write=True) as txn:
        skipped = env.open_db(b"skipped", txn=txn)
        for key, value in records.items():
            txn.put(key, json.dumps(value).encode(), db=skipped)
    env.close()
    with open_collection(old, device="cpu") as c:
        c.remove([])
        assert c.store.skipped("/mnt/photos/old.jpg") is None
        assert c.store.skipped("/mnt/photos/flaky.jpg") is None
        assert c.store.skipped("/mnt/photos/notes.jpg") is not None


def test_a_sidecar_without_its_index_size_is_written_again_by_the_first_writer(old: Path) -> None:
    sidecar = old / "vectors.faiss.json"
    meta = json.loads(sidecar.read_text())
    del meta["file_bytes"]  # as an index saved before the sidecar named its file's size
    sidecar.write_text(json.dumps(meta))
    with open_collection(old, device="cpu") as c:
        assert_same_answers(c)
        assert "file_bytes" not in json.loads(sidecar.read_text()), "a reader writes nothing"
        c.save()
    assert json.loads(sidecar.read_text())["file_bytes"] == (old / "vectors.faiss").stat().st_size


@pytest.mark.parametrize(
    ("spec", "marked"),
    [
        ({"kind": "timm", "name": "resnet18.a1_in1k", "path": None}, True),
        ({"kind": "timm", "name": "hf-hub:someuser/tiny", "path": None}, False),
        ({"kind": "default", "name": "tf_efficientnet_lite0", "path": None}, False),
    ],
)
def test_a_format_1_timm_model_is_marked_as_maybe_named_after_a_hub_models_config(
    old: Path, spec: dict[str, object], marked: bool
) -> None:
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["model"]["spec"] = spec
    (old / "manifest.json").write_text(json.dumps(manifest))
    upgraded, on_disk = open_manifest(old / "manifest.json")
    assert on_disk == 1 and upgraded.model.hub_name_unknown is marked


def test_a_format_1_manifest_of_an_early_version_gets_the_index_fields_it_lacked(old: Path) -> None:
    manifest = json.loads((old / "manifest.json").read_text())
    for key in ("max_memory", "tuning"):
        del manifest["index"][key]
    (old / "manifest.json").write_text(json.dumps(manifest))
    with open_collection(old, device="cpu") as c:
        assert (c.manifest.index.max_memory, c.manifest.index.tuning) == (None, None)
        c.remove([])
    saved = json.loads((old / "manifest.json").read_text())["index"]
    assert saved["max_memory"] is None and saved["tuning"] is None
