"""The peers benchmark's parts on tiny data: a missing peer is skipped with a message and earlier parts are carried
over; the index choosers and the two HNSW builds are scored on the same vectors; both training sides train the same
model on real Fashion-MNIST images and are scored by the same code (each test skips when its peer is absent)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA

from benchmarks.suites import peers


def _args(tmp_path: Path, **changes: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    peers.add_arguments(parser)
    args = parser.parse_args([])
    fields = {"tiny": True, "device": "cpu", "threads": 1, "seed": 0, "data": DATA, "out": tmp_path, **changes}
    for key, value in fields.items():
        setattr(args, key, value)
    return args


def test_a_missing_peer_is_skipped_and_earlier_parts_are_carried_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    earlier = {"parts": {"index": {"command": "earlier run", "sizes": []}, "train": {"command": "old"}}}
    (tmp_path / "peers.json").write_text(json.dumps(earlier))
    monkeypatch.setitem(peers.PEERS, "train", ("no_such_peer_module", "no-such-peer"))
    result = peers.run(_args(tmp_path, parts="train"), tmp_path)
    parts = result["record"]["parts"]
    assert "no-such-peer is not installed" in parts["train"]["skipped"]
    assert parts["index"] == earlier["parts"]["index"]  # not re-run: kept with its own command
    assert "hnsw" not in parts


def test_unknown_parts_are_refused(tmp_path: Path) -> None:
    with pytest.raises(peers.BenchmarkError, match="--parts"):
        peers.run(_args(tmp_path, parts="train,speed"), tmp_path)


def _vectors(n: int, n_queries: int = 40) -> object:
    from benchmarks.peers_indexes import Vectors
    from benchmarks.search_data import Clustered

    data = Clustered(128, seed=0, n_queries=n_queries)
    return Vectors.make(data, n, n_queries)


def test_hnsw_sides_are_swept_on_the_same_vectors_and_reach_the_recall_goal() -> None:
    pytest.importorskip("hnswlib")
    from benchmarks.peers_indexes import Timing, hnsw_pair

    pair = hnsw_pair(_vectors(3000), Timing(single_queries=10, build_threads=1))  # type: ignore[arg-type]
    ours, theirs = pair["sides"]
    assert ours["library"].startswith("faiss") and theirs["library"].startswith("hnswlib")
    for side in (ours, theirs):
        recalls = [row["recall_at_10"] for row in side["sweep"]]
        assert len(recalls) == 6 and all(0 <= r <= 1 for r in recalls)
        assert recalls[-1] >= 0.95 and recalls[-1] >= recalls[0]
        assert side["index_mib"] > 3000 * 128 * 4 / 2**20  # at least the vectors themselves
        assert pair["at_goal"][side["library"]]["recall_at_10"] >= 0.95


def test_index_choice_scores_the_engine_and_autofaiss_against_exact_search() -> None:
    pytest.importorskip("autofaiss")
    from benchmarks.peers_indexes import Timing, index_choice

    vectors = _vectors(3000)
    result = index_choice(vectors, "64M", Timing(single_queries=10, build_threads=1), forced=True)  # type: ignore[arg-type]
    sides = {side["side"]: side for side in result["sides"]}
    assert sides["simsearch"]["factory"] == "Flat" and sides["simsearch"]["recall_at_10"] == 1.0
    assert set(sides) == {"simsearch", "simsearch (measured)", "autofaiss"}
    assert sides["autofaiss"]["factory"] and 0 < sides["autofaiss"]["recall_at_10"] <= 1
    assert all(side["qps_1"] > 0 and side["index_mib"] > 0 for side in sides.values())


def test_both_training_sides_train_the_same_model_and_are_scored_alike() -> None:
    pytest.importorskip("pytorch_metric_learning")
    if not (DATA / "fashion-mnist" / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"Fashion-MNIST not found under {DATA} (set SIMSEARCH_DATA to the shared data folder)")
    from benchmarks.peers_training import TrainSetup, compare

    result = compare(TrainSetup(epochs=1, limit=512, test_limit=100, threads=1))
    ours, theirs = result["sides"]
    assert ours["library"] == "simsearch" and theirs["library"] == "pytorch-metric-learning"
    assert ours["steps_per_epoch"] == theirs["steps_per_epoch"] == 4
    for side in (ours, theirs):
        assert 0 <= side["p_at_1"] <= 1 and side["samples_per_s"] > 0 and np.isfinite(side["final_loss"])
    assert result["ratios"]["samples_per_s"] == pytest.approx(ours["samples_per_s"] / theirs["samples_per_s"], 1e-2)


def test_qps_at_a_recall_is_read_between_the_sweep_settings_around_it() -> None:
    from benchmarks.peers_indexes import qps_at_recall

    sweep = [
        {"recall_at_10": 0.90, "qps_1": 1000.0},
        {"recall_at_10": 0.98, "qps_1": 600.0},
        {"recall_at_10": 0.97, "qps_1": 500.0},  # a dip: the best recall so far stays the lower end
        {"recall_at_10": 1.00, "qps_1": 200.0},
    ]
    assert qps_at_recall(sweep, 0.94) == pytest.approx(800.0)
    assert qps_at_recall(sweep, 0.85) == 1000.0  # the first setting already reaches it
    assert qps_at_recall(sweep, 0.99) == pytest.approx(400.0)
    assert qps_at_recall(sweep[:2], 0.99) is None


def test_parts_none_rewrites_the_table_from_the_parts_already_recorded(tmp_path: Path) -> None:
    side = {"library": "simsearch", "samples_per_s": 900.0, "p_at_1": 0.9, "wall_s": 130.0}
    train = {
        "date": "2026-01-01T00:00:00Z",
        "environment": {"load_average": [1.5, 1.0, 1.0], "part_threads": 2},
        "recipe": {"epochs": 2, "threads": 2},
        "sides": [side, {**side, "library": "pytorch-metric-learning", "samples_per_s": 1000.0}],
    }
    (tmp_path / "peers.json").write_text(json.dumps({"parts": {"train": train}}))
    result = peers.run(_args(tmp_path, parts="none"), tmp_path)
    assert result["record"]["parts"] == {"train": train}
    rows = result["table"]
    assert [row["samples_per_s"] for row in rows] == [900.0, 1000.0]
    assert all(row["run"] == "2026-01-01T00:00:00Z, load 1.5, 2 thr" for row in rows)
