"""The near-duplicate benchmark at tiny size (slow: it embeds two small photo sets): a well-formed record with
pairwise precision/recall/F1 of dedup and of imagededup's hashes, and a scale row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import DATA, require_caltech

pytest.importorskip("imagededup")


@pytest.mark.slow
def test_dedup_suite_scores_dedup_and_the_hashes_on_the_same_set(tmp_path: Path) -> None:
    from benchmarks import __main__ as bench_main

    require_caltech()
    status = bench_main.main(["dedup", "--tiny", "--threads", "1", "--out", str(tmp_path), "--data", str(DATA)])
    assert status == 0
    record = json.loads((tmp_path / "dedup.json").read_text())
    methods = [row["method"] for row in record["table"]]
    assert methods[0].startswith("simsearch dedup, default")
    assert {f"imagededup {m}, default distance" for m in ("PHash", "DHash", "WHash", "AHash")} <= set(methods)
    for row in record["table"]:
        if "f1" in row:
            assert 0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1 and 0 <= row["f1"] <= 1
    assert record["sets"]["held_out"]["same_item_pairs"] == 12 * 6
    assert record["scale"][0]["vectors"] == 2000 and record["scale"][0]["dedup_s"] > 0
