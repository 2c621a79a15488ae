"""The command line end to end (click's CliRunner, in process): index, query, info, remove, their JSON and HTML
outputs, the collection env var, and one-line errors. One smoke test runs the installed console script."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import ok, one_line_error, run
from click.testing import Result
from conftest import SAMPLE_PHOTOS, SAMPLES, copy_collection

from cli.main import main

CLASSES = ("airplanes", "starfish", "sunflower")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Result]:
    """`simsearch index --json` of twelve sample photos (four each of three classes): (collection, photos, result)."""
    root = tmp_path_factory.mktemp("cli")
    photos = root / "photos"
    for name in CLASSES:
        (photos / name).mkdir(parents=True)
        for i in (1, 2, 3, 4):
            shutil.copy(SAMPLE_PHOTOS / name / f"image_000{i}.jpg", photos / name / f"image_000{i}.jpg")
    col = root / "col"
    result = run("index", photos, "-c", col, "--workers", "0", "--json", "-q")
    return col, photos.resolve(), result


def test_index_prints_a_json_report_on_stdout(indexed: tuple[Path, Path, Result]) -> None:
    col, _, result = indexed
    ok(result)
    report = json.loads(result.stdout)
    assert report["collection"] == str(col)
    assert (report["images"], report["added"], report["embedded"], report["skipped"]) == (12, 12, 12, 0)
    assert report["skipped_files"] == []
    assert {"updated", "moved", "removed", "unchanged", "reused", "seconds", "images_per_second"} <= set(report)
    assert (col / "manifest.json").is_file() and (col / "vectors.faiss").is_file()


def test_index_again_prints_a_summary_line_on_stderr_and_nothing_on_stdout(
    indexed: tuple[Path, Path, Result],
) -> None:
    col, photos, _ = indexed
    result = ok(run("index", photos, "-c", col, "--workers", "0"))
    assert result.stdout == ""
    summary = result.stderr.strip().splitlines()
    assert len(summary) == 1
    assert summary[0].startswith(f"12 images in {col}: 0 added")
    assert "12 unchanged" in summary[0] and "0 embedded" in summary[0]


def test_index_reports_each_skipped_file_on_stderr(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(SAMPLE_PHOTOS / "pizza" / "image_0001.jpg", photos / "pizza.jpg")
    (photos / "notes.jpg").write_text("not a photo")

    result = ok(run("index", photos, "-c", tmp_path / "col", "--workers", "0", "--json"))

    report = json.loads(result.stdout)
    assert (report["added"], report["skipped"]) == (1, 1)
    assert report["skipped_files"] == [{"path": str((photos / "notes.jpg").resolve()), "reason": "not an image"}]
    assert f"skipped {(photos / 'notes.jpg').resolve()}: not an image" in result.stderr


def test_query_prints_a_ranked_table_with_the_query_first(
    indexed: tuple[Path, Path, Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cli.output.stdout_is_tty", lambda: True)  # the header is for a terminal
    col, photos, _ = indexed
    photo = photos / "starfish" / "image_0002.jpg"
    result = ok(run("query", photo, "-c", col, "-k", "4"))

    lines = result.stdout.splitlines()
    assert lines[0].split() == ["rank", "score", "path"]
    rows = [line.split(maxsplit=2) for line in lines[1:]]
    assert [int(rank) for rank, _, _ in rows] == [1, 2, 3, 4]
    assert rows[0][2] == str(photo) and float(rows[0][1]) >= 0.999
    assert all(Path(path).is_file() for _, _, path in rows)


def test_query_json_lists_rank_score_and_path(indexed: tuple[Path, Path, Result]) -> None:
    col, photos, _ = indexed
    photo = photos / "sunflower" / "image_0003.jpg"
    out = json.loads(ok(run("query", photo, "-c", col, "-k", "3", "--json")).stdout)

    assert out["query"] == str(photo) and out["collection"] == str(col)
    results = out["results"]
    assert [r["rank"] for r in results] == [1, 2, 3]
    assert results[0]["path"] == str(photo) and results[0]["score"] >= 0.999
    assert all({"rank", "score", "path", "id", "width", "height"} <= set(r) for r in results)
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)


def test_query_html_writes_one_self_contained_page(indexed: tuple[Path, Path, Result], tmp_path: Path) -> None:
    col, _, _ = indexed
    page_path = tmp_path / "out.html"
    result = ok(run("query", SAMPLES / "queries" / "sunflower_0042.jpg", "-c", col, "-k", "5", "--html", page_path))

    assert f"wrote {page_path}" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.html"]
    page = page_path.read_text(encoding="utf-8")
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 6, "the query and its five results"
    assert all(src.startswith("data:image/jpeg;base64,") for src in sources)
    assert "http://" not in page and "https://" not in page and 'src="/' not in page
    assert re.search(r"<link\b|<script\b[^>]*\bsrc=|url\(", page) is None
    assert page.count("sunflower") >= 5


def test_query_html_makes_its_folder_and_an_unwritable_path_is_a_one_line_error(
    indexed: tuple[Path, Path, Result], tmp_path: Path
) -> None:
    col, _, _ = indexed
    query = SAMPLES / "queries" / "sunflower_0042.jpg"
    nested = tmp_path / "pages" / "today" / "out.html"
    ok(run("query", query, "-c", col, "-k", "2", "--html", nested))
    assert nested.stat().st_size > 0

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    message = one_line_error(run("query", query, "-c", col, "-k", "2", "--html", blocker / "out.html"))
    assert f"cannot write {blocker / 'out.html'}" in message


def test_info_describes_the_collection_as_text_and_json(indexed: tuple[Path, Path, Result]) -> None:
    col, _, _ = indexed
    text = ok(run("info", "-c", col)).stdout
    assert re.search(r"^\s*images\s+12$", text, re.M)
    assert re.search(r"^\s*index\s+Flat \(by size\)$", text, re.M)
    assert str(col) in text and "default:" in text

    facts = json.loads(ok(run("info", "-c", col, "--json")).stdout)
    assert facts["images"] == 12 and facts["path"] == str(col)
    assert facts["model"].startswith("default:") and facts["dim"] == 1280
    assert facts["index_factory"] == "Flat"


def test_remove_forgets_a_file_so_that_query_no_longer_lists_it(
    indexed: tuple[Path, Path, Result], tmp_path: Path
) -> None:
    col = copy_collection(indexed[0], tmp_path / "col")
    photos = indexed[1]
    doomed = photos / "airplanes" / "image_0001.jpg"

    result = ok(run("remove", doomed, "-c", col))
    assert result.stdout.strip() == f"removed {doomed}"
    assert "1 removed, 11 images left" in result.stderr

    out = json.loads(ok(run("query", doomed, "-c", col, "-k", "20", "--json")).stdout)
    paths = [r["path"] for r in out["results"]]
    assert len(paths) == 11 and str(doomed) not in paths

    removed = json.loads(ok(run("remove", photos / "starfish", "-c", col, "--json")).stdout)
    assert len(removed["removed"]) == 4 and removed["images"] == 7

    again = run("remove", doomed, "-c", col)
    assert again.exit_code == 1 and "Traceback" not in again.output
    assert again.stderr.strip().splitlines()[-1] == f"Error: nothing matched: {doomed}"


def test_the_collection_env_var_picks_the_collection_when_c_is_absent(indexed: tuple[Path, Path, Result]) -> None:
    col, photos, _ = indexed
    env = {"SIMSEARCH_COLLECTION": str(col)}
    facts = json.loads(ok(run("info", "--json", env=env)).stdout)
    assert facts["path"] == str(col)
    out = json.loads(ok(run("query", photos / "airplanes" / "image_0004.jpg", "-k", "1", "--json", env=env)).stdout)
    assert out["collection"] == str(col)
    assert out["results"][0]["path"] == str(photos / "airplanes" / "image_0004.jpg")


# ---------------------------------------------------------------------------------------------------- errors


def test_query_without_a_collection_is_a_one_line_error_that_points_to_index(tmp_path: Path) -> None:
    message = one_line_error(run("query", SAMPLES / "queries" / "pizza_0042.jpg", "-c", tmp_path / "none"))
    assert "simsearch index" in message
    assert not (tmp_path / "none").exists()


def test_query_with_a_text_file_is_a_one_line_error(indexed: tuple[Path, Path, Result], tmp_path: Path) -> None:
    text = tmp_path / "not-a-photo.jpg"
    text.write_text("hello\n")
    message = one_line_error(run("query", text, "-c", indexed[0]))
    assert "not an image" in message


def test_index_of_a_missing_folder_is_a_usage_error(tmp_path: Path) -> None:
    result = run("index", tmp_path / "no-such-folder", "-c", tmp_path / "col")
    assert result.exit_code == 2
    assert "does not exist" in result.stderr and "Usage:" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "col").exists()


def test_an_unknown_model_is_a_one_line_error_and_creates_nothing(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(SAMPLE_PHOTOS / "watch" / "image_0001.jpg", photos / "watch.jpg")
    message = one_line_error(run("index", photos, "-c", tmp_path / "col", "--model", "no_such_model_xyz"))
    assert "no_such_model_xyz" in message
    assert not (tmp_path / "col").exists()


def test_a_collection_built_with_another_model_is_a_one_line_error(
    indexed: tuple[Path, Path, Result], tmp_path: Path
) -> None:
    from simsearch.models import save_checkpoint
    from simsearch.models.registry import random_embedder

    checkpoint = save_checkpoint(random_embedder("test_efficientnet", embed_dim=8), tmp_path / "tiny")
    col, photos, _ = indexed
    message = one_line_error(run("index", photos, "-c", col, "--model", checkpoint, "--workers", "0"))
    assert "built with model" in message


def test_index_with_hflip_tta_records_it_for_queries_and_a_second_run_keeps_it(
    indexed: tuple[Path, Path, Result], tmp_path: Path
) -> None:
    from simsearch.models import TTA_MODES, save_checkpoint
    from simsearch.models.registry import random_embedder

    checkpoint = save_checkpoint(random_embedder("test_efficientnet", embed_dim=8), tmp_path / "tiny")
    _, photos, _ = indexed
    col = tmp_path / "col"
    ok(run("index", photos, "-c", col, "--model", checkpoint, "--tta", "hflip", "--workers", "0", "-q"))
    info = json.loads(ok(run("info", "-c", col, "--json")).stdout)
    assert info["model"] == "checkpoint:tiny+hflip"
    assert json.loads((col / "manifest.json").read_text())["model"]["spec"]["tta"] == "hflip"
    again = json.loads(ok(run("index", photos, "-c", col, "--model", checkpoint, "--json", "-q")).stdout)
    assert again["unchanged"] == 12 and again["embedded"] == 0  # its model, named again without --tta
    query = json.loads(ok(run("query", next(photos.rglob("*.jpg")), "-c", col, "-k", "1", "--json")).stdout)
    assert query["results"][0]["score"] >= 0.999
    bad = run("index", photos, "-c", col.parent / "other", "--tta", "x")
    assert bad.exit_code == 2 and "Invalid value for '--tta': 'x' is not 'hflip'" in bad.output
    assert not (col.parent / "other").exists()
    choices = next(p for p in main.commands["index"].params if p.name == "tta").type.choices  # type: ignore[attr-defined]
    assert tuple(choices) == TTA_MODES


# ---------------------------------------------------------------------------------------------------- console script


def test_the_installed_console_script_runs() -> None:
    script = Path(sys.executable).parent / "simsearch"
    if not script.exists():
        pytest.skip(f"no console script at {script} (package not pip-installed in this environment)")
    help_run = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert help_run.returncode == 0, help_run.stderr
    for command in ("index", "query", "info", "remove"):
        assert re.search(rf"^\s+{command}\s", help_run.stdout, re.M), help_run.stdout
    version = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=120)
    assert version.returncode == 0 and "0.1.0" in version.stdout


def test_the_cli_end_to_end_on_the_sample_photos(tmp_path: Path) -> None:
    """index (with decoding workers) -> query unseen photos -> index again -> corrupt files -> remove, all via the CLI,
    on the bundled Caltech-101 photos: the first six of each class are indexed, the last two are the queries."""
    classes = sorted(p.name for p in SAMPLE_PHOTOS.iterdir() if p.is_dir())
    photos = tmp_path / "photos"
    indexed: dict[str, list[Path]] = {}
    for name in classes:
        (photos / name).mkdir(parents=True)
        indexed[name] = sorted((SAMPLE_PHOTOS / name).glob("*.jpg"))[:6]
        for path in indexed[name]:
            shutil.copy(path, photos / name / path.name)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (photos / "notes.txt").write_text("shopping list")
    col = tmp_path / "col"

    first = json.loads(ok(run("index", photos, "-c", col, "--json", "-q", "--batch-size", "8")).stdout)
    n_photos = sum(len(v) for v in indexed.values())
    assert n_photos == 36 and first["added"] == first["embedded"] == n_photos
    assert {Path(s["path"]).name for s in first["skipped_files"]} == {"broken.jpg", "notes.txt"}

    # photos 7 and 8 of each class: not in the collection
    precisions = []
    for name in classes:
        for query in sorted((SAMPLE_PHOTOS / name).glob("*.jpg"))[6:]:
            hits = json.loads(ok(run("query", query, "-c", col, "-k", "5", "--json")).stdout)["results"]
            assert len(hits) == 5
            precisions.append(sum(Path(h["path"]).parent.name == name for h in hits) / 5)
    chance = 1 / len(classes)
    assert len(precisions) == 12 and sum(precisions) / len(precisions) >= 0.8 > chance

    again = json.loads(ok(run("index", photos, "-c", col, "--json", "-q")).stdout)
    assert (again["embedded"], again["added"], again["removed"], again["unchanged"]) == (0, 0, 0, n_photos)
    assert again["skipped"] == 2

    gone = indexed["sunflower"][0]
    ok(run("remove", photos / "sunflower" / gone.name, "-c", col))
    hits = json.loads(ok(run("query", photos / "sunflower" / gone.name, "-c", col, "-k", "20", "--json")).stdout)
    paths = [h["path"] for h in hits["results"]]
    assert str((photos / "sunflower" / gone.name).resolve()) not in paths
    assert hits["results"][0]["score"] < 0.999  # its own entry, which would score 1.0, is gone


@pytest.mark.parametrize("bad", ["4X", "lots", "-5M"])
def test_a_bad_max_memory_is_a_one_line_error_and_creates_nothing(tmp_path: Path, bad: str) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    message = one_line_error(run("index", photos, "-c", tmp_path / "col", "--max-memory", bad))
    assert "--max-memory" in message and bad in message
    assert not (tmp_path / "col").exists()


def test_max_memory_is_recorded_for_later_runs(indexed: tuple[Path, Path, Result], tmp_path: Path) -> None:
    col = copy_collection(indexed[0], tmp_path / "col")
    ok(run("index", indexed[1], "-c", col, "--workers", "0", "-q", "--max-memory", "512M"))
    assert json.loads((col / "manifest.json").read_text())["index"]["max_memory"] == 512 * 1024**2
    ok(run("index", indexed[1], "-c", col, "--workers", "0", "-q"))  # a run without the option keeps it
    assert json.loads((col / "manifest.json").read_text())["index"]["max_memory"] == 512 * 1024**2


@pytest.mark.parametrize(
    ("option", "value", "why"),
    [("--max-memory", "1K", "too small"), ("--index-factory", "garbage", "bad index factory 'garbage'")],
)
def test_index_settings_no_index_can_follow_are_refused_before_anything_is_kept(
    indexed: tuple[Path, Path, Result], tmp_path: Path, option: str, value: str, why: str
) -> None:
    """`--max-memory 1K` once left a new collection that no later command could open."""
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(SAMPLE_PHOTOS / "watch" / "image_0001.jpg", photos / "watch.jpg")
    new = tmp_path / "new"
    message = one_line_error(run("index", photos, "-c", new, option, value, "--workers", "0", "-q"))
    assert why in message
    assert not new.exists(), "a failed first run leaves no collection behind"
    ok(run("index", photos, "-c", new, "--workers", "0", "-q"))
    assert json.loads(ok(run("info", "-c", new, "--json")).stdout)["images"] == 1

    existing = copy_collection(indexed[0], tmp_path / "col")
    manifest = (existing / "manifest.json").read_bytes()
    one_line_error(run("index", indexed[1], "-c", existing, option, value, "--workers", "0", "-q"))
    assert (existing / "manifest.json").read_bytes() == manifest, "nothing was kept"
    facts = json.loads(ok(run("info", "-c", existing, "--json")).stdout)
    assert facts["images"] == 12 and facts["index_max_memory"] is None and facts["index_factory"] == "Flat"
