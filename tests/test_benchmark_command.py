"""The benchmark command (`python -m benchmarks SUITE`, from a checkout) with fake suites: all, records, help,
errors; and no benchmarks in the shipped command line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from benchmark_helpers import check_record
from click.testing import CliRunner
from conftest import REPO

from benchmarks import __main__ as bench_main
from benchmarks import suites
from benchmarks.suites import BenchmarkError

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
