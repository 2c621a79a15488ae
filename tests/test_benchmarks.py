"""Every benchmark suite runs at --tiny sizes and writes a well-formed record (JSON with the environment and the
suite's numbers, valid PNGs, a Markdown table). No timing thresholds: only shapes and keys."""

from __future__ import annotations

import importlib.util
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from benchmark_helpers import check_record
from conftest import DATA

from benchmarks import __main__ as bench_main
from benchmarks.suites.embed import layout

#: Files of the shared data each suite reads.
NEEDS = {
    "quality": [
        "caltech101/101_ObjectCategories.tar",
        "omniglot/images_evaluation.npz",
        "omniglot/all_runs.zip",
        "fashion-mnist",
    ],
    "embed": ["caltech101/101_ObjectCategories.tar", "fashion-mnist"],
    "query": ["caltech101/101_ObjectCategories.tar"],
    "train": ["caltech101/101_ObjectCategories.tar"],
    "search": [],
    "scale": [],  # its engine half reads Caltech-101; the test runs the index half alone
}


def require_data(suite: str) -> None:
    missing = [p for p in NEEDS[suite] if not (DATA / p).exists()]
    if missing:
        pytest.skip(f"{', '.join(missing)} not found under {DATA} (set SIMSEARCH_DATA to the shared data folder)")


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and np.isfinite(value)


def run_tiny(suite: str, out: Path, *extra: str) -> dict[str, Any]:
    require_data(suite)
    status = bench_main.main([suite, "--tiny", "--threads", "1", "--out", str(out), "--data", str(DATA), *extra])
    assert status == 0
    return check_record(out, suite)


# --------------------------------------------------------------------------------------------------------------------
# Each suite at tiny size
# --------------------------------------------------------------------------------------------------------------------


def test_quality_suite_writes_recall_map_nmi_and_the_one_shot_accuracy(tmp_path: Path) -> None:
    record = run_tiny("quality", tmp_path)
    assert set(record["datasets"]) == {"caltech101", "omniglot", "fashion-mnist"}
    for name, entry in record["datasets"].items():
        metrics = entry["metrics"]
        assert all(finite(metrics[key]) for key in ("recall@1", "recall@8", "map@r", "r_precision", "nmi")), name
        assert 2 <= entry["queries"] <= 12 and entry["protocol"]
        # Hit rates are counts of queries: whole numbers of hits, and they can only grow with k.
        hits = [metrics[f"recall@{k}"] * entry["queries"] for k in (1, 2, 4, 8)]
        assert hits == pytest.approx([round(h) for h in hits]), (name, hits)
        assert hits == sorted(hits)
        # MAP@R averages precisions over the first R results, each at most the share of hits in them (R-precision).
        assert metrics["map@r"] <= metrics["r_precision"] + 1e-9, name
        assert 0 <= metrics["nmi"] <= 1 + 1e-9, name  # normalised: an unnormalised mutual information would exceed 1
    omniglot = record["datasets"]["omniglot"]
    assert omniglot["one_shot_runs"] == 1 and len(omniglot["one_shot_per_run"]) == 1
    correct = omniglot["one_shot_accuracy"] * 20  # one run of 20 test images
    assert correct == pytest.approx(round(correct)) and omniglot["one_shot_per_run"] == [omniglot["one_shot_accuracy"]]
    assert [row["dataset"] for row in record["table"]] == ["caltech101", "omniglot", "fashion-mnist"]


def test_embed_suite_writes_pipeline_and_forward_rates_their_ratio_and_a_sweep(tmp_path: Path) -> None:
    record = run_tiny("embed", tmp_path)
    points = [record["headline"], *record["sweep"]]
    assert len(record["sweep"]) == 6  # tiny: batch sizes 2, 4 x the default layout, workers 0, 1
    for point in points:
        for key in ("peak_rss_mib", "peak_pss_with_workers_mib", "pipeline_seconds", "forward_seconds"):
            assert finite(point[key]) and point[key] > 0, (key, point)
        # Rates come from the images really embedded and the time measured, not from anything else.
        assert point["images"] == record["headline"]["images"] > 0
        assert point["pipeline_images_per_s"] == pytest.approx(point["images"] / point["pipeline_seconds"])
        assert point["forward_images_per_s"] == pytest.approx(point["images"] / point["forward_seconds"])
        forward = point["forward_images_per_s"]
        if "forward_images_per_s_after" in point:  # the headline divides by the mean of before and after
            forward = (forward + point["forward_images_per_s_after"]) / 2
        assert point["ratio_pipeline_over_forward"] == pytest.approx(point["pipeline_images_per_s"] / forward)
    assert {(p["batch_size"], p["workers"]) for p in record["sweep"]} == {(b, w) for b in (2, 4) for w in (None, 0, 1)}
    # The default layout, here for a job of a few batches: decoding in-process on 2 cores, in processes on more.
    defaults = {layout(None, "cpu", p["images"], p["batch_size"]) for p in record["sweep"]}
    assert {p["layout"] for p in record["sweep"]} == {*defaults, "in-process", "1 decode process"}
    # The forward that ratios divide by is the faster of its thread layouts.
    for point in points:
        layouts = [
            v for k, v in point.items() if k.startswith("forward_images_per_s_") and k != "forward_images_per_s_after"
        ]
        assert layouts and point["forward_images_per_s"] == max(layouts)
    # The whole index command on small images: every image embedded, CPU times of a process that really ran.
    small = record["small_images"]
    assert small["images"] == 6 and small["command"].startswith("simsearch index ")
    assert small["user_cpu_s"] > 0 and small["system_cpu_s"] >= 0
    assert small["system_over_user"] == pytest.approx(small["system_cpu_s"] / small["user_cpu_s"])
    assert small["command_images_per_s"] == pytest.approx(small["images"] / small["wall_s"])
    assert small["ratio_command_over_forward"] == pytest.approx(
        small["command_images_per_s"] / small["forward_images_per_s"]
    )


def test_query_suite_writes_stage_latencies_their_sum_the_total_and_the_cold_ratio(tmp_path: Path) -> None:
    record = run_tiny("query", tmp_path)
    warm = record["warm"]
    for stage in ("decode", "transform", "forward", "search", "store"):
        assert finite(warm["stages"][stage]["p50_ms"]) and warm["stages"][stage]["p95_ms"] >= 0
    assert warm["stage_sum"]["p50_ms"] > 0 and warm["total"]["p50_ms"] > 0
    assert finite(warm["stage_sum_over_total_median"])
    assert warm["staged_results_differ_from_search"] == 0, "the staged path must find what Collection.search finds"
    cold = record["cold"]
    # The medians are those of the timed processes, one time per run, each of a command that really ran.
    assert len(cold["simsearch_query_s"]) == len(cold["import_torch_s"]) == cold["runs"] >= 1
    assert all(t > 0 for t in cold["simsearch_query_s"] + cold["import_torch_s"])
    assert cold["simsearch_query_s_median"] == pytest.approx(statistics.median(cold["simsearch_query_s"]))
    assert cold["import_torch_s_median"] == pytest.approx(statistics.median(cold["import_torch_s"]))
    assert cold["ratio_query_over_import_torch"] == pytest.approx(
        cold["simsearch_query_s_median"] / cold["import_torch_s_median"]
    )
    assert cold["command"].startswith("simsearch query ")
    # The export, the query through torch on a copy without it, and info ran interleaved, as many times each.
    if record["export"] is not None:
        assert record["export"]["min_cosine"] >= 0.99999 and record["export"]["photos_checked"] >= 1
        assert len(cold["simsearch_query_torch_s"]) == cold["runs"]
        assert cold["ratio_query_torch_over_import_torch"] == pytest.approx(
            cold["simsearch_query_torch_s_median"] / cold["import_torch_s_median"]
        )
    assert len(cold["simsearch_info_s"]) == cold["runs"]
    assert cold["load_average_1min"]["min"] <= cold["load_average_1min"]["max"]


def test_train_suite_compares_freeze_stages_settings_against_the_first(tmp_path: Path) -> None:
    record = run_tiny("train", tmp_path)
    settings = record["settings"]
    assert [row["freeze_stages"] for row in settings] == [0, 4]  # tiny: the first two defaults
    for row in settings:  # the rate is the median of the timed runs that the row lists
        runs = [float(v) for v in row["runs"].split(", ")]
        assert len(runs) == record["parameters"]["repeats"] and all(r > 0 for r in runs)
        assert row["samples_per_s"] == pytest.approx(statistics.median(runs), abs=0.01)
    assert settings[0]["ratio"] == 1.0
    assert settings[1]["ratio"] == pytest.approx(settings[1]["samples_per_s"] / settings[0]["samples_per_s"], rel=0.02)


def test_search_suite_writes_a_well_formed_record_when_it_exists(tmp_path: Path) -> None:
    if importlib.util.find_spec("benchmarks.suites.search") is None:
        pytest.skip("benchmarks/suites/search.py (the FAISS suite) does not exist yet")
    record = run_tiny("search", tmp_path)
    assert record["table"]


def test_scale_suite_compares_the_index_merged_on_disk_with_the_one_built_in_memory(tmp_path: Path) -> None:
    record = run_tiny("scale", tmp_path, "--no-engines")  # the engine comparison needs Ray: test_scale_ray.py
    build = record["index_build"]
    assert build["vectors"] == 20_000 and build["shards"] == 4
    assert build["same_ids_share"] == 1.0 and build["max_score_difference"] == 0.0  # the same index, in two ways
    steps = build["steps"]
    assert {"in memory: add all", "on disk: merge", "search in memory", "search on disk"} <= set(steps)
    assert all(step["seconds"] > 0 and step["peak_anon_bytes"] > 0 for step in steps.values())
    assert build["on_disk_bytes"] > 0 and len(record["load_average_at_start"]) == 3
