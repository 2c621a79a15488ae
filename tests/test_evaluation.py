"""Scoring a model (`simsearch.evaluation`) and the `eval` command: leave-one-out and against a gallery, test-time
flips, unreadable images, the typed records and where they are written, the Omniglot one-shot runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from training_helpers import TINY, make_classes, truncate_image

from simsearch.data import DataNotFoundError, ImageFolderDataset
from simsearch.evaluation import (
    EvalRecord,
    EvaluationError,
    default_record_path,
    embed_dataset,
    evaluate,
    evaluate_embeddings,
    evaluate_labelled,
    labels_by_class_name,
    read_record,
)
from simsearch.models import load_embedder


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_classes(tmp_path_factory.mktemp("classes"), n_classes=6, per_class=6)


@pytest.mark.parametrize("workers", [0, 1])
def test_scoring_leaves_out_a_truncated_image_and_names_it_where_asked_else_raises(
    tmp_path: Path, workers: int
) -> None:
    """A stand-in would skew a score, so scoring drops the file; the labels stay aligned with the vectors kept, and
    the message crosses from a loader worker too."""
    from simsearch.errors import ImageError
    from simsearch.models import random_embedder

    root = make_classes(tmp_path / "data", n_classes=3, per_class=3)
    cut = truncate_image(root / "class01" / "1.png")
    dataset = ImageFolderDataset(root)
    embedder = random_embedder(TINY.removeprefix("random:"))
    with pytest.raises(ImageError, match="1.png"):
        embed_dataset(embedder, dataset, batch_size=4, workers=workers)

    skipped: list[str] = []
    vectors, labels = embed_dataset(embedder, dataset, batch_size=4, workers=workers, skipped=skipped)
    assert len(skipped) == 1 and skipped[0].startswith(str(cut))
    assert labels.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    readable = ImageFolderDataset(root)
    readable.samples = [s for s in readable.samples if s[0] != str(cut)]
    readable.labels = np.array([label for _, label in readable.samples], dtype=np.int64)
    expected, _ = embed_dataset(embedder, readable, batch_size=4)
    np.testing.assert_allclose(vectors, expected, atol=1e-6)


def test_cli_eval_against_a_gallery_matches_classes_by_name_and_is_not_leave_one_out(
    data_root: Path, tmp_path: Path
) -> None:
    from cli.main import main
    from simsearch.models import random_embedder, save_checkpoint

    # Gallery classes in another order, one the queries lack: labels follow the names.
    assert labels_by_class_name(np.array([0, 1, 2, 1]), ["c", "b", "a"], ["a", "b"]).tolist() == [2, 1, 0, 1]

    # Each query is in the gallery too: against a gallery it finds itself first, so R@1 is 1 exactly.
    torch.manual_seed(0)
    checkpoint = save_checkpoint(random_embedder(TINY.removeprefix("random:")), tmp_path / "tiny")
    record_path = tmp_path / "gallery.json"
    args = ["eval", str(data_root), "--gallery", str(data_root), "--model", str(checkpoint), "--device", "cpu"]
    result = CliRunner().invoke(main, [*args, "--out", str(record_path)])
    assert result.exit_code == 0, result.output
    record = json.loads(record_path.read_text())
    assert record["metrics"]["leave_one_out"] is False and record["metrics"]["gallery"] == 36
    assert record["metrics"]["recall@1"] == 1.0 and record["protocol"].endswith("against a gallery")
    # Without --out the record lands beside the checkpoint, named for both sets (not over the leave-one-out one).
    assert CliRunner().invoke(main, args).exit_code == 0
    assert json.loads((checkpoint / f"eval-{data_root.name}-vs-{data_root.name}.json").read_text())["gallery"]


def test_cli_eval_with_hflip_tta_scores_the_flip_averaged_model_beside_the_plain_record(
    data_root: Path, tmp_path: Path
) -> None:
    from cli.main import main
    from simsearch.models import random_embedder, save_checkpoint

    torch.manual_seed(0)
    checkpoint = save_checkpoint(random_embedder(TINY.removeprefix("random:")), tmp_path / "tiny")
    args = ["eval", str(data_root), "--model", str(checkpoint), "--device", "cpu"]
    for extra in ([], ["--tta", "hflip"]):
        result = CliRunner().invoke(main, [*args, *extra])
        assert result.exit_code == 0, result.output
    plain = json.loads((checkpoint / f"eval-{data_root.name}.json").read_text())
    flipped = json.loads((checkpoint / f"eval-{data_root.name}-hflip.json").read_text())
    assert plain["model"] == "checkpoint:tiny" and flipped["model"] == "checkpoint:tiny+hflip"
    assert flipped["metrics"]["map@r"] != plain["metrics"]["map@r"]  # other vectors, another score
    assert plain["tta"] is None and flipped["tta"] == "hflip"


def test_cli_eval_default_records_of_two_folders_with_one_name_do_not_overwrite_each_other(tmp_path: Path) -> None:
    from cli.main import main
    from simsearch.models import random_embedder, save_checkpoint

    torch.manual_seed(0)
    checkpoint = save_checkpoint(random_embedder(TINY.removeprefix("random:")), tmp_path / "tiny")
    first = make_classes(tmp_path / "a" / "test", n_classes=2, per_class=3)
    second = make_classes(tmp_path / "b" / "test", n_classes=3, per_class=2, seed=1)
    for folder in (first, second, first):
        result = CliRunner().invoke(main, ["eval", str(folder), "--model", str(checkpoint), "--device", "cpu"])
        assert result.exit_code == 0, result.output
    records = sorted(checkpoint.glob("eval-test*.json"))
    assert len(records) == 2 and "eval-test.json" in {path.name for path in records}
    assert {json.loads(path.read_text())["data"] for path in records} == {str(first), str(second)}
    assert json.loads((checkpoint / "eval-test.json").read_text())["data"] == str(first)  # its own name, re-run


def test_evaluate_against_a_gallery_matches_classes_by_name(data_root: Path) -> None:
    from simsearch.models import random_embedder

    torch.manual_seed(0)
    embedder = random_embedder(TINY.removeprefix("random:"))
    classes = sorted(p.name for p in data_root.iterdir())
    queries = ImageFolderDataset(data_root, classes=classes)
    reordered = ImageFolderDataset(data_root, classes=classes[::-1])  # the same photos, labels numbered backwards
    assert reordered.classes == classes[::-1]
    # Each query is in the gallery: it finds itself first whatever the gallery's numbering, once names are matched.
    record = evaluate(embedder, queries, gallery=reordered)
    assert record.metrics["recall@1"] == 1.0 and record.metrics["leave_one_out"] is False
    assert record.protocol.endswith("against a gallery")
    vectors, labels = embed_dataset(embedder, queries)
    unmatched = evaluate_embeddings(embedder, vectors, labels, gallery=embed_dataset(embedder, reordered))
    assert unmatched.metrics["recall@1"] < 1.0  # raw numbers would pair photos with the wrong classes


def test_open_data_names_what_it_cannot_open(tmp_path: Path, data_root: Path) -> None:
    from simsearch.data import DatasetError, open_data

    assert len(open_data(str(data_root))) == 36
    (tmp_path / "photo.jpg").write_bytes(b"x")
    with pytest.raises(DatasetError, match="is a file"):
        open_data(str(tmp_path / "photo.jpg"))
    with pytest.raises(DataNotFoundError, match="no such folder 'nowhere'.*caltech101:test"):
        open_data("nowhere")
    with pytest.raises(DatasetError, match="tset"):
        open_data("caltech101:tset")

    # On the command line each is a bad value of the option that named it (exit 2), in one line.
    from cli.main import main
    from simsearch.models import random_embedder, save_checkpoint

    checkpoint = save_checkpoint(random_embedder(TINY.removeprefix("random:")), tmp_path / "tiny")
    base = ["eval", "--model", str(checkpoint), "--device", "cpu"]
    for args, where in (
        ([str(tmp_path / "photo.jpg")], "DATA"),
        ([str(data_root), "--gallery", str(tmp_path / "photo.jpg")], "--gallery"),
        (["caltech101:tset"], "DATA"),
    ):
        result = CliRunner().invoke(main, [*base, *args])
        assert result.exit_code == 2 and f"Invalid value for {where}" in result.output, result.output
        assert "Traceback" not in result.output


def test_a_folder_named_like_a_shared_set_without_classes_reads_the_shared_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from simsearch.data import DataNotFoundError, open_data, open_shared_split

    try:
        expected = len(open_shared_split("omniglot"))
    except DataNotFoundError as exc:
        pytest.skip(f"Omniglot not found ({exc}); set SIMSEARCH_DATA to the shared data folder")
    (tmp_path / "omniglot").mkdir()  # as in the shared data folder itself: files, no class folders
    (tmp_path / "omniglot" / "images_background.npz").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert len(open_data("omniglot")) == expected == 964 * 20


def test_cli_eval_omniglot_one_shot_scores_the_official_runs(tmp_path: Path) -> None:
    from cli.main import main
    from simsearch.data import omniglot_one_shot_runs
    from simsearch.evaluation import one_shot_eval
    from simsearch.models import random_embedder, save_checkpoint

    try:
        runs = omniglot_one_shot_runs()
    except FileNotFoundError as exc:
        pytest.skip(f"Omniglot runs not found ({exc}); set SIMSEARCH_DATA to the shared data folder")
    torch.manual_seed(0)
    checkpoint = save_checkpoint(random_embedder("simsearch_conv4", in_chans=1), tmp_path / "conv4")
    result = CliRunner().invoke(main, ["eval", "omniglot:one-shot", "--model", str(checkpoint), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    record = json.loads((checkpoint / "eval-omniglot-one-shot.json").read_text())
    expected = one_shot_eval(load_embedder(checkpoint), runs)
    assert record["metrics"] == {"one_shot_accuracy": expected["accuracy"], "runs": 20}
    assert record["per_run"] == expected["per_run"]


def test_the_library_makes_the_eval_record_its_file_name_and_the_list_of_skipped_images(tmp_path: Path) -> None:
    """What `simsearch eval` writes is made by `simsearch.evaluation`: the command only prints and writes it."""
    from simsearch.models import random_embedder

    root = make_classes(tmp_path / "test", n_classes=3, per_class=3)
    cut = truncate_image(root / "class02" / "0.png")
    torch.manual_seed(0)
    embedder = random_embedder(TINY.removeprefix("random:"))
    scored = evaluate_labelled(embedder, ImageFolderDataset(root), str(root))
    record = scored.record
    assert isinstance(record, EvalRecord) and record.images == 8 == len(scored.vectors) == len(scored.labels)
    assert len(record.skipped) == 1 and record.skipped[0].startswith(str(cut))
    assert record.data == str(root.resolve()) and record.gallery is None and record.plot is None
    as_json = record.as_dict()
    assert list(as_json) == ["model", "tta", "embed_dim", "images", "classes", "protocol", "metrics", "skipped", "data"]
    assert record.headline() == f"{record.model} on 8 images of 3 classes (exact k-NN, cosine, leave-one-out)"
    against = evaluate_labelled(
        embedder, ImageFolderDataset(root), str(root), gallery=ImageFolderDataset(root), gallery_name=str(root)
    ).record.as_dict()
    assert against["gallery"] == str(root.resolve()) and list(against)[-2:] == ["gallery", "data"]

    # Its default file beside a checkpoint: named for DATA, or with a short hash when another DATA of that name owns it.
    folder = tmp_path / "ckpt"
    folder.mkdir()
    path = default_record_path(folder, str(root), None)
    assert path == folder / "eval-test.json"
    path.write_text(json.dumps(as_json))
    assert default_record_path(folder, str(root), None) == path
    other = make_classes(tmp_path / "elsewhere" / "test", n_classes=2, per_class=2)
    hashed = default_record_path(folder, str(other), None)
    assert hashed.parent == folder and hashed.name.startswith("eval-test-")
    assert len(hashed.stem) == len("eval-test-") + 8
    assert default_record_path(folder, str(other), None, "hflip").name == "eval-test-hflip.json"
    assert default_record_path(folder, str(root), str(other)).name == "eval-test-vs-test.json"

    assert read_record(path)["metrics"] == record.metrics
    (tmp_path / "no.json").write_text('{"model": "x"}')
    with pytest.raises(EvaluationError, match="is not a `simsearch eval` record"):
        read_record(tmp_path / "no.json")
    with pytest.raises(EvaluationError, match="cannot read eval record"):
        read_record(tmp_path / "missing.json")
