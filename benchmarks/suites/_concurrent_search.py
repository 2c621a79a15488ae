"""The reliability suite's concurrency run: threads search one open collection while another process adds and
removes images (copies of stored photos under other names, so that no forward pass slows the writer down). Every
answer must come without an error, hold k results, and never name an image whose removal the writer had committed
before the search began (ids are never reused, so a removed id can only be stale).

Run as a module, it is the writer: `python -m benchmarks.suites._concurrent_search COL LOG STOP SEED COPY...`.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.suites._kill_loop import HANG_S, child_env


def writer(col: Path, log: Path, stop: Path, seed: int, copies: list[str]) -> None:
    """Add a random handful of `copies`, then remove them, until `stop` exists; log each committed removal with the
    time it returned (one JSON line each)."""
    from simsearch import open_collection

    rng = random.Random(seed)
    with open_collection(col) as c, open(log, "a", encoding="utf-8") as out:
        while not stop.exists():
            chosen = rng.sample(copies, rng.randint(1, min(8, len(copies))))
            c.add(chosen, workers=0)
            added = [i for i in (c.store.id_for_path(p) for p in chosen) if i is not None]
            removed = [r.id for r in c.remove(added)]
            out.write(json.dumps({"added": len(added), "ids": removed, "removed": time.time()}) + "\n")
            out.flush()


@dataclass
class Answer:
    started: float
    ids: list[int]


def check_answers(answers: list[Answer], removals: list[dict[str, Any]], k: int) -> dict[str, int]:
    """Short lists and stale ids among `answers`, given the writer's `removals` (ids and when they were committed)."""
    removed_at = {i: r["removed"] for r in removals for i in r["ids"]}  # ids are never reused: one time each
    short = stale = 0
    for answer in answers:
        short += len(answer.ids) < k
        stale += any(removed_at.get(i, answer.started) < answer.started for i in answer.ids)
    return {"short_lists": short, "stale_results": stale}


def _rounds(log: Path) -> int:
    try:
        return log.read_bytes().count(b"\n")
    except OSError:
        return 0


def concurrent_searches(
    col: Path,
    copies: list[Path],
    searches: int,
    threads: int,
    k: int,
    seed: int,
    log_dir: Path,
    env_threads: int,
    writer_rounds: int,
) -> dict[str, Any]:
    """At least `searches` searches (by stored id and by vector, alternately) from `threads` threads on one
    collection opened read-only, going on until the writer process has done `writer_rounds` rounds of adding and
    removing; returns the counts and the failures."""
    from simsearch import open_collection

    log, stop = log_dir / "writer.jsonl", log_dir / "writer.stop"
    log.unlink(missing_ok=True)
    stop.unlink(missing_ok=True)
    command = [sys.executable, "-m", __name__, str(col), str(log), str(stop), str(seed), *map(str, copies)]
    errors: list[str] = []
    answers: list[list[Answer]] = [[] for _ in range(threads)]
    with open_collection(col, readonly=True) as c:
        own = [int(i) for i in c.store.ids()]
        queries = c.store.vectors(own[:64], c.dim)
        writer_proc = subprocess.Popen(command, stderr=subprocess.PIPE, env=child_env(env_threads))
        while not log.exists() and writer_proc.poll() is None:
            time.sleep(0.05)  # the searches start once the writer has committed its first round

        def more(i: int) -> bool:
            """Whether search number `i` is wanted: up to `searches`, then on while the writer has rounds to go
            (its log is read every 200 searches of a thread)."""
            if i < searches:
                return True
            if writer_proc.poll() is not None:
                return False
            return (i // threads) % 200 != 0 or _rounds(log) < writer_rounds

        def search(n: int) -> None:
            rng = random.Random(seed * 1000 + n)
            i = n
            while more(i):
                i += threads
                started = time.time()
                try:
                    if (i // threads) % 2:
                        hits = c.search_id(own[rng.randrange(len(own))], k)
                    else:
                        hits = c.search_vectors(queries[rng.randrange(len(queries))], k)
                except Exception as exc:  # noqa: BLE001 - counted and reported, never fatal
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                answers[n].append(Answer(started, [h.id for h in hits]))

        t0 = time.monotonic()
        workers = [threading.Thread(target=search, args=(n,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(HANG_S)
        hung = sum(worker.is_alive() for worker in workers)
        seconds = time.monotonic() - t0
        stop.touch()
        try:
            _, stderr = writer_proc.communicate(timeout=HANG_S)
        except subprocess.TimeoutExpired:
            writer_proc.kill()
            _, stderr = writer_proc.communicate()
            hung += 1
    removals = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    flat = [a for per_thread in answers for a in per_thread]
    checked = check_answers(flat, removals, k)
    failures = [f"{len(errors)} searches raised, e.g. {errors[0]}"] if errors else []
    if writer_proc.returncode != 0:
        failures.append(f"the writer failed: {stderr.decode(errors='replace').strip()[-300:]}")
    failures += [f"{v} {k_.replace('_', ' ')}" for k_, v in checked.items() if v]
    if hung:
        failures.append(f"{hung} searchers or the writer did not end")
    return {
        "searches": len(flat),
        "threads": threads,
        "k": k,
        "collection_images": len(own),
        "writer_rounds": len(removals),
        "writer_images_added_and_removed": sum(r["added"] for r in removals),
        "searches_per_second": round(len(flat) / seconds, 1) if seconds else None,
        "exceptions": len(errors),
        **checked,
        "hangs": hung,
        "failures": failures,
    }


if __name__ == "__main__":
    writer(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), sys.argv[5:])
