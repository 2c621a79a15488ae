"""The `pack` command end to end (click's CliRunner, in process): shared sets packed losslessly, eval on the packed
store, and the one-line errors of pack and eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import ok, one_line_error, run
from conftest import SAMPLE_PHOTOS
from PIL import Image


def test_pack_takes_a_shared_set_by_name_losslessly(tmp_path: Path) -> None:
    import numpy as np

    from simsearch.data import DataNotFoundError, open_image_dataset, open_shared_split

    try:
        source = open_shared_split("fashion-mnist:test")
    except DataNotFoundError as exc:
        pytest.skip(f"Fashion-MNIST not found ({exc}); set SIMSEARCH_DATA to the shared data folder")
    store = tmp_path / "fashion_test.lmdb"
    packed = json.loads(ok(run("pack", "fashion-mnist:test", store, "--json")).stdout)
    assert packed == {"out": str(store), "images": 10_000, "classes": 10}
    back = open_image_dataset(store)
    assert back.classes == list(source.classes) and np.array_equal(np.asarray(back.labels), source.labels)
    for i in (0, 4_321, 9_999):  # grey arrays come back pixel for pixel (PNG)
        assert np.array_equal(np.asarray(back[i][0].convert("L")), np.asarray(source[i][0]))


def test_pack_then_eval_on_the_lmdb_store_writes_a_record_and_a_png_beside_it(tmp_path: Path) -> None:
    """The sample photos: pack the class tree into LMDB, evaluate the default model on it, draw the recall curve and
    the PCA of the embeddings; a second eval with --plot alone overlays the first record (--compare)."""
    from PIL import Image

    store = tmp_path / "photos.lmdb"
    packed = json.loads(ok(run("pack", SAMPLE_PHOTOS, store, "--max-side", "256", "--json")).stdout)
    assert packed == {"out": str(store), "images": 48, "classes": 6}

    record_path = tmp_path / "eval" / "default.json"
    result = ok(run("eval", store, "--model", "default", "--device", "cpu", "--out", record_path))
    record = json.loads(record_path.read_text())
    assert (record["images"], record["classes"]) == (48, 6)
    # The default k: the powers of two, and 10.
    assert [k for k in record["metrics"] if k.startswith("recall@")] == [
        f"recall@{k}" for k in (1, 2, 4, 8, 10, 16, 32)
    ]
    assert record["metrics"]["recall@1"] > 0.8  # six visually distinct classes
    png = record_path.with_suffix(".png")
    assert record["plot"] == str(png) and f"wrote {record_path}, {png}" in result.stderr
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (1200, 550)

    alone = tmp_path / "alone.png"
    ok(run("eval", store, "--model", "default", "--device", "cpu", "--plot", alone, "--compare", record_path, "--json"))
    with Image.open(alone) as image:
        assert image.size == (1200, 550)
    assert alone.read_bytes() != png.read_bytes()  # two curves now


@pytest.mark.parametrize("command", ["eval", "pack"])
def test_a_shared_set_without_simsearch_data_is_a_one_line_error_naming_the_variable(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["--model", "default"] if command == "eval" else [tmp_path / "out.lmdb"]
    line = one_line_error(run(command, "caltech101:test", *args, env={"SIMSEARCH_DATA": None}))
    assert "$SIMSEARCH_DATA" in line and line.count("SIMSEARCH_DATA") == 1, line
    assert not (tmp_path / "out.lmdb").exists()


def test_pack_into_an_existing_folder_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "tree" / "a").mkdir(parents=True)
    (tmp_path / "out.lmdb").mkdir()
    assert "already exists" in one_line_error(run("pack", tmp_path / "tree", tmp_path / "out.lmdb"))


def test_pack_overwrite_refuses_a_folder_that_is_not_an_lmdb_store(tmp_path: Path) -> None:
    (tmp_path / "tree" / "a").mkdir(parents=True)
    Image.new("RGB", (8, 6), (0, 0, 255)).save(tmp_path / "tree" / "a" / "x.png")
    line = one_line_error(run("pack", tmp_path / "tree", tmp_path / "tree", "--overwrite"))
    assert "not an LMDB image folder" in line
    assert (tmp_path / "tree" / "a" / "x.png").is_file()


def test_eval_compare_with_a_file_that_is_not_a_record_is_a_one_line_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"hello": 1}')
    args = ("eval", SAMPLE_PHOTOS, "--model", "default", "--plot", tmp_path / "p.png", "--compare", bogus)
    line = one_line_error(run(*args))
    assert "not a `simsearch eval` record" in line
