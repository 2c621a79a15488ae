"""`simsearch query` for people and for pipes: several images, ids, standard input and URLs, exclusions and a score
floor; every output mode, in process (CliRunner) and through a real pipe (a subprocess whose stdout is no TTY);
escaped control characters and UTF-8 JSON for odd names; exit statuses; arguments checked before the model loads."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import cli, ok, one_line_error, run
from conftest import REPO, SAMPLE_PHOTOS, SAMPLES
from photo_server import closed_port_url, photo_server

ODD_BYTES = b"caf\xe9 1.jpg"  # Latin-1 bytes from an old archive: not UTF-8


class Gallery:
    """Eight photos (four sunflowers, four watches) in a folder whose name has a space, one with a newline in its
    name and, where the file system takes it, one whose name is not UTF-8."""

    def __init__(self, root: Path) -> None:
        self.photos = (root / "my photos").resolve()
        self.photos.mkdir(parents=True)
        for kind in ("sunflower", "watch"):
            for i in (1, 2, 3, 4):
                shutil.copy(SAMPLE_PHOTOS / kind / f"image_000{i}.jpg", self.photos / f"{kind} {i}.jpg")
        self.newline = self.photos / "star\nfish.jpg"
        shutil.copy(SAMPLE_PHOTOS / "starfish" / "image_0001.jpg", self.newline)
        self.odd: Path | None = self.photos / os.fsdecode(ODD_BYTES)
        try:
            shutil.copy(SAMPLE_PHOTOS / "starfish" / "image_0002.jpg", self.odd)
        except (OSError, UnicodeEncodeError):
            self.odd = None
        self.col = root / "col"
        ok(run("index", self.photos, "-c", self.col, "--workers", "0", "-q"))
        from simsearch import open_collection

        with open_collection(self.col) as col:
            self.ids = {r.path: r.id for r in col.store.records()}

    def photo(self, kind: str, i: int) -> Path:
        return self.photos / f"{kind} {i}.jpg"

    def id_of(self, path: Path) -> int:
        return self.ids[str(path)]


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Gallery:
    return Gallery(tmp_path_factory.mktemp("query"))


def _no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any model load fail loudly: what a test runs must be decided before a model is needed."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("simsearch.collection.identity.recorded_model", refuse)


# ---------------------------------------------------------------------------------------------------- the table


def test_the_table_has_a_header_on_a_terminal_only(gallery: Gallery, monkeypatch: pytest.MonkeyPatch) -> None:
    piped = ok(run("query", gallery.photo("watch", 1), "-c", gallery.col, "-k", "3")).stdout.splitlines()
    assert len(piped) == 3 and piped[0].split(maxsplit=2)[:2] == ["1", "1.0000"]
    monkeypatch.setattr("cli.output.stdout_is_tty", lambda: True)
    shown = ok(run("query", gallery.photo("watch", 1), "-c", gallery.col, "-k", "3")).stdout.splitlines()
    assert shown[0].split() == ["rank", "score", "path"] and shown[1:] == piped


def test_the_table_escapes_control_characters_and_bytes_of_names(gallery: Gallery) -> None:
    lines = ok(run("query", "--id", gallery.id_of(gallery.newline), "-c", gallery.col, "-k", "20")).stdout
    rows = lines.splitlines()
    assert len(rows) == len(gallery.ids) - 1, "one line per result: no name breaks a row"
    assert all(re.fullmatch(r"\s*\d+  -?\d\.\d{4}  /.*", row) for row in rows), rows
    assert not any(row.endswith("star\\nfish.jpg") for row in rows)  # itself is left out (an --id query)
    with_self = ok(run("query", "--id", gallery.id_of(gallery.newline), "-c", gallery.col, "--include-self", "-k", "1"))
    assert with_self.stdout.rstrip("\n").endswith("my photos/star\\nfish.jpg")
    if gallery.odd is not None:
        odd = ok(run("query", "--id", gallery.id_of(gallery.odd), "--include-self", "-c", gallery.col, "-k", "1"))
        assert odd.stdout.rstrip("\n").endswith("my photos/caf\\xe9 1.jpg")


# ---------------------------------------------------------------------------------------------------- queries


def test_several_images_make_one_query_and_exclude_self_leaves_them_out(gallery: Gallery) -> None:
    a, b = gallery.photo("sunflower", 1), gallery.photo("sunflower", 2)
    both = json.loads(ok(run("query", a, b, "-c", gallery.col, "-k", "4", "--json")).stdout)
    assert both["query"] == f"{a} + {b}" and both["images"] == [str(a), str(b)]
    assert {r["path"] for r in both["results"][:2]} == {str(a), str(b)}, "the mean is closest to its parts"
    out = json.loads(ok(run("query", a, b, "-c", gallery.col, "-k", "2", "--exclude-self", "--json")).stdout)
    assert {Path(r["path"]).name for r in out["results"]} == {"sunflower 3.jpg", "sunflower 4.jpg"}
    assert [r["rank"] for r in out["results"]] == [1, 2]


def test_an_id_query_needs_no_model_and_leaves_itself_out_by_default(
    gallery: Gallery, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_model(monkeypatch)
    watch = gallery.photo("watch", 2)
    out = json.loads(ok(run("query", "--id", gallery.id_of(watch), "-c", gallery.col, "-k", "3", "--json")).stdout)
    assert out["query"] == f"id:{gallery.id_of(watch)}"
    assert str(watch) not in [r["path"] for r in out["results"]]
    assert all(Path(r["path"]).name.startswith("watch") for r in out["results"])
    again = json.loads(
        ok(run("query", "--id", gallery.id_of(watch), "--include-self", "-c", gallery.col, "--json")).stdout
    )
    assert again["results"][0]["path"] == str(watch) and again["results"][0]["score"] >= 0.9999

    message = one_line_error(run("query", "--id", "999999", "-c", gallery.col))
    assert "no image with id 999999" in message


def test_an_image_file_shows_itself_first_unless_excluded(gallery: Gallery) -> None:
    watch = gallery.photo("watch", 3)
    first = json.loads(ok(run("query", watch, "-c", gallery.col, "-k", "1", "--json")).stdout)
    assert first["results"][0]["path"] == str(watch)
    out = json.loads(ok(run("query", watch, "-c", gallery.col, "-k", "1", "--exclude-self", "--json")).stdout)
    assert out["results"][0]["path"] != str(watch) and Path(out["results"][0]["path"]).name.startswith("watch")


def test_standard_input_is_a_query(gallery: Gallery) -> None:
    data = gallery.photo("sunflower", 3).read_bytes()
    out = json.loads(ok(run("query", "-", "-c", gallery.col, "-k", "1", "--json", input=data)).stdout)
    assert out["query"] == "-" and out["results"][0]["path"] == str(gallery.photo("sunflower", 3))
    bad = run("query", "-", "-", "-c", gallery.col)
    assert bad.exit_code == 2 and "only once" in bad.stderr


def test_a_url_is_a_query_and_an_unreachable_one_a_one_line_error(
    gallery: Gallery, monkeypatch: pytest.MonkeyPatch
) -> None:
    with photo_server() as base:
        url = f"{base}/caltech101/watch/image_0004.jpg"
        out = json.loads(ok(run("query", url, "-c", gallery.col, "-k", "1", "--json")).stdout)
    assert out["query"] == url and out["results"][0]["path"] == str(gallery.photo("watch", 4))
    _no_model(monkeypatch)
    message = one_line_error(run("query", closed_port_url(), "-c", gallery.col))
    assert "cannot fetch" in message and "offline?" in message


def test_subtract_moves_the_query_away_and_the_same_image_cancels_out(gallery: Gallery) -> None:
    sunflower, watch = gallery.photo("sunflower", 1), gallery.photo("watch", 1)
    plain = json.loads(ok(run("query", sunflower, "-c", gallery.col, "-k", "20", "--json")).stdout)["results"]
    minus = run("query", sunflower, "--subtract", watch, "-c", gallery.col, "-k", "20", "--json")
    moved = json.loads(ok(minus).stdout)
    assert moved["subtract"] == [str(watch)] and moved["query"] == f"{sunflower} - {watch}"
    score = {r["path"]: r["score"] for r in moved["results"]}
    before = {r["path"]: r["score"] for r in plain}
    assert score[str(watch)] < before[str(watch)]
    assert moved["results"][-1]["path"].startswith(str(gallery.photos / "watch"))
    assert "cancel out" in one_line_error(run("query", watch, "--subtract", watch, "-c", gallery.col))


def test_min_score_leaves_out_weaker_results(gallery: Gallery) -> None:
    photo = gallery.photo("sunflower", 2)
    everything = json.loads(ok(run("query", photo, "-c", gallery.col, "-k", "20", "--json")).stdout)["results"]
    floor = (everything[3]["score"] + everything[4]["score"]) / 2
    assert everything[3]["score"] > floor > everything[4]["score"]
    kept = json.loads(ok(run("query", photo, "-c", gallery.col, "-k", "20", "--min-score", floor, "--json")).stdout)
    assert [r["id"] for r in kept["results"]] == [r["id"] for r in everything[:4]]
    assert all(r["score"] >= floor for r in kept["results"])


def test_each_searches_with_every_image_on_its_own_one_json_line_each(gallery: Gallery) -> None:
    a, b = gallery.photo("sunflower", 4), gallery.photo("watch", 4)
    lines = ok(run("query", a, b, "--id", gallery.id_of(a), "--each", "-c", gallery.col, "-k", "2", "--jsonl")).stdout
    answers = [json.loads(line) for line in lines.splitlines()]
    assert [x["query"] for x in answers] == [str(a), str(b), f"id:{gallery.id_of(a)}"]
    assert answers[0]["results"][0]["path"] == str(a) and answers[1]["results"][0]["path"] == str(b)
    assert answers[2]["results"][0]["path"] != str(a)  # an id query leaves itself out
    doc = json.loads(ok(run("query", a, b, "--each", "-c", gallery.col, "-k", "2", "--json")).stdout)
    assert [q["query"] for q in doc["queries"]] == [str(a), str(b)] and doc["collection"] == str(gallery.col)


def test_scores_have_four_decimals_in_text_and_are_rounded_in_json(gallery: Gallery) -> None:
    photo = gallery.photo("watch", 2)
    tsv = ok(run("query", photo, "-c", gallery.col, "-k", "5", "--tsv")).stdout
    assert all(re.fullmatch(r"-?\d\.\d{4}", row.split("\t")[1]) for row in tsv.splitlines())
    out = json.loads(ok(run("query", photo, "-c", gallery.col, "-k", "5", "--json")).stdout)
    assert all(r["score"] == round(r["score"], 4) for r in out["results"])


def test_json_is_valid_utf8_and_a_name_that_is_not_round_trips(gallery: Gallery) -> None:
    if gallery.odd is None:
        pytest.skip("this file system refuses names that are not UTF-8")
    result = ok(run("query", "--id", gallery.id_of(gallery.odd), "--include-self", "-c", gallery.col, "--json"))
    text = result.stdout_bytes.decode("utf-8")  # strict: no lone surrogates, no invalid bytes
    assert "\\udc" not in text
    hit = json.loads(text)["results"][0]
    assert hit["path"] == str(gallery.photos / "caf\ufffd 1.jpg")
    assert os.fsdecode(base64.b64decode(hit["path_b64"])) == str(gallery.odd)
    assert Path(os.fsdecode(base64.b64decode(hit["path_b64"]))).is_file()
    assert all("path_b64" not in r for r in json.loads(text)["results"][1:] if "caf" not in r["path"])


# ---------------------------------------------------------------------------------------------------- exits


MODES = ["", "--paths", "-0", "--tsv", "--json", "--jsonl"]


@pytest.mark.parametrize("mode", MODES)
def test_exit_statuses_are_the_same_in_every_output_mode(gallery: Gallery, mode: str, tmp_path: Path) -> None:
    flags = [mode] if mode else []
    photo = gallery.photo("watch", 1)
    assert ok(run("query", photo, "-c", gallery.col, "-k", "1", *flags)).stdout
    missing = run("query", photo, "-c", tmp_path / "none", *flags)
    assert one_line_error(missing).endswith("build one with `simsearch index DIR`") and missing.stdout == ""
    typo = run("query", tmp_path / "typo.jpg", "-c", gallery.col, *flags)
    assert typo.exit_code == 2 and "does not exist" in typo.stderr and typo.stdout == ""
    text = tmp_path / "text.jpg"
    text.write_text("hello")
    assert "not an image" in one_line_error(run("query", text, "-c", gallery.col, *flags))


def test_usage_errors_exit_2(gallery: Gallery) -> None:
    assert run("query", "-c", gallery.col).exit_code == 2
    both = run("query", gallery.photo("watch", 1), "--json", "--tsv", "-c", gallery.col)
    assert both.exit_code == 2 and "choose one output mode" in both.stderr
    html = run("query", gallery.photo("watch", 1), "--id", "1", "--each", "--html", "x.html", "-c", gallery.col)
    assert html.exit_code == 2


def test_ctrl_c_exits_130_in_process(gallery: Gallery, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("simsearch.querying.read_query", interrupted)
    result = run("query", gallery.photo("watch", 1), "-c", gallery.col, "--json")
    assert result.exit_code == 130 and "Aborted" not in result.output and result.stdout == ""


def test_bad_input_and_a_missing_gpu_are_refused_before_the_model_loads(
    gallery: Gallery, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _no_model(monkeypatch)
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    assert "not an image" in one_line_error(run("query", text, "-c", gallery.col))
    import torch

    if torch.cuda.is_available():
        return
    message = one_line_error(run("query", gallery.photo("watch", 1), "-c", gallery.col, "--device", "cuda"))
    assert "no CUDA GPU" in message


# ---------------------------------------------------------------------------------------------------- real pipes


@pytest.fixture(scope="module")
def watch_id(gallery: Gallery) -> int:
    return gallery.id_of(gallery.photo("watch", 1))


def _expected(gallery: Gallery, watch_id: int) -> list[str]:
    out = json.loads(ok(run("query", "--id", watch_id, "-c", gallery.col, "-k", "3", "--json")).stdout)
    return [r["path"] for r in out["results"]]


def test_pipe_table_has_no_header(gallery: Gallery, watch_id: int) -> None:
    done = cli("query", "--id", watch_id, "-c", gallery.col, "-k", "3")
    assert done.returncode == 0, done.stderr
    rows = done.stdout.decode().splitlines()
    assert len(rows) == 3 and [row.split(maxsplit=2)[2] for row in rows] == _expected(gallery, watch_id)


def test_pipe_paths_are_bare_lines(gallery: Gallery, watch_id: int) -> None:
    done = cli("query", "--id", watch_id, "-c", gallery.col, "-k", "3", "-f")
    assert done.returncode == 0 and done.stdout.decode().splitlines() == _expected(gallery, watch_id)


def test_pipe_nul_separates_paths_exactly(gallery: Gallery) -> None:
    done = cli("query", "--id", gallery.id_of(gallery.newline), "--include-self", "-c", gallery.col, "-k", "2", "-0")
    assert done.returncode == 0
    paths = done.stdout.split(b"\0")
    assert paths[-1] == b"" and len(paths) == 3
    assert paths[0] == os.fsencode(gallery.newline), "the newline of the name is kept as it is"


def test_pipe_tsv_has_four_columns_and_escapes_names(gallery: Gallery) -> None:
    done = cli("query", "--id", gallery.id_of(gallery.newline), "--include-self", "-c", gallery.col, "-k", "3", "--tsv")
    assert done.returncode == 0
    rows = [line.split(b"\t") for line in done.stdout.splitlines()]
    assert len(rows) == 3 and all(len(row) == 4 for row in rows)
    assert rows[0][0] == b"1" and rows[0][2] == str(gallery.id_of(gallery.newline)).encode()
    assert rows[0][3] == os.fsencode(str(gallery.photos)) + b"/star\\nfish.jpg"


def test_pipe_json_is_one_document(gallery: Gallery, watch_id: int) -> None:
    done = cli("query", "--id", watch_id, "-c", gallery.col, "-k", "3", "--json")
    assert done.returncode == 0
    out = json.loads(done.stdout.decode("utf-8"))
    assert [r["path"] for r in out["results"]] == _expected(gallery, watch_id)


def test_pipe_jsonl_is_one_line_a_query(gallery: Gallery, watch_id: int) -> None:
    done = cli("query", "--id", watch_id, "--id", watch_id + 1, "--each", "-c", gallery.col, "-k", "3", "--jsonl")
    assert done.returncode == 0
    lines = done.stdout.decode("utf-8").splitlines()
    assert [json.loads(line)["query"] for line in lines] == [f"id:{watch_id}", f"id:{watch_id + 1}"]


def test_paths_with_spaces_go_through_xargs(gallery: Gallery) -> None:
    """`simsearch query a.jpg b.jpg --exclude-self --paths | xargs -d '\\n' ls` on a folder named with a space."""
    if shutil.which("xargs") is None:
        pytest.skip("no xargs")
    a, b = gallery.photo("sunflower", 1), gallery.photo("watch", 1)
    command = (
        f"{sys.executable} -m cli.main query '{a}' '{b}' -c '{gallery.col}' -k 4 --exclude-self --paths "
        "| xargs -d '\\n' ls"
    )
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    listed = done.stdout.decode().splitlines()
    assert len(listed) == 4 and all(Path(p).is_file() and " " in p for p in listed)
    assert str(a) not in listed and str(b) not in listed


# ---------------------------------------------------------------------------------------------------- the page


def test_the_html_page_links_results_to_their_files_and_wraps_paths(gallery: Gallery, tmp_path: Path) -> None:
    from urllib.parse import unquote, urlparse

    page_path = tmp_path / "page.html"
    a, b, minus = gallery.photo("sunflower", 1), gallery.photo("sunflower", 2), gallery.photo("watch", 1)
    args = ("query", a, b, "--subtract", minus, "-c", gallery.col, "-k", "3", "--exclude-self")
    results = json.loads(ok(run(*args, "--html", page_path, "--json")).stdout)["results"]
    page = page_path.read_text(encoding="utf-8")
    figures = re.findall(r"<figure( class=\"[^\"]*\")?>", page)
    assert len(figures) == 6, "three query cards and three results, all in one grid"
    assert [f for f in figures if f] == [' class="query"', ' class="query"', ' class="query minus"']
    assert "grid-template-columns: repeat(auto-fill, 200px)" in page and "break-all" not in page
    links = {unquote(urlparse(h).path) for h in re.findall(r'href="(file://[^"]*)"', page)}
    assert links == {str(a), str(b), str(minus)} | {r["path"] for r in results}
    assert all(Path(p).is_file() for p in links)
    assert "my photos/<wbr>sunflower 1.jpg" in page
    assert str(SAMPLES) not in page
