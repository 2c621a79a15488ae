"""One step of the scale suite's index build, run in a process of its own so that its peak memory is its own:
`python -m benchmarks.suites._scale_steps STEP JSON` prints one JSON line (seconds, peak anonymous and file-backed
resident memory, and what the step reports). Steps: `memory` (the IVF built in memory), `shard` (one shard filled),
`merge` (the shards merged on disk), `search` (an index opened and searched)."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


class _Resident:
    """Peak RssAnon (memory the process owns) and RssFile (file pages it maps: page cache, reclaimable), sampled."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak = {"RssAnon": 0, "RssFile": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def now(self) -> dict[str, int]:
        out = {}
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in self.peak:
                out[key] = int(value.split()[0]) * 1024
        return out

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            for key, value in self.now().items():
                self.peak[key] = max(self.peak[key], value)

    def __enter__(self) -> _Resident:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for key, value in self.now().items():
            self.peak[key] = max(self.peak[key], value)


def read_rows(path: str, dim: int, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of a raw float32 file, read (not mapped: mapped pages would count as the step's memory)."""
    with open(path, "rb") as f:
        f.seek(start * dim * 4)
        return np.fromfile(f, dtype=np.float32, count=(stop - start) * dim).reshape(-1, dim)


def _memory(a: dict[str, Any]) -> dict[str, Any]:
    import faiss

    index = faiss.deserialize_index(np.fromfile(a["trained"], dtype=np.uint8))
    for start in range(0, a["n"], 100_000):
        stop = min(a["n"], start + 100_000)
        index.add_with_ids(read_rows(a["vectors"], a["dim"], start, stop), np.arange(start, stop, dtype=np.int64))
    faiss.write_index(index, a["out"])
    return {"file_bytes": Path(a["out"]).stat().st_size}


def _shard(a: dict[str, Any]) -> dict[str, Any]:
    from indexes import ondisk

    start, stop = a["start"], a["stop"]
    trained = np.fromfile(a["trained"], dtype=np.uint8)
    ids = np.arange(start, stop, dtype=np.int64)
    ondisk.fill_shard(trained, ids, read_rows(a["vectors"], a["dim"], start, stop)).tofile(a["out"])
    return {"file_bytes": Path(a["out"]).stat().st_size}


def _merge(a: dict[str, Any]) -> dict[str, Any]:
    from indexes import VectorIndex, ondisk
    from simsearch.collection.index_file import save_index

    out = Path(a["out"])
    trained = np.fromfile(a["trained"], dtype=np.uint8)
    merged = ondisk.merge_shards(trained, [Path(s) for s in a["shards"]], ondisk.new_lists_path(out))
    save_index(VectorIndex.on_disk_from(merged, a["factory"]), out)
    lists = ondisk.lists_file(merged)
    assert lists is not None
    return {"file_bytes": out.stat().st_size, "lists_bytes": lists.stat().st_size}


def _search(a: dict[str, Any], resident: _Resident) -> dict[str, Any]:
    from indexes import VectorIndex

    index = VectorIndex.load(a["index"])
    opened = resident.now()
    index.set_search_params(a["params"])
    queries = np.load(a["queries"])
    started = time.perf_counter()
    scores, ids = index.search(queries, 10)
    seconds = time.perf_counter() - started
    np.savez(a["out"], ids=ids, scores=scores)
    return {"opened": opened, "searched": resident.now(), "queries_per_s": len(queries) / seconds}


def main(step: str, args: dict[str, Any]) -> dict[str, Any]:
    import faiss

    faiss.omp_set_num_threads(int(args.get("threads", 1)))
    with _Resident() as resident:
        started = time.perf_counter()
        if step == "search":
            facts = _search(args, resident)
        else:
            facts = {"memory": _memory, "shard": _shard, "merge": _merge}[step](args)
        seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "peak_anon_bytes": resident.peak["RssAnon"],
        "peak_file_bytes": resident.peak["RssFile"],
        **facts,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], json.loads(sys.argv[2]))))
