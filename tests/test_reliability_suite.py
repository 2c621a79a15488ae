"""The reliability suite (`python -m benchmarks reliability`): its checks catch what they are for (a stale result,
a short list, a good image left out, a bad one let in, a collection whose index disagrees with its store), and at
its smallest sizes it runs all three parts with nothing lost, no crash and no hang."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
from conftest import DATA, SAMPLE_PHOTOS, copy_collection

from benchmarks import __main__ as bench_main
from benchmarks.suites._concurrent_search import Answer, check_answers
from benchmarks.suites._fuzz_corpus import EXPECTATIONS, Corpus, check_indexed, png_bomb
from benchmarks.suites._kill_loop import check_collection, leftovers, self_query
from simsearch.collection.store import Store


def test_a_search_that_began_after_a_committed_removal_and_names_it_is_stale() -> None:
    removals = [{"ids": [7, 8], "removed": 10.0, "added": 2}, {"ids": [9], "removed": 20.0, "added": 1}]
    answers = [
        Answer(started=9.5, ids=[7, 1, 2]),  # began before the removal committed: may still see 7
        Answer(started=10.5, ids=[1, 2, 3]),
        Answer(started=10.5, ids=[8, 2, 3]),  # stale
        Answer(started=25.0, ids=[9, 1]),  # stale, and short
    ]
    assert check_answers(answers, removals, k=3) == {"short_lists": 1, "stale_results": 2}
    assert check_answers(answers[:2], removals, k=3) == {"short_lists": 0, "stale_results": 0}


def _corpus(root: Path) -> Corpus:
    corpus = Corpus(root)
    for expect, name in [("good", b"g.jpg"), ("bad", b"b.jpg"), ("special", b"fifo.jpg"), ("either", b"t.jpg")]:
        corpus.add(expect, expect, os.path.join(os.fsencode(root), name))
    corpus.add("odd name", "good", os.path.join(os.fsencode(root), b"caf\xe9.jpg"))
    corpus.add("hidden", "excluded", os.path.join(os.fsencode(root), b".h.jpg"))
    assert set(corpus.entries) == set(EXPECTATIONS)
    return corpus


def test_the_fuzz_check_wants_every_good_image_in_and_every_bad_entry_out_and_counted(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path)
    p = {name: os.fsdecode(os.path.join(os.fsencode(tmp_path), name)) for name in (b"g.jpg", b"b.jpg", b"fifo.jpg")}
    latin = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"caf\xe9.jpg"))
    skipped = [{"path": p[b"b.jpg"], "reason": "not an image"}, {"path": str(tmp_path / "t.jpg"), "reason": "cut"}]
    report = {"skipped_files": skipped, "special_files": [{"path": p[b"fifo.jpg"], "kind": "named pipe"}]}
    report |= {"skipped": 2, "excluded": 0}
    good = check_indexed(corpus, report, {p[b"g.jpg"], latin})
    assert good["failures"] == [] and good["good_indexed"] == 2 and good["damaged_skipped"] == 1

    assert "1 good images not indexed" in check_indexed(corpus, report, {p[b"g.jpg"]})["failures"][0]
    let_in = check_indexed(corpus, report, {p[b"g.jpg"], latin, p[b"b.jpg"]})["failures"]
    assert let_in and "bad or special entries indexed" in let_in[0]
    uncounted = check_indexed(corpus, {**report, "special_files": []}, {p[b"g.jpg"], latin})["failures"]
    assert uncounted and "neither indexed, skipped nor counted" in uncounted[0]


def test_a_png_bomb_declares_its_size_in_a_few_bytes() -> None:
    data = png_bomb(30_000, rows=2)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (30_000, 30_000)
    assert len(data) < 10_000


def test_the_collection_check_names_strays_and_takes_a_lagging_index_as_a_reader_does(
    sample_collection: Path, tmp_path: Path
) -> None:
    col = copy_collection(sample_collection, tmp_path / "col")
    assert check_collection(col, SAMPLE_PHOTOS) == (48, [])
    assert self_query(col) == pytest.approx(1.0, abs=1e-4) and leftovers(col) == 0
    count, problems = check_collection(col, SAMPLE_PHOTOS / "watch")
    assert count == 48 and problems and "name no photo of the folder" in problems[0]
    store = Store(col / "store.lmdb")
    with store.write() as batch:  # a removal whose index save was cut short: the index lags the store
        first = int(store.ids()[0])
        batch.delete(first)
    store.close()
    (col / ".vectors.faiss.1.0123abcd.tmp").write_bytes(b"half")
    assert check_collection(col, SAMPLE_PHOTOS) == (47, [])  # a reader repairs the lagging index in memory
    assert leftovers(col) == 1


@pytest.mark.slow
def test_the_reliability_suite_at_its_smallest_loses_nothing(tmp_path: Path) -> None:
    status = bench_main.main(["reliability", "--tiny", "--threads", "1", "--out", str(tmp_path), "--data", str(DATA)])
    assert status == 0
    record = json.loads((tmp_path / "reliability.json").read_text())
    assert record["failures"] == [] and record["passed"] is True
    assert record["kills"] == 3 and record["fuzzed_files"] >= 120 and record["searches"] == 400
    assert (record["lost_images"], record["crashes"], record["hangs"]) == (0, 0, 0)
    assert record["crash_loop"]["indexed_at_the_end"] == 48 == record["crash_loop"]["photos"]
    assert record["fuzz"]["good_indexed"] == record["fuzz"]["good"] > 100
    assert (tmp_path / "reliability.md").read_text().startswith("## reliability")
