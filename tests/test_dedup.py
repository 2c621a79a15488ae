"""`simsearch dedup` and `calibrate` on real photos: a folder of bundled Caltech-101 photos with planted exact copies
and near-duplicate variants made here from those photos; it finds them, keeps the right file, deletes nothing by
default, moves or deletes only inside the indexed folder and never a reference file."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from conftest import SAMPLE_PHOTOS
from PIL import Image

from cli.main import main
from simsearch import Collection
from simsearch.dedup import duplicates_of, find_duplicates, stored
from simsearch.dedup.variants import make_variant

THRESHOLD = "0.88"
#: (source photo, planted file, transform or "copy") under the test folder.
PLANTS = [
    ("airplanes/image_0001.jpg", "edits/plane_crop.jpg", "crop"),
    ("airplanes/image_0001.jpg", "edits/sub/plane_copy.jpg", "copy"),
    ("pizza/image_0001.jpg", "edits/pizza_mirror.jpg", "mirror"),
    ("starfish/image_0002.jpg", "edits/starfish_text.jpg", "text"),
]


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def _plant(folder: Path) -> dict[str, Path]:
    """A folder of 18 bundled photos (3 of each class) plus the planted copies and variants."""
    for cls in sorted(p.name for p in SAMPLE_PHOTOS.iterdir() if p.is_dir()):
        for photo in sorted((SAMPLE_PHOTOS / cls).glob("*.jpg"))[:3]:
            (folder / cls).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(photo, folder / cls / photo.name)
    planted = {}
    rng = np.random.default_rng(0)
    for source, name, how in PLANTS:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if how == "copy":
            shutil.copyfile(folder / source, path)
        else:
            with Image.open(folder / source) as im:
                data, _ = make_variant(im, how, rng)
            path.write_bytes(data)
        planted[name] = path
    return planted


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dedup") / "photos"
    _plant(folder)
    return folder.resolve()


@pytest.fixture(scope="module")
def built(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A collection of the planted folder, built once; tests that write copy it."""
    path = tmp_path_factory.mktemp("dedup-col") / "col"
    with Collection.open(path, create=True, device="cpu") as col:
        col.index_folder(photos, workers=0)
    return path


def _fresh(photos: Path, built: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the photos and a collection of them (the store keeps absolute paths: indexed anew)."""
    folder = tmp_path / "photos"
    shutil.copytree(photos, folder)
    col = tmp_path / "col"
    assert run("index", folder, "-c", col, "-q").exit_code == 0
    return folder.resolve(), col


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*.jpg")}


def test_finds_the_planted_copies_and_variants_and_keeps_the_original(photos: Path, built: Path) -> None:
    with Collection.open(built) as col:
        report = find_duplicates(col, threshold=float(THRESHOLD))
    groups = {frozenset(str(Path(m.record.path).relative_to(photos)) for m in g.members): g for g in report.groups}
    plane = frozenset({"airplanes/image_0001.jpg", "edits/plane_crop.jpg", "edits/sub/plane_copy.jpg"})
    assert plane in groups
    assert frozenset({"pizza/image_0001.jpg", "edits/pizza_mirror.jpg"}) in groups
    assert frozenset({"starfish/image_0002.jpg", "edits/starfish_text.jpg"}) in groups
    group = groups[plane]
    # The original and its byte copy have the most pixels; the tie goes to the shorter path.
    assert group.kept.path == str(photos / "airplanes/image_0001.jpg")
    assert {Path(r.path).name for r in group.remove} == {"plane_crop.jpg", "plane_copy.jpg"}
    assert group.kind == "mixed" and "largest" in group.reason
    exact = {Path(m.record.path).name: m.exact for m in group.members}
    assert exact == {"image_0001.jpg": True, "plane_copy.jpg": True, "plane_crop.jpg": False}
    for g in report.groups:
        assert g.weakest >= float(THRESHOLD)
        # The default rule: most pixels, then most bytes (a variant re-encoded at a higher quality can win).
        best = max(g.members, key=lambda m: (m.record.width * m.record.height, m.record.size)).record
        assert g.kept.id == best.id


def test_duplicates_of_one_image(photos: Path, built: Path) -> None:
    with Collection.open(built) as col:
        found = col.duplicates_of(photos / "airplanes/image_0001.jpg", threshold=0.88)
        from_bytes = duplicates_of(col, (photos / "pizza/image_0001.jpg").read_bytes(), threshold=0.88)
        buffer = io.BytesIO()
        Image.open(photos / "pizza/image_0001.jpg").save(buffer, format="PNG")
        unrelated = col.duplicates_of(SAMPLE_PHOTOS / "watch/image_0008.jpg", threshold=0.88)
    names = [(Path(m.record.path).name, m.exact) for m in found]
    assert names[:2] == [("image_0001.jpg", True), ("plane_copy.jpg", True)]
    assert ("plane_crop.jpg", False) in names
    assert {Path(m.record.path).name for m in from_bytes} == {"image_0001.jpg", "pizza_mirror.jpg"}
    assert unrelated == []


def test_the_default_run_is_a_dry_run(photos: Path, built: Path, tmp_path: Path) -> None:
    folder, col = _fresh(photos, built, tmp_path)
    before = _files(folder)
    result = run("dedup", folder, "-c", col, "--threshold", THRESHOLD, "-q")
    assert result.exit_code == 0, result.output
    assert "dry run: nothing was changed" in result.output
    assert "keep" in result.output and "remove" in result.output and "why: largest" in result.output
    assert _files(folder) == before
    # The planted files are newer than the photos they were made from.
    as_json = run("dedup", folder, "-c", col, "--threshold", THRESHOLD, "--keep", "oldest", "--json", "-q")
    report = json.loads(as_json.stdout)
    assert sorted(Path(p).name for p in report["to_remove"]) == [
        "pizza_mirror.jpg",
        "plane_copy.jpg",
        "plane_crop.jpg",
        "starfish_text.jpg",
    ]
    assert report["threshold_origin"] == "given" and report["actions"] == []
    assert _files(folder) == before
    as_csv = run("dedup", folder, "-c", col, "--threshold", THRESHOLD, "--csv", "-q")
    lines = as_csv.stdout.splitlines()
    assert lines[0].startswith("group,kind,action,path,score")
    assert sum(",remove," in line for line in lines) == 4
    page = tmp_path / "dups.html"
    assert run("dedup", folder, "-c", col, "--threshold", THRESHOLD, "--html", page, "-q").exit_code == 0
    assert page.read_text().count('<figure class="remove">') == 4 and "data:image/jpeg;base64" in page.read_text()
    assert _files(folder) == before


def test_move_to_moves_only_the_duplicates_and_forgets_them(photos: Path, built: Path, tmp_path: Path) -> None:
    folder, col = _fresh(photos, built, tmp_path)
    before = _files(folder)
    aside = tmp_path / "aside"
    result = run("dedup", folder, "-c", col, "--threshold", THRESHOLD, "--keep", "oldest", "--move-to", aside, "-q")
    assert result.exit_code == 0, result.output
    moved = {"edits/plane_crop.jpg", "edits/sub/plane_copy.jpg", "edits/pizza_mirror.jpg", "edits/starfish_text.jpg"}
    assert _files(aside) == moved  # the tree under the folder is kept
    assert _files(folder) == before - moved
    with Collection.open(col) as c:
        assert len(c) == len(before) - len(moved)
    again = run("dedup", folder, "-c", col, "--threshold", THRESHOLD, "--json", "-q")
    assert json.loads(again.stdout)["groups"] == []


def test_delete_needs_the_flag_a_folder_and_spares_reference_files(photos: Path, built: Path, tmp_path: Path) -> None:
    folder, col = _fresh(photos, built, tmp_path)
    assert run("dedup", "-c", col, "--threshold", THRESHOLD, "--delete").exit_code != 0  # no FOLDER: refused
    result = run("dedup", folder, "-c", col, "--threshold", THRESHOLD, "--reference", folder / "edits", "--json", "-q")
    report = json.loads(result.stdout)
    plane = next(g for g in report["groups"] if "plane" in g["keep"])
    # Files in the reference folder are all kept, whatever the keep rule says.
    assert plane["reason"].startswith("in a reference folder")
    assert not any(Path(p).is_relative_to(folder / "edits") for p in report["to_remove"])
    before = _files(folder)
    deleted = run("dedup", folder, "-c", col, "--threshold", THRESHOLD, "--reference", folder / "edits", "--delete")
    assert deleted.exit_code == 0, deleted.output
    gone = before - _files(folder)
    assert gone == {"airplanes/image_0001.jpg", "pizza/image_0001.jpg", "starfish/image_0002.jpg"}
    assert all((folder / p).exists() for p in before if p.startswith("edits/"))


def test_against_another_collection(photos: Path, built: Path, tmp_path: Path) -> None:
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    shutil.copyfile(photos / "edits/plane_crop.jpg", uploads / "new_plane.jpg")
    shutil.copyfile(photos / "pizza/image_0001.jpg", uploads / "pizza_again.jpg")
    shutil.copyfile(SAMPLE_PHOTOS / "watch/image_0008.jpg", uploads / "watch.jpg")
    result = run("dedup", uploads, "-c", tmp_path / "up", "--against", built, "--threshold", THRESHOLD, "--json", "-q")
    assert result.exit_code == 0, result.output
    found = {Path(f["path"]).name: f["matches"] for f in json.loads(result.stdout)["found"]}
    assert set(found) == {"new_plane.jpg", "pizza_again.jpg"}
    assert found["pizza_again.jpg"][0]["exact"] is True
    assert Path(found["new_plane.jpg"][0]["path"]).name in {"image_0001.jpg", "plane_copy.jpg", "plane_crop.jpg"}


def test_the_shipped_calibration_of_the_default_model_is_the_default_line(
    photos: Path, built: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    shipped = json.loads((stored.SHIPPED / "default-near-duplicate.json").read_text())
    report = json.loads(run("dedup", photos, "-c", built, "--json", "-q").stdout)
    point = next(p for p in shipped["points"] if p["goal"] == stored.DEFAULT_PRECISION)
    assert report["threshold"] == pytest.approx(point["threshold"], abs=1e-6)
    assert report["threshold_origin"].startswith(f"calibrated for precision {stored.DEFAULT_PRECISION:g}")
    assert all(m["meaning"].startswith("p") for g in report["groups"] for m in g["members"])
    # Without any calibration for the model there is no default line: the error says what to do.
    monkeypatch.setattr(stored, "SHIPPED", tmp_path)
    without = run("dedup", photos, "-c", built, "-q")
    assert without.exit_code != 0 and "calibrate" in without.output and "--threshold" in without.output


def test_calibrate_keeps_thresholds_that_dedup_then_uses(photos: Path, built: Path, tmp_path: Path) -> None:
    folder, col = _fresh(photos, built, tmp_path)
    result = run("calibrate", SAMPLE_PHOTOS, "-c", col, "--variants", "2", "--limit", "36", "--json")
    assert result.exit_code == 0, result.output
    fitted = json.loads(result.stdout)
    assert fitted["kind"] == "near-duplicate" and fitted["positives"] == 12 * 3
    assert (col / "calibration-near-duplicate.json").is_file()
    point = fitted["points"][0]
    assert 0 <= point["precision_ci"][0] <= point["precision"] <= point["precision_ci"][1] <= 1
    goal = point["goal"]
    report = json.loads(run("dedup", folder, "-c", col, "--precision", str(goal), "--json", "-q").stdout)
    assert report["threshold"] == pytest.approx(point["threshold"], abs=1e-6)
    assert report["threshold_origin"].startswith(f"calibrated for precision {goal:g}")
    scores = [m for g in report["groups"] for m in g["members"][1:]]
    assert scores and all(m["meaning"].startswith("p") for m in scores)
    # A calibration kept in the collection gives query results their meaning too.
    shown = run("query", folder / "pizza/image_0001.jpg", "-c", col, "-k", "2")
    assert shown.stdout.splitlines()[0].split()[2].startswith("p>=")  # rank, score, meaning, path
    top = json.loads(run("query", folder / "pizza/image_0001.jpg", "-c", col, "-k", "1", "--json").stdout)
    assert top["results"][0]["meaning"].startswith("p>=")
