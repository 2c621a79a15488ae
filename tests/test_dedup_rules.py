"""The dedup rules without a model: complete-linkage groups never chain, the pair search through an index finds every
pair above the line (exactly scored), keep rules and their reasons, calibration thresholds and intervals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from indexes import VectorIndex
from simsearch.collection import ImageRecord
from simsearch.dedup.calibration import Calibration, fit, pair_counts, wilson_interval
from simsearch.dedup.grouping import complete_linkage, min_pair_score
from simsearch.dedup.keep import choose_keep
from simsearch.dedup.neighbours import Neighbours, pairs_above
from simsearch.errors import CalibrationError, DedupError


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _chain() -> np.ndarray:
    """Five unit vectors on an arc, 18 degrees apart: neighbours score cos 18° = 0.951, two apart cos 36° = 0.809."""
    angles = np.deg2rad(np.arange(5) * 18.0)
    return np.stack([np.cos(angles), np.sin(angles), np.zeros(5)], axis=1).astype(np.float32)


def _source(vectors: np.ndarray, factory: str = "Flat") -> Neighbours:
    index = VectorIndex.create(vectors.shape[1], factory)
    index.add(np.arange(len(vectors), dtype=np.int64), vectors)
    return Neighbours(read=lambda ids: vectors[ids], knn=index.search)


def test_a_chain_of_close_neighbours_is_not_one_group() -> None:
    vectors = _chain()
    source = _source(vectors)
    pairs = pairs_above(source, np.arange(5), 0.9)
    assert sorted(zip(pairs.a.tolist(), pairs.b.tolist(), strict=True)) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    groups = complete_linkage(pairs, 0.9, source.vectors)
    # Single linkage would give one group of five; every pair of a group must reach the line.
    assert all(len(g) == 2 for g in groups)
    assert len(groups) == 2
    for g in groups:
        assert min_pair_score(g, source.vectors) >= 0.9
    assert min_pair_score([0, 1, 2], source.vectors) < 0.9


def test_a_tight_cluster_is_one_group_and_every_pair_reaches_the_line() -> None:
    rng = np.random.default_rng(0)
    centre = _unit(rng.standard_normal((1, 64)))
    cluster = _unit(centre + 0.02 * rng.standard_normal((6, 64)))
    others = _unit(rng.standard_normal((30, 64)))
    vectors = np.concatenate([cluster, others])
    source = _source(vectors)
    groups = complete_linkage(pairs_above(source, np.arange(len(vectors)), 0.95), 0.95, source.vectors)
    assert groups == [[0, 1, 2, 3, 4, 5]]
    assert min_pair_score(groups[0], source.vectors) >= 0.95


def test_pairs_grow_k_until_every_neighbour_above_the_line_is_found() -> None:
    rng = np.random.default_rng(1)
    centre = _unit(rng.standard_normal((1, 32)))
    many = _unit(centre + 0.02 * rng.standard_normal((40, 32)))  # 40 mutual duplicates: 780 pairs
    source = _source(many)
    pairs = pairs_above(source, np.arange(40), 0.9, k=4)
    assert len(pairs) == 40 * 39 // 2
    exact = many @ many.T
    np.testing.assert_allclose(pairs.score, exact[pairs.a, pairs.b], rtol=0, atol=1e-6)
    assert (np.diff(pairs.score) <= 0).all()


def test_an_approximate_index_only_proposes_pairs_scores_are_exact() -> None:
    rng = np.random.default_rng(2)
    base = _unit(rng.standard_normal((2000, 32)))
    copies = _unit(base[:50] + 0.03 * rng.standard_normal((50, 32)))
    vectors = np.concatenate([base, copies])
    pairs = pairs_above(_source(vectors, "IVF16,SQ8"), np.arange(len(vectors)), 0.95)
    found = set(zip(pairs.a.tolist(), pairs.b.tolist(), strict=True))
    assert {(i, 2000 + i) for i in range(50)} <= found
    np.testing.assert_allclose(pairs.score, np.einsum("ij,ij->i", vectors[pairs.a], vectors[pairs.b]), atol=1e-6)


def _record(i: int, path: str, w: int, h: int, size: int, mtime: int) -> ImageRecord:
    return ImageRecord(id=i, path=path, size=size, mtime_ns=mtime, sha256=f"{i:064x}", width=w, height=h, format="JPEG")


MEMBERS = [
    _record(1, "/p/a/original.jpg", 640, 480, 90_000, 3),
    _record(2, "/p/small.jpg", 320, 240, 20_000, 1),
    _record(3, "/p/a/b/copy_of_original.jpg", 640, 480, 95_000, 2),
]


@pytest.mark.parametrize(
    ("rule", "kept"),
    [("largest", 3), ("smallest", 2), ("oldest", 2), ("newest", 1), ("shortest-path", 2)],
)
def test_keep_rules_choose_and_say_why(rule: str, kept: int) -> None:
    keep, remove, reason = choose_keep(MEMBERS, rule)
    assert keep.id == kept
    assert sorted(r.id for r in remove) == sorted({1, 2, 3} - {kept})
    assert reason.startswith(rule)


def test_a_tie_falls_to_the_shorter_path() -> None:
    twins = [MEMBERS[0], _record(4, "/p/a/b/c/original.jpg", 640, 480, 90_000, 3)]
    keep, _, reason = choose_keep(twins, "largest")
    assert keep.id == 1 and "tie" in reason


def test_reference_files_are_all_kept() -> None:
    keep, remove, reason = choose_keep(MEMBERS, "largest", reference=["/p/a"])
    assert keep.id == 3 and [r.id for r in remove] == [2]  # both files under /p/a stay
    assert reason.startswith("in a reference folder")
    with pytest.raises(DedupError):
        choose_keep(MEMBERS, "prettiest")


def test_wilson_interval_matches_known_values() -> None:
    lo, hi = wilson_interval(95, 100)
    assert lo == pytest.approx(0.8882, abs=1e-3) and hi == pytest.approx(0.9785, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)


def _calibration(tmp_path: Path | None = None) -> Calibration:
    rng = np.random.default_rng(3)
    same = np.concatenate([np.ones(300, bool), np.zeros(30_000, bool)])
    scores = np.where(same, rng.normal(0.93, 0.03, same.size), rng.normal(0.5, 0.12, same.size))
    return fit(scores, same, model_id="m", weights_sha256="w" * 64, tta=None, kind="near-duplicate", source="test")


def test_calibrated_thresholds_reach_their_precision_on_the_fitted_pairs() -> None:
    rng = np.random.default_rng(3)
    same = np.concatenate([np.ones(300, bool), np.zeros(30_000, bool)])
    scores = np.where(same, rng.normal(0.93, 0.03, same.size), rng.normal(0.5, 0.12, same.size))
    cal = _calibration()
    assert [p.goal for p in cal.points] == [0.9, 0.99, 0.999]
    for p in cal.points:
        counts = pair_counts(
            {(i, 0) for i in np.flatnonzero(scores >= p.threshold)}, {(i, 0) for i in np.flatnonzero(same)}
        )
        assert counts.precision >= p.goal
        assert counts.recall == pytest.approx(p.recall)
        assert p.precision_ci[0] <= p.precision <= p.precision_ci[1]
        assert p.false_match_rate == pytest.approx(counts.false_positives / 30_000)
    thresholds = [p.threshold for p in cal.points]
    assert thresholds == sorted(thresholds)  # a higher precision never has a lower line
    assert cal.meaning(0.99) == "p>=0.999 same"
    assert cal.meaning(0.3).startswith("p~")


def test_a_calibration_round_trips_as_json_and_refuses_another_model(tmp_path: Path) -> None:
    cal = _calibration()
    path = cal.save(tmp_path / "c.json")
    again = Calibration.load(path)
    assert again == cal
    assert json.loads(path.read_text())["format"] == "simsearch-calibration"
    again.check_model("m", "w" * 64, None)
    with pytest.raises(CalibrationError, match="calibrate again"):
        again.check_model("m", "x" * 64, None)
    with pytest.raises(CalibrationError, match="calibrate again"):
        again.check_model("m", "w" * 64, "hflip")
    with pytest.raises(CalibrationError, match="no calibrated threshold"):
        cal.point(0.5)
    path.write_text("{}")
    with pytest.raises(CalibrationError):
        Calibration.load(path)


def test_no_same_item_pairs_cannot_calibrate() -> None:
    with pytest.raises(CalibrationError, match="same-item"):
        fit(np.zeros(3), np.zeros(3, bool), model_id="m", weights_sha256="", tta=None, kind="near-duplicate", source="")
