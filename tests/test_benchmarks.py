"""The benchmark command (`python -m benchmarks SUITE`, from a checkout): every suite runs at --tiny sizes and writes
a well-formed record (JSON with the environment and the suite's numbers, valid PNGs, a Markdown table); the framework
itself (all, records, help, errors) with fake suites; helpers. No timing thresholds: only shapes and keys."""

from __future__ import annotations

import importlib.util
import json
import mmap
import os
import re
import statistics
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import DATA, REPO

from benchmarks import __main__ as bench_main
from benchmarks import suites
from benchmarks.record import ENVIRONMENT_KEYS, PeakRSS, default_result_path, markdown_table
from benchmarks.suites import BenchmarkError, class_balanced_rows

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

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


def check_record(out: Path, suite: str) -> dict[str, Any]:
    """The files of one suite run are there and well formed; returns the parsed record."""
    from PIL import Image

    record = json.loads((out / f"{suite}.json").read_text())
    assert record["suite"] == suite
    assert set(ENVIRONMENT_KEYS) <= set(record["environment"]), set(ENVIRONMENT_KEYS) - set(record["environment"])
    env = record["environment"]
    assert env["device"] in ("cpu", "cuda") or env["device"].startswith("cuda:")
    if env["gpu"] is None:
        assert env["device"] == "cpu" and "no GPU" in env["note"]
    assert {"commit", "dirty"} <= set(record["git"])
    assert record["date"] and record["parameters"]["tiny"] is True
    assert record["table"] and all(isinstance(row, dict) for row in record["table"])
    assert record["figures"], "a suite draws at least one PNG"
    for name in record["figures"]:
        path = out / name
        assert path.read_bytes()[:8] == PNG_MAGIC, path
        with Image.open(path) as im:
            im.verify()
    markdown = (out / f"{suite}.md").read_text()
    assert markdown.startswith(f"## {suite}") and "|---|" in markdown
    return record


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
    assert len(record["sweep"]) == 4  # tiny: batch sizes 2, 4 x workers 0, 1
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
    assert {(p["batch_size"], p["workers"]) for p in record["sweep"]} == {(2, 0), (2, 1), (4, 0), (4, 1)}
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


# --------------------------------------------------------------------------------------------------------------------
# The framework, with fake suites
# --------------------------------------------------------------------------------------------------------------------


def fake_suite(name: str, calls: list[str]) -> types.ModuleType:
    """A suite module that records its call and draws a one-bar PNG."""
    module = types.ModuleType(f"benchmarks.suites.{name}", f"Fake {name} suite.")

    def add_arguments(parser: Any) -> None:
        parser.add_argument("--size", type=int, default=3)

    def run(args: Any, out_dir: Path) -> dict[str, Any]:
        from benchmarks.record import figure

        calls.append(name)
        path = out_dir / f"{name}.png"
        with figure(path) as ax:
            ax.bar(["x"], [args.size])
        return {
            "record": {"size": args.size, "value": np.float32(0.5), "array": np.arange(2)},
            "figures": [path],
            "table": [{"name": name, "value": 0.5}],
        }

    module.add_arguments = add_arguments  # type: ignore[attr-defined]
    module.run = run  # type: ignore[attr-defined]
    return module


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    modules = {n: fake_suite(n, calls) for n in ("alpha", "beta")}
    monkeypatch.setattr(suites, "available", lambda: list(modules))
    monkeypatch.setattr(suites, "load", lambda name: modules[name])
    return calls


def test_all_runs_every_suite_with_its_defaults_and_writes_one_record_each(
    fakes: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench_main.main(["all", "--tiny", "--device", "cpu", "--out", str(tmp_path)]) == 0
    assert fakes == ["alpha", "beta"]
    for name in ("alpha", "beta"):
        record = check_record(tmp_path, name)
        assert record["size"] == 3 and record["value"] == 0.5 and record["array"] == [0, 1]
        assert record["parameters"]["size"] == 3 and record["environment"]["device"] == "cpu"
    assert "| name | value |" in capsys.readouterr().out


def test_help_lists_the_suites_and_all(fakes: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench_main.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "alpha" in out and "beta" in out and "all" in out


def test_the_real_suites_are_found() -> None:
    assert {"quality", "embed", "query"} <= set(suites.available())
    for name in ("quality", "embed", "query"):
        assert callable(suites.load(name).run)


def test_a_suite_error_is_one_line_and_status_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module = fake_suite("broken", [])

    def run(args: Any, out_dir: Path) -> dict[str, Any]:
        raise BenchmarkError("no photos here")

    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setattr(suites, "available", lambda: ["broken"])
    monkeypatch.setattr(suites, "load", lambda name: module)
    assert bench_main.main(["broken", "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == "error: no photos here"
    assert not (tmp_path / "broken.json").exists()


def test_amp_fp16_on_the_cpu_is_refused() -> None:
    with pytest.raises(BenchmarkError, match="fp16 needs --device cuda"):
        suites.autocast("cpu", "fp16")


# --------------------------------------------------------------------------------------------------------------------
# python -m benchmarks, and no benchmarks in the shipped command line
# --------------------------------------------------------------------------------------------------------------------


def test_python_m_benchmarks_passes_its_arguments_to_the_suite(fakes: list[str], tmp_path: Path) -> None:
    assert bench_main.main(["alpha", "--size", "5", "--out", str(tmp_path)]) == 0
    assert fakes == ["alpha"] and json.loads((tmp_path / "alpha.json").read_text())["size"] == 5


def test_python_m_benchmarks_runs_from_the_checkout_and_lists_the_real_suites() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--help"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "usage: python -m benchmarks" in result.stdout
    for name in ("quality", "embed", "query", "search", "train", "all"):
        assert re.search(rf"^\s+{name}\s", result.stdout, re.M), result.stdout


def test_outside_a_checkout_the_benchmarks_are_not_importable_and_the_error_is_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "quality"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith("No module named benchmarks"), result.stderr


def test_the_shipped_command_line_has_no_bench_command() -> None:
    from cli.main import main

    assert "bench" not in main.commands
    result = CliRunner().invoke(main, ["bench", "quality"])
    assert result.exit_code == 2 and "No such command 'bench'" in result.output


# --------------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------------


def test_limit_takes_whole_classes_of_at_least_two_images() -> None:
    labels = np.repeat(np.arange(10), 7)  # 10 classes of 7
    rows = class_balanced_rows(labels, 9)
    kept = labels[rows]
    assert len(rows) <= 9 and len(np.unique(kept)) == 4
    assert all(np.sum(kept == c) == 2 for c in np.unique(kept))
    assert list(class_balanced_rows(labels, None)) == list(range(70))
    rows = class_balanced_rows(labels, 35)  # 4 per class: 8 whole classes fit
    assert len(rows) == 32 and list(rows[:4]) == [0, 1, 2, 3]
    with pytest.raises(BenchmarkError):
        class_balanced_rows(labels, 1)


def test_markdown_table_takes_the_union_of_the_columns_in_order() -> None:
    table = markdown_table([{"a": 1, "b": 0.12345}, {"a": 2, "c": "x|y"}])
    lines = table.strip().splitlines()
    assert lines[0] == "| a | b | c |" and lines[1] == "|---|---|---|"
    assert lines[2] == "| 1 | 0.123 |  |" and lines[3] == "| 2 |  | x\\|y |"


def test_default_result_names_tell_recipes_apart() -> None:
    def name(**recipe: Any) -> str:
        fields = {"loss": "triplet", "backbone": "random:simsearch_conv4_wide", "epochs": 30, "seed": 0, **recipe}
        return default_result_path("omniglot", types.SimpleNamespace(**fields)).name

    assert name() == "omniglot_triplet_simsearch_conv4_wide_30ep_seed0.json"
    others = {name(loss="center"), name(backbone="random:simsearch_conv4"), name(epochs=40), name(seed=1)}
    assert len(others) == 4 and name() not in others
    assert name(backbone="runs/fashion_c4w/") == "omniglot_triplet_fashion_c4w_30ep_seed0.json"


def test_peak_rss_sees_memory_allocated_inside_it() -> None:
    with PeakRSS() as before:
        pass
    # A fresh anonymous mapping, every page touched: a numpy array could reuse heap pages that earlier tests freed but
    # left resident, and then the RSS would not grow.
    with PeakRSS() as during:
        block = mmap.mmap(-1, 64 * 2**20)
        block[:: mmap.PAGESIZE] = b"\x01" * (64 * 2**20 // mmap.PAGESIZE)
    assert during.peak_self >= before.peak_self + 48 * 2**20
    assert during.as_dict()["peak_pss_with_workers_mib"] > 0
    block.close()


def test_cli_run_record_is_assembled_from_what_train_and_eval_wrote(tmp_path: Path) -> None:
    from PIL import Image

    from benchmarks.cli_run import build_record
    from cli.main import main

    rng = np.random.default_rng(0)
    for c in range(6):
        (tmp_path / "data" / f"c{c}").mkdir(parents=True)
        for i in range(4):
            pixels = np.clip(rng.integers(0, 256, 3) + rng.normal(0, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / f"c{c}" / f"{i}.png")
    run, data = tmp_path / "run", str(tmp_path / "data")
    common = ["--device", "cpu", "-q"]
    train = ["train", data, "--out", str(run), "--backbone", "random:test_efficientnet", "--embed-dim", "8"]
    train += ["--epochs", "2", "-p", "2", "-k", "2", "--image-size", "32", "--no-augment", "--val-fraction", "0.34"]
    assert CliRunner().invoke(main, [*train, *common]).exit_code == 0
    result = CliRunner().invoke(main, ["eval", data, "--model", str(run), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    evaluation = json.loads((run / "eval-data.json").read_text())

    record = build_record(
        run, evaluation, off_the_shelf=evaluation, goals={"map@r": 2.0}, commands=["a", "b"], note="n"
    )
    history = json.loads((run / "history.json").read_text())
    assert record["test"]["map@r"] == evaluation["metrics"]["map@r"] and record["history"] == history
    assert [h["epoch"] for h in record["history"]] == [0, 1, 2] and record["recipe"]["epochs"] == 2  # 0: untrained
    assert record["off_the_shelf"]["recall@1"] == evaluation["metrics"]["recall@1"]
    assert record["goal_met"] is False and record["commands"] == ["a", "b"]
    reachable = {"map@r": evaluation["metrics"]["map@r"]}
    assert build_record(run, evaluation, off_the_shelf=None, goals=reachable, commands=[], note="")["goal_met"]

    # The same checkpoint read with test-time flips sits beside the plain reading, with its own verdict.
    result = CliRunner().invoke(main, ["eval", data, "--model", str(run), "--device", "cpu", "--tta", "hflip"])
    assert result.exit_code == 0, result.output
    flipped = json.loads((run / "eval-data-hflip.json").read_text())
    both = build_record(run, evaluation, off_the_shelf=None, goals=reachable, commands=[], note="", with_tta=[flipped])
    assert both["test"] == record["test"] and both["test_with_tta"]["hflip"]["map@r"] == flipped["metrics"]["map@r"]
    assert both["goal_met_with_tta"] == {"hflip": flipped["metrics"]["map@r"] >= evaluation["metrics"]["map@r"]}
    with pytest.raises(ValueError, match="without --tta"):
        build_record(run, flipped, off_the_shelf=None, goals={}, commands=[], note="")
    assert set(ENVIRONMENT_KEYS) <= set(record["environment"])


@pytest.mark.slow
def test_fashion_mnist_benchmark_writes_both_readings_and_resumes(tmp_path: Path) -> None:
    """A smoke run of the Fashion-MNIST script: P@1 with and without flips in [0, 1], and a second call on the same
    run dir resumes (no epoch trained again) and says after which epoch. Slow: it embeds the 10k test images twice."""
    if not (DATA / "fashion-mnist").exists():
        pytest.skip(f"fashion-mnist not found under {DATA} (set SIMSEARCH_DATA to the shared data folder)")
    from benchmarks import fashion_mnist

    run, out = tmp_path / "run", tmp_path / "fm.json"
    argv = ["--limit", "400", "--val-images", "100", "--set", "epochs=1", "--set", "batches_per_epoch=2"]
    argv += ["--set", "p=4", "--set", "k=4", "--set", "backbone=random:simsearch_conv4_wide"]
    argv += ["--threads", "1", "--run-dir", str(run), "--out", str(out)]
    fashion_mnist.main(argv)
    first = json.loads(out.read_text())
    for key in ("p@1", "p@1_hflip_tta"):  # a share of the 10k test images (rounded to 4 digits)
        assert first[key] * 10_000 == pytest.approx(round(first[key] * 10_000)) and 0 <= first[key] <= 1
    assert first["resumed_after_epoch"] == 0 and first["epochs_run"] == 1
    fashion_mnist.main(argv)
    again = json.loads(out.read_text())
    assert again["resumed_after_epoch"] == 1 and again["p@1"] == first["p@1"]


@pytest.mark.slow
def test_fashion_mnist_benchmark_without_validation_keeps_the_last_epoch(tmp_path: Path) -> None:
    """`--val-images 0` trains on every training image, with no validation split, and keeps the last epoch."""
    if not (DATA / "fashion-mnist").exists():
        pytest.skip(f"fashion-mnist not found under {DATA} (set SIMSEARCH_DATA to the shared data folder)")
    from benchmarks import fashion_mnist

    out = tmp_path / "fm.json"
    argv = ["--limit", "400", "--val-images", "0", "--set", "epochs=2", "--set", "batches_per_epoch=2"]
    argv += ["--set", "p=4", "--set", "k=4", "--set", "backbone=random:simsearch_conv4_wide"]
    argv += ["--threads", "1", "--out", str(out)]
    fashion_mnist.main(argv)
    record = json.loads(out.read_text())
    assert record["best_epoch"] == 2 and record["best_val"] == {}
    assert "none held out" in record["protocol"] and "last epoch" in record["note"]
    assert record["p@1"] * 10_000 == pytest.approx(round(record["p@1"] * 10_000)) and 0 <= record["p@1"] <= 1


def test_latency_percentiles_are_in_milliseconds_and_ordered() -> None:
    stats = suites.percentiles_ms(np.linspace(0.001, 0.1, 101), points=(50, 95, 99))
    assert stats["p50_ms"] == pytest.approx(50.5) and stats["p50_ms"] <= stats["p95_ms"] <= stats["p99_ms"] <= 100
    assert stats["min_ms"] == pytest.approx(1.0) and "p99_ms" not in suites.percentiles_ms([0.001, 0.002])


def test_the_training_benchmarks_build_their_recipe_as_the_library_s_train_config_changed_by_set(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One recipe object: each benchmark writes its recipe as a TrainConfig, and `--set FIELD=VALUE` changes it through
    the library's KEY=VALUE reading (the one `simsearch train --loss-option` uses); no JSON copies of its fields."""
    from benchmarks import caltech, fashion_mnist, omniglot
    from simsearch.runs import with_changes
    from simsearch.training import TrainConfig

    assert fashion_mnist.parse_args([]).recipe == fashion_mnist.RECIPE
    args = omniglot.parse_args(["--set", "loss=center", "--set", "augment_kwargs.hflip=0.5", "--set", "epochs=40"])
    assert isinstance(args.recipe, TrainConfig)
    assert args.recipe == with_changes(omniglot.RECIPE, {"loss": "center", "epochs": 40, "augment_kwargs.hflip": 0.5})
    assert args.recipe.augment_kwargs == {**omniglot.RECIPE.augment_kwargs, "hflip": 0.5}
    assert default_result_path("omniglot", args.recipe).name == "omniglot_center_simsearch_conv4_wide_40ep_seed0.json"
    args = caltech.parse_args(["--loss", "triplet", "center", "--set", "freeze_stages=4"])
    triplet = caltech.loss_recipe(args, "triplet")
    assert triplet.loss_kwargs == caltech.LOSS_OPTIONS["triplet"] and triplet.freeze_stages == 4
    assert caltech.loss_recipe(args, "multi_similarity").loss_kwargs == {}
    for module in (omniglot, fashion_mnist):
        with pytest.raises(SystemExit) as exit_info:
            module.parse_args(["--set", "epoch=3"])
        assert exit_info.value.code == 2
        assert "TrainConfig has no field 'epoch'; did you mean epochs?" in capsys.readouterr().err


def test_the_autoencoder_benchmark_removes_only_the_pictures_it_draws(tmp_path: Path) -> None:
    """A picture drawn by another command (the CVAE samples of `simsearch pretrain`) survives a run; one of this
    benchmark's pictures from a run with other code sizes does not."""
    import argparse

    import torch

    from benchmarks.autoencoders_output import draw_pictures

    kept, stale = tmp_path / "cvae_samples_code2.png", tmp_path / "reconstructions_code8.png"
    for path in (kept, stale):
        path.write_bytes(PNG_MAGIC)
    args = argparse.Namespace(seed=0, codes=[2, 16])
    written = draw_pictures(
        {},
        {},
        torch.zeros(3, 1, 28, 28),
        np.zeros(3),
        [],
        tmp_path,
        args,
        model_names=("vae",),
        conv_decoders=("conv_unpool",),
    )
    assert written == [] and sorted(p.name for p in tmp_path.iterdir()) == [kept.name]
