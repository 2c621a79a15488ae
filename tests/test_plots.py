"""The evaluation plot (simsearch.plots): a valid PNG of the documented size, PCA and t-SNE that keep what they
should, and without matplotlib (the `plots` extra) a one-line hint from the commands that draw. That the library
and the CLI never import matplotlib unless they draw is checked in test_imports."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simsearch.plots import (
    FIGURE_DPI,
    FIGURE_SIZE,
    PlotError,
    curve_title,
    pca_2d,
    recall_curve,
    save_eval_plot,
    tsne_2d,
)

EXPECTED_SIZE = (round(FIGURE_SIZE[0] * FIGURE_DPI), round(FIGURE_SIZE[1] * FIGURE_DPI))


def _record(model: str, scale: float = 1.0) -> dict:
    recalls = {f"recall@{k}": min(1.0, scale * (0.4 + 0.1 * i)) for i, k in enumerate((1, 2, 4, 8, 16, 32))}
    return {"model": model, "images": 90, "classes": 3, "metrics": {**recalls, "map@r": 0.3, "queries": 90}}


def _blobs(n_classes: int, per_class: int, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated Gaussian classes: centres 3 sigma apart per axis, in `dim` dimensions."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per_class)
    centres = rng.normal(0, 3, (n_classes, dim))
    return (centres[labels] + rng.normal(0, 1, (len(labels), dim))).astype(np.float32), labels


def _one_nn_accuracy(points: np.ndarray, labels: np.ndarray) -> float:
    d = ((points[:, None, :] - points[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return float((labels[d.argmin(axis=1)] == labels).mean())


def test_the_curve_title_says_how_the_set_was_searched() -> None:
    record = _record("a")
    assert curve_title(record) == "90 images, 3 classes, leave-one-out"
    record["metrics"]["leave_one_out"] = False
    assert curve_title(record) == "90 images, 3 classes, against a gallery"
    record["metrics"]["leave_one_out"] = True
    assert curve_title(record).endswith("leave-one-out")


def test_the_eval_plot_is_a_valid_png_of_the_documented_size(tmp_path: Path) -> None:
    vectors, labels = _blobs(3, 30)
    out = save_eval_plot(
        tmp_path / "sub" / "eval.png", [_record("a"), _record("b", 0.8)], vectors, labels, classes=["x", "y", "z"]
    )
    assert out == tmp_path / "sub" / "eval.png"
    with Image.open(out) as image:
        image.verify()
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == EXPECTED_SIZE
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 10  # something was drawn, not a blank canvas


def test_many_classes_and_no_vectors_still_give_a_png(tmp_path: Path) -> None:
    vectors, labels = _blobs(60, 5)
    save_eval_plot(tmp_path / "many.png", [_record("a")], vectors, labels)
    save_eval_plot(tmp_path / "curve.png", [_record("a")])
    for name in ("many.png", "curve.png"):
        with Image.open(tmp_path / name) as image:
            assert image.size == EXPECTED_SIZE


def test_recall_curve_reads_the_k_in_numeric_order_and_refuses_a_record_without_recall() -> None:
    record = {"metrics": {"recall@16": 0.9, "recall@2": 0.5, "recall@1": 0.4, "precision@1": 0.4, "map@r": 0.2}}
    assert recall_curve(record) == ([1, 2, 16], [0.4, 0.5, 0.9])
    with pytest.raises(PlotError, match="no recall@k"):
        recall_curve({"model": "m", "metrics": {"map@r": 0.2}})
    with pytest.raises(PlotError, match="projection"):
        save_eval_plot("unused.png", [record], np.zeros((4, 2)), np.zeros(4), projection="umap")


def test_pca_finds_the_plane_that_planar_data_lie_in() -> None:
    rng = np.random.default_rng(1)
    plane = rng.normal(0, 1, (200, 2)) * np.array([5.0, 2.0])
    basis, _ = np.linalg.qr(rng.normal(0, 1, (10, 2)))
    points, explained = pca_2d(plane @ basis.T + 7.0)
    assert sum(explained) == pytest.approx(1.0, abs=1e-6) and explained[0] > explained[1]
    # Distances within the plane are kept exactly (a rotation/reflection of the centred plane).
    d_in = np.linalg.norm(plane[:, None] - plane[None], axis=-1)
    d_out = np.linalg.norm(points[:, None] - points[None], axis=-1)
    assert np.allclose(d_in, d_out, atol=1e-3)


def test_tsne_keeps_well_separated_classes_apart_and_is_deterministic() -> None:
    vectors, labels = _blobs(5, 40, dim=32)
    points = tsne_2d(vectors, iterations=400)
    assert points.shape == (200, 2) and np.isfinite(points).all()
    assert _one_nn_accuracy(points, labels) >= 0.98
    assert np.array_equal(points, tsne_2d(vectors, iterations=400))


# --------------------------------------------------------------------------------------------------------------------
# scikit-learn's t-SNE in place of the hand-written one: compared with the code it replaced
# --------------------------------------------------------------------------------------------------------------------


def _reference_affinities(sq_dist: np.ndarray, perplexity: float, tol: float = 1e-5) -> np.ndarray:
    """Row-wise Gaussian affinities p_{j|i} whose entropy is log(perplexity), by bisection on the precision beta.

    All rows are bisected together (vectorised); the diagonal of `sq_dist` must already be +inf.
    """
    n = len(sq_dist)
    target = np.log(perplexity)
    beta = np.ones(n)
    low = np.full(n, -np.inf)
    high = np.full(n, np.inf)
    # Shift each row by its smallest distance: exp() stays in range, and the shift cancels in the normalisation.
    shifted = sq_dist - sq_dist.min(axis=1, keepdims=True)
    finite = np.where(np.isinf(shifted), 0.0, shifted)  # the +inf diagonal has p = 0: 0 * inf would be NaN
    p = np.zeros_like(sq_dist)
    for _ in range(100):
        p = np.exp(-shifted * beta[:, None])
        sums = p.sum(axis=1)
        p /= sums[:, None]
        entropy = np.log(sums) + beta * (p * finite).sum(axis=1)
        diff = entropy - target
        if np.all(np.abs(diff) < tol):
            break
        too_flat = diff > 0  # entropy too high: the Gaussian is too wide, raise beta
        low = np.where(too_flat, beta, low)
        high = np.where(too_flat, high, beta)
        beta = np.where(
            too_flat,
            np.where(np.isinf(high), beta * 2, (beta + high) / 2),
            np.where(np.isinf(low), beta / 2, (beta + low) / 2),
        )
    return p


def _reference_tsne(
    vectors: np.ndarray,
    *,
    perplexity: float = 30.0,
    iterations: int = 750,
    seed: int = 0,
) -> np.ndarray:
    """The hand-written exact t-SNE that scikit-learn's replaced (van der Maaten & Hinton 2008), numpy only.

    Gaussian input affinities at the given perplexity, Student-t output affinities, gradient descent with momentum
    and per-coordinate gains, early exaggeration 12 for the first 250 iterations, learning rate N / 12 (Belkina et
    al. 2019), initialised from PCA scaled to a small spread (deterministic, and keeps the global layout).

    Returns:
        `(N, 2) float32` coordinates.
    """
    x = np.asarray(vectors, dtype=np.float64)
    n = len(x)
    if x.ndim != 2 or n < 4:
        raise ValueError(f"t-SNE needs (N >= 4, D) vectors, got shape {x.shape}")
    perplexity = min(perplexity, (n - 1) / 3)
    sq_norms = (x * x).sum(axis=1)
    sq_dist = np.maximum(sq_norms[:, None] + sq_norms[None, :] - 2 * x @ x.T, 0)
    np.fill_diagonal(sq_dist, np.inf)
    p = _reference_affinities(sq_dist, perplexity)
    p = (p + p.T) / (2 * n)
    np.maximum(p, 1e-12, out=p)

    init, _ = pca_2d(x)
    y = init.astype(np.float64)
    y = y / max(float(y[:, 0].std()), 1e-12) * 1e-4
    y += np.random.default_rng(seed).normal(0, 1e-6, y.shape)  # breaks exact ties of duplicate vectors
    update = np.zeros_like(y)
    gains = np.ones_like(y)
    exaggeration, exaggerated_iterations = 12.0, 250
    learning_rate = max(n / exaggeration, 50.0)
    for it in range(iterations):
        sq_norms_y = (y * y).sum(axis=1)
        num = 1.0 / (1.0 + np.maximum(sq_norms_y[:, None] + sq_norms_y[None, :] - 2 * y @ y.T, 0))
        np.fill_diagonal(num, 0.0)
        q = np.maximum(num / num.sum(), 1e-12)
        weight = ((exaggeration if it < exaggerated_iterations else 1.0) * p - q) * num
        grad = 4.0 * (weight.sum(axis=1)[:, None] * y - weight @ y)
        momentum = 0.5 if it < exaggerated_iterations else 0.8
        # Delta-bar-delta gains: grow a coordinate's step while its gradient keeps its sign against the update.
        same_sign = np.sign(grad) == np.sign(update)
        gains = np.maximum(np.where(same_sign, gains * 0.8, gains + 0.2), 0.01)
        update = momentum * update - learning_rate * gains * grad
        y += update
        y -= y.mean(axis=0)
    return y.astype(np.float32)


def test_scikit_learn_s_tsne_draws_the_classes_and_neighbourhoods_the_hand_written_one_drew() -> None:
    """What the picture relies on, for the same seeded vectors: each class stays a cluster (1-NN class agreement),
    nearby points stay nearby (trustworthiness, as good as the replaced code's), the same vectors give the same
    picture, and too few iterations or points are refused."""
    from sklearn.manifold import trustworthiness

    vectors, labels = _blobs(6, 30, dim=24, seed=5)
    new, old = tsne_2d(vectors, iterations=500, seed=1), _reference_tsne(vectors, iterations=500, seed=1)
    assert new.shape == old.shape == (180, 2) and new.dtype == np.float32 and np.isfinite(new).all()
    assert _one_nn_accuracy(new, labels) >= 0.98 and _one_nn_accuracy(old, labels) >= 0.98
    kept_new = trustworthiness(vectors, new, n_neighbors=10)
    kept_old = trustworthiness(vectors, old, n_neighbors=10)
    assert kept_new >= kept_old - 0.02 and kept_new > 0.9, (kept_new, kept_old)
    assert np.array_equal(new, tsne_2d(vectors, iterations=500, seed=1))
    with pytest.raises(PlotError, match="at least 250 iterations"):
        tsne_2d(vectors, iterations=100)
    with pytest.raises(PlotError, match="N >= 4"):
        tsne_2d(vectors[:3])


HINT = "drawing PNG pictures needs matplotlib: pip install 'simsearch[plots]'"


@pytest.fixture
def no_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """matplotlib as if it were not installed: any import of it (or of a submodule) raises ImportError."""
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)


def test_without_matplotlib_drawing_raises_the_install_hint(no_matplotlib: None, tmp_path: Path) -> None:
    from simsearch.ae_pictures import write_pictures

    with pytest.raises(PlotError) as info:
        save_eval_plot(tmp_path / "p.png", [_record("m")])
    assert str(info.value) == HINT
    with pytest.raises(PlotError, match=r"simsearch\[plots\]"):
        write_pictures(None, None, None, tmp_path)  # type: ignore[arg-type]  # refused before anything is read
    assert not list(tmp_path.iterdir())


def test_without_matplotlib_eval_plot_is_a_one_line_hint_before_any_work(
    no_matplotlib: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner
    from conftest import SAMPLE_PHOTOS

    import simsearch.models

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("eval loaded the model before it knew it could draw")

    monkeypatch.setattr(simsearch.models, "load_embedder", no_model)
    from cli.main import main

    args = ["eval", str(SAMPLE_PHOTOS), "--model", "default", "--device", "cpu", "--plot", str(tmp_path / "p.png")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == [f"Error: {HINT}"]
    assert not (tmp_path / "p.png").exists()


def test_without_matplotlib_eval_still_writes_its_record_and_says_why_there_is_no_png(
    no_matplotlib: None, tmp_path: Path
) -> None:
    import json

    from click.testing import CliRunner
    from conftest import SAMPLE_PHOTOS

    from cli.main import main

    record_path = tmp_path / "eval.json"
    args = ["eval", str(SAMPLE_PHOTOS), "--model", "default", "--device", "cpu", "--out", str(record_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    record = json.loads(record_path.read_text())
    assert (record["images"], record["classes"]) == (48, 6) and "plot" not in record
    assert not record_path.with_suffix(".png").exists()
    assert f"{HINT} (no plot written)" in result.stderr.splitlines()


def test_without_matplotlib_pretrain_trains_and_says_why_there_are_no_pictures(
    no_matplotlib: None, tmp_path: Path
) -> None:
    import json

    import click
    from click.testing import CliRunner

    from cli.pretrain import pretrain

    rng = np.random.default_rng(0)
    for c in range(4):
        (tmp_path / "images" / f"c{c}").mkdir(parents=True)
        for i in range(6):
            pixels = np.clip(rng.normal(60 * c, 20, (28, 28)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / f"c{c}" / f"{i}.png")
    out = tmp_path / "ckpt"
    args = ["pretrain", str(tmp_path / "images"), "--kind", "linear", "--code-dim", "2", "--epochs", "1"]
    args += ["--out", str(out), "--device", "cpu", "--json", "-q"]
    result = CliRunner().invoke(click.Group(commands={"pretrain": pretrain}), args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["epochs_run"] == 1 and (out / "model.safetensors").is_file()
    assert f"{HINT} (no pictures drawn)" in result.stderr.splitlines()
    assert "Traceback" not in result.stderr and not list(out.glob("pictures/*.png"))
