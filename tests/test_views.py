"""Two-view data (`simsearch.data.views`): both layouts on disk, packing with the views kept, and the query-view ->
gallery-view protocol of `eval` and of validation, checked against a plain loop on a tiny set rendered here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from training_helpers import TINY, tiny_config, truncate_image

from simsearch.data import DatasetError, ViewedDataset, open_views
from simsearch.evaluation import EvaluationError, embed_dataset, evaluate
from simsearch.models import Embedder, random_embedder
from simsearch.training import TrainingError, class_disjoint_split, train
from simsearch.training.validation import ViewValidation

ITEMS = 8


def _item_image(item: int, view: str, copy: int = 0) -> Image.Image:
    """An item's pattern of coloured blocks; view b is a noisy, darker rendering of it (a second copy differs)."""
    rng = np.random.default_rng(item)
    blocks = rng.integers(0, 256, (4, 4, 3)).astype(np.float64)
    pixels = np.kron(blocks, np.ones((8, 8, 1)))
    if view == "b":
        noise = np.random.default_rng(1000 + 10 * item + copy).normal(0, 30, pixels.shape)
        pixels = pixels * 0.8 + noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _two_view_set(root: Path, layout: str) -> Path:
    """ITEMS items in views a and b: item 0 has two b images (b.png and b.bmp), the last item no b image at all.
    `layout` "items": root/<item>/<view>.png; "views": root/<view>/<item>.png."""
    for item in range(ITEMS):
        name = f"item{item}"
        files = (
            [("a", 0, "png")]
            + ([("b", 0, "png")] if item < ITEMS - 1 else [])
            + ([("b", 1, "bmp")] if not item else [])
        )
        for view, copy, ext in files:
            path = root / name / f"{view}.{ext}" if layout == "items" else root / view / f"{name}.{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            _item_image(item, view, copy).save(path)
    return root


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("views")
    return {layout: _two_view_set(base / layout, layout) for layout in ("items", "views")}


@pytest.fixture(scope="module")
def model() -> Embedder:
    torch.manual_seed(0)
    return random_embedder(TINY.removeprefix("random:")).eval()


def _plain_scores(model: Embedder, viewed: ViewedDataset, query: str, gallery: str, ks: tuple[int, ...]) -> dict:
    """R@k, MAP@R and the unanswerable queries by hand: every query image of one view against every gallery image of
    the other, by cosine, one item's images the right answers."""
    vectors, labels = embed_dataset(model, viewed)
    q_view, g_view = viewed.view_names.index(query), viewed.view_names.index(gallery)
    g_ids = [i for i in range(len(viewed)) if viewed.views[i] == g_view]
    hits = {k: 0 for k in ks}
    ap_sum, answered, unanswerable = 0.0, 0, 0
    for i in range(len(viewed)):
        if viewed.views[i] != q_view:
            continue
        right = [j for j in g_ids if labels[j] == labels[i]]
        if not right:
            unanswerable += 1
            continue
        answered += 1
        ranked = sorted(g_ids, key=lambda j: (-float(np.dot(vectors[i], vectors[j])), g_ids.index(j)))
        for k in ks:
            hits[k] += any(labels[j] == labels[i] for j in ranked[:k])
        found, precisions = 0, []
        for position, j in enumerate(ranked[: len(right)], 1):
            if labels[j] == labels[i]:
                found += 1
                precisions.append(found / position)
        ap_sum += sum(precisions) / len(right)
    scores = {f"recall@{k}": hits[k] / answered for k in ks}
    return {**scores, "map@r": ap_sum / answered, "skipped_queries": unanswerable, "queries": answered}


def test_both_layouts_open_as_the_same_items_and_views(layouts: dict[str, Path]) -> None:
    by_items, by_views = (open_views(layouts[layout], ("a", "b")) for layout in ("items", "views"))
    for viewed in (by_items, by_views):
        assert viewed.classes == [f"item{i}" for i in range(ITEMS)] and viewed.view_names == ["a", "b"]
        assert len(viewed) == 2 * ITEMS and len(viewed.view("a")) == ITEMS and len(viewed.view("b")) == ITEMS
        assert viewed.view("b").labels.tolist().count(0) == 2 and ITEMS - 1 not in viewed.view("b").labels
    pairs = sorted(zip(by_items.labels.tolist(), by_items.views.tolist(), strict=True))
    assert pairs == sorted(zip(by_views.labels.tolist(), by_views.views.tolist(), strict=True))
    with pytest.raises(DatasetError, match="no view 'c'.*a, b"):
        open_views(layouts["items"], ("a", "c"))
    with pytest.raises(DatasetError, match="two different views"):
        open_views(layouts["items"], ("a", "a"))
    # A class split keeps each image's view.
    train_set, val_set = class_disjoint_split(by_views, 0.25, seed=0)
    assert isinstance(val_set, ViewedDataset) and len(val_set.classes) == 2
    for subset in (train_set, val_set):
        names = [Path(by_views.dataset.samples[i][0]).parent.name for i in subset.dataset.indices]
        assert [subset.view_names[v] for v in subset.views] == names


@pytest.mark.parametrize("layout", ["items", "views"])
def test_the_query_view_to_gallery_view_protocol_is_what_a_plain_loop_computes(
    layouts: dict[str, Path], model: Embedder, layout: str
) -> None:
    viewed = open_views(layouts[layout], ("a", "b"))
    record = evaluate(model, viewed, views=("a", "b"), ks=(1, 2, 4))
    expected = _plain_scores(model, viewed, "a", "b", (1, 2, 4))
    for name, value in expected.items():
        assert record.metrics[name] == pytest.approx(value), name
    assert record.metrics["skipped_queries"] == 1 and record.metrics["gallery"] == ITEMS
    assert record.protocol.endswith("query view a against gallery view b") and record.views == {
        "query": "a",
        "gallery": "b",
    }
    assert "nmi" not in record.metrics and "1 image per class" in record.omitted["nmi"]
    backwards = evaluate(model, viewed, views=("b", "a"), ks=(1,))
    assert backwards.metrics["recall@1"] == pytest.approx(_plain_scores(model, viewed, "b", "a", (1,))["recall@1"])
    with pytest.raises(EvaluationError, match="two-view data"):
        evaluate(model, viewed.dataset, views=("a", "b"))


def test_two_view_validation_scores_as_the_plain_loop_and_refuses_data_without_the_views(
    layouts: dict[str, Path], model: Embedder, tmp_path: Path
) -> None:
    viewed = open_views(layouts["items"], ("a", "b"))
    validation = ViewValidation(viewed, "a", "b", batch_size=4, workers=0, device=torch.device("cpu"))
    validation.check()
    expected = _plain_scores(model, viewed, "a", "b", (1,))
    assert validation.score(model, 1) == pytest.approx({"recall@1": expected["recall@1"], "map@r": expected["map@r"]})

    train_set, val_set = class_disjoint_split(viewed, 0.25, seed=0)
    with pytest.raises(TrainingError, match="needs two-view data"):
        train(tiny_config(p=2, k=2, query_view="a", gallery_view="b"), train_set, val_set.dataset, tmp_path / "r1")
    with pytest.raises(TrainingError, match="no view 'c'"):
        train(tiny_config(p=2, k=2, query_view="a", gallery_view="c"), train_set, val_set, tmp_path / "r2")
    with pytest.raises(TrainingError, match="a query view and another gallery view"):
        tiny_config(query_view="a").check()


def test_cli_train_eval_and_pack_on_two_view_data(layouts: dict[str, Path], tmp_path: Path) -> None:
    from cli.main import main

    runner = CliRunner()
    views = ["--query-view", "a", "--gallery-view", "b"]
    out = tmp_path / "run"
    args = ["train", str(layouts["views"]), "--out", str(out), "--backbone", TINY, "--embed-dim", "8", "--epochs", "1"]
    args += ["-p", "2", "-k", "2", "--image-size", "32", "--device", "cpu", "--val-fraction", "0.25", "--no-augment"]
    result = runner.invoke(main, [*args, *views])
    assert result.exit_code == 0, result.output
    assert re.search(
        r"validating on 2 other classes \([34] images, query view a against gallery view b\)", result.stderr
    )
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]
    assert json.loads((out / "config.json").read_text())["recipe"]["query_view"] == "a"
    refused = runner.invoke(main, [*args[:2], "--out", str(tmp_path / "bad"), "--query-view", "a"])
    assert refused.exit_code == 2 and "go together" in refused.output

    records = {}
    for layout, data in layouts.items():
        result = runner.invoke(main, ["eval", str(data), "--model", str(out), "--device", "cpu", *views, "--k", "1,4"])
        assert result.exit_code == 0, result.output
        records[layout] = json.loads((out / f"eval-{layout}-a-to-b.json").read_text())
        assert records[layout]["views"] == {"query": "a", "gallery": "b"} and "nmi left out" in result.stdout
    assert records["items"]["metrics"] == records["views"]["metrics"]
    wrong = runner.invoke(
        main, ["eval", str(layouts["items"]), "--model", str(out), "--query-view", "a", "--gallery-view", "x"]
    )
    assert wrong.exit_code == 2 and "no view 'x'" in wrong.output

    # Packed with its views, one unreadable image left out: every stored image keeps the view of its own file.
    damaged = tmp_path / "damaged"
    _two_view_set(damaged, "items")
    truncate_image(damaged / "item3" / "a.png")
    packed = tmp_path / "two.lmdb"
    result = runner.invoke(main, ["pack", str(damaged), str(packed), "--views", "a,b"])
    assert result.exit_code == 0, result.output
    stored = open_views(packed, ("a", "b"))
    assert len(stored) == 2 * ITEMS - 1 and stored.view_names == ["a", "b"]
    source = {(p.parent.name, p.read_bytes()): p.stem for p in damaged.rglob("*.*")}
    for index in range(len(stored)):
        data, label = stored.dataset.read_bytes(index)
        assert source[(stored.classes[label], data)] == stored.view_names[stored.views[index]]
    result = runner.invoke(main, ["eval", str(packed), "--model", str(out), "--device", "cpu", *views, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metrics"]["queries"] == ITEMS - 2  # item3 lost its query, the last its answer
    plain = runner.invoke(main, ["pack", str(layouts["items"]), str(tmp_path / "plain.lmdb")])
    assert plain.exit_code == 0
    with pytest.raises(DatasetError, match="packed without views"):
        open_views(tmp_path / "plain.lmdb", ("a", "b"))
