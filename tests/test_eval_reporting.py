"""What `simsearch eval` reports beside the model's own scores: the k asked for, NMI only where it means something
(with the reason where it does not), the default model when none is named, and the raw-pixel baselines of the same
images scored by the same protocol, each checked against a plain computation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from training_helpers import TINY, make_classes

from simsearch.evaluation import EVAL_KS, EvaluationError, nmi_omitted_reason, parse_ks, score_vectors


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_classes(tmp_path_factory.mktemp("classes"), n_classes=5, per_class=4)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from simsearch.models import random_embedder, save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(random_embedder(TINY.removeprefix("random:")), tmp_path_factory.mktemp("ckpt") / "tiny")


def _plain_pixel_scores(queries: list[tuple[Path, str]], gallery: list[tuple[Path, str]], loo: bool) -> dict:
    """Raw-pixel recall@1 and recall@10 by a plain loop: 32x32 RGB in [0, 1], minus the gallery's mean, cosine."""

    def pixels(path: Path) -> np.ndarray:
        image = Image.open(path).convert("RGB").resize((32, 32), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.float64).reshape(-1) / 255.0

    g = np.stack([pixels(p) for p, _ in gallery])
    mean = g.mean(axis=0)
    g = (g - mean) / np.linalg.norm(g - mean, axis=1, keepdims=True)
    hits = {1: 0, 10: 0}
    for i, (path, name) in enumerate(queries):
        q = pixels(path) - mean
        q /= np.linalg.norm(q)
        order = [j for j in np.argsort(-(g @ q), kind="stable") if not (loo and j == i)]
        for k in hits:
            hits[k] += any(gallery[j][1] == name for j in order[:k])
    return {f"recall@{k}": n / len(queries) for k, n in hits.items()}


def _items(root: Path) -> list[tuple[Path, str]]:
    return [(path, folder.name) for folder in sorted(root.iterdir()) for path in sorted(folder.iterdir())]


def test_cli_eval_prints_the_k_asked_and_the_pixel_baselines_side_by_side_in_table_json_and_plot(
    data_root: Path, checkpoint: Path, tmp_path: Path
) -> None:
    from cli.main import main

    record_path = tmp_path / "eval.json"
    args = ["eval", str(data_root), "--model", str(checkpoint), "--device", "cpu", "--k", "10,1,5", "--baselines"]
    result = CliRunner().invoke(main, [*args, "--out", str(record_path)])
    assert result.exit_code == 0, result.output
    record = json.loads(record_path.read_text())
    assert [k for k in record["metrics"] if k.startswith("recall@")] == ["recall@1", "recall@5", "recall@10"]
    names = [b["model"] for b in record["baselines"]]
    assert names == ["pixels 32x32", "pixels 32x32 PCA-19"]  # 20 images: at most 19 components
    for baseline in record["baselines"]:
        assert baseline["protocol"] == record["protocol"] and baseline["images"] == record["images"] == 20
        assert list(baseline["metrics"]) == list(record["metrics"])
    # Raw pixels, leave-one-out, as a plain loop computes them; PCA with every component keeps every cosine.
    expected = _plain_pixel_scores(_items(data_root), _items(data_root), loo=True)
    for baseline in record["baselines"]:
        for name, value in expected.items():
            assert baseline["metrics"][name] == pytest.approx(value)
    # The table: a header naming each column, one line a metric with a number in each.
    lines = result.stdout.splitlines()
    assert "checkpoint:tiny" in lines[1] and "pixels 32x32" in lines[1] and "PCA-19" in lines[1]
    row = next(line for line in lines if line.split()[0] == "recall@5")
    assert len(row.split()) == 4
    assert record_path.with_suffix(".png").stat().st_size > 0
    assert record["plot"] == str(record_path.with_suffix(".png"))


def test_cli_eval_in_gallery_mode_with_one_image_per_class_leaves_nmi_out_and_says_why(
    data_root: Path, checkpoint: Path, tmp_path: Path
) -> None:
    from cli.main import main

    queries = tmp_path / "queries"
    for folder in sorted(data_root.iterdir()):
        (queries / folder.name).mkdir(parents=True)
        (queries / folder.name / "q.png").write_bytes((folder / "0.png").read_bytes())
    record_path = tmp_path / "gallery.json"
    args = ["eval", str(queries), "--gallery", str(data_root), "--model", str(checkpoint), "--device", "cpu"]
    result = CliRunner().invoke(main, [*args, "--k", "1,10", "--baselines", "--out", str(record_path)])
    assert result.exit_code == 0, result.output
    record = json.loads(record_path.read_text())
    for scored in (record, *record["baselines"]):
        assert "nmi" not in scored["metrics"] and "1 image per class" in scored["omitted"]["nmi"]
        assert scored["metrics"]["gallery"] == 20 and scored["metrics"]["leave_one_out"] is False
    assert "nmi left out: the 5 queries fall in 5 classes" in result.stdout
    expected = _plain_pixel_scores(_items(queries), _items(data_root), loo=False)
    assert record["baselines"][0]["metrics"]["recall@1"] == pytest.approx(expected["recall@1"]) == 1.0
    # Leave-one-out on the same classes holds four images a class: NMI is computed there.
    result = CliRunner().invoke(main, ["eval", str(data_root), "--model", str(checkpoint), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    loo = json.loads(result.stdout)
    assert "nmi" in loo["metrics"] and "omitted" not in loo
    assert "recall@16" in loo["metrics"] and "recall@32" not in loo["metrics"]  # 19 others to search


def test_cli_eval_without_model_scores_the_default_model_and_refuses_a_bad_k(data_root: Path) -> None:
    from cli.main import main

    result = CliRunner().invoke(main, ["eval", str(data_root), "--device", "cpu", "--k", "1", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["model"].startswith("default:")
    assert [k for k in record["metrics"] if k.startswith(("recall@", "precision@"))] == ["recall@1", "precision@1"]
    for bad in ("0", "1,x", ""):
        result = CliRunner().invoke(main, ["eval", str(data_root), "--k", bad])
        assert result.exit_code == 2 and "Invalid value for '--k'" in result.output, result.output


def test_k_above_the_searched_set_is_left_out_and_meaningless_nmi_named_with_its_reason() -> None:
    assert parse_ks(" 10,1,5,1") == (1, 5, 10) and 10 in EVAL_KS
    with pytest.raises(EvaluationError, match="whole numbers"):
        parse_ks("1,-2")
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(6, 4)).astype(np.float32)
    labels = np.array([0, 0, 0, 1, 1, 1])
    record = score_vectors(vectors, labels, model="m", embed_dim=4, ks=(1, 5, 8))
    assert "recall@5" in record.metrics and "recall@8" not in record.metrics and "nmi" in record.metrics
    assert record.omitted == {}
    with pytest.raises(EvaluationError, match="every k"):
        score_vectors(vectors, labels, model="m", embed_dim=4, ks=(6,))
    assert nmi_omitted_reason(np.array([0, 1, 2, 2])) is not None  # median class holds one image
    assert "one class" in str(nmi_omitted_reason(np.zeros(5, np.int64)))
    assert nmi_omitted_reason(np.array([0, 0, 1, 1, 2])) is None
