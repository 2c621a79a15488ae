"""The reliability suite's crash loop: `simsearch index` and `simsearch remove` killed with SIGKILL at random times,
each kill followed by a check that the collection opens and that its index agrees with its store; then a run to
completion and a self-query of every image."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import REPO

#: A run that has not ended after this long is a hang, not a slow run.
HANG_S = 900.0
#: Until a command's length has been measured: how long a whole run of it is taken to last (seconds).
FIRST_GUESS_S = {"index": 60.0, "remove": 12.0}


def simsearch(*args: str | os.PathLike[str]) -> list[str]:
    """The command line of this checkout (not whatever `simsearch` is installed)."""
    return [sys.executable, "-m", "cli.main", *(os.fspath(a) for a in args)]


def child_env(threads: int) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}


def wait_unlocked(col: Path, timeout: float = 60.0) -> bool:
    """Wait until no process holds the collection's writer lock (a killed process's lock goes with its last file
    handle, a moment after it exits); False if it is still held after `timeout`."""
    lock = col / ".lock"
    if not lock.exists():
        return True
    deadline = time.monotonic() + timeout
    with open(lock, "ab") as handle:
        while True:
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.05)
                continue
            fcntl.lockf(handle, fcntl.LOCK_UN)
            return True


def check_collection(col: Path, photos: Path) -> tuple[int, list[str]]:
    """Open the collection read-only as a reader would: the index (repaired in memory if it lags) must hold exactly
    the store's ids, every stored vector must be there, every entry must name a photo of the folder. Returns the
    count and what is wrong."""
    from simsearch import SimSearchError, open_collection

    if not (col / "manifest.json").exists():
        return 0, []  # killed before its first save: no collection yet, which is a state the next run starts from
    problems: list[str] = []
    try:
        with open_collection(col, readonly=True) as c:
            store_ids = {int(i) for i in c.store.ids()}
            index_ids = {int(i) for i in c.index.ids()}
            if store_ids != index_ids:
                problems.append(f"index holds {len(index_ids)} ids, the store {len(store_ids)}")
            c.store.vectors(sorted(store_ids), c.dim)  # raises for a missing vector
            prefix = str(photos) + os.sep
            strays = [r.path for r in c.store.records() if not r.path.startswith(prefix) or not Path(r.path).is_file()]
            if strays:
                problems.append(f"{len(strays)} entries name no photo of the folder, e.g. {strays[0]}")
            if store_ids:
                probe = min(store_ids)
                if c.search_id(probe, 1, exclude_self=False)[0].score < 0.999:
                    problems.append(f"image {probe} is not its own top hit")
            return len(store_ids), problems
    except SimSearchError as exc:
        return -1, [f"the collection does not open: {exc}"]


def sidecar_behind(col: Path) -> bool:
    """Whether the index file is newer than its sidecar: a kill between the two writes of one save."""
    try:
        recorded = json.loads((col / "vectors.faiss.json").read_text())["file_bytes"]
        return bool(recorded != (col / "vectors.faiss").stat().st_size)
    except (OSError, ValueError, KeyError):
        return False


def temporaries(col: Path) -> set[str]:
    """Temporary files of interrupted saves in the collection (the next writer removes them)."""
    return {p.name for p in col.rglob("*.tmp")}


def leftovers(col: Path) -> int:
    return len(temporaries(col))


@dataclass
class KillLoop:
    """Kills `kills` runs of `simsearch index PHOTOS` and `simsearch remove` on a collection of `photos`."""

    col: Path
    photos: Path
    files: Sequence[Path]
    kills: int
    seed: int
    threads: int
    log_dir: Path
    record: dict[str, Any] = field(default_factory=dict)

    def run(self) -> dict[str, Any]:
        rng = random.Random(self.seed)
        durations: dict[str, list[float]] = {"index": [], "remove": []}
        kills = {"index": 0, "remove": 0}
        completed = {"index": 0, "remove": 0}
        failures: list[str] = []
        hangs = left_temps = mid_write = mid_save = 0
        temps: set[str] = set()
        behind = False
        count, started = 0, time.monotonic()
        while sum(kills.values()) < self.kills and not failures:
            kind = "index" if count < len(self.files) and rng.random() < 0.8 else "remove"
            if kind == "remove" and count == 0:
                kind = "index"
            if kind == "index":
                command = simsearch("index", self.photos, "-c", self.col, "--workers", "0", "-q")
            else:
                doomed = rng.sample(list(self.files), rng.randint(1, max(1, len(self.files) // 4)))
                command = simsearch("remove", *doomed, "-c", self.col)
            # Anywhere in a whole run (as long as the last ones took): start-up, scan, embedding, commits, saves.
            delay = rng.uniform(0.02, 1.1 * max(durations[kind][-3:], default=FIRST_GUESS_S[kind]))
            log = self.log_dir / f"run_{sum(kills.values()) + sum(completed.values()):04d}_{kind}.log"
            with open(log, "wb") as out:
                t0 = time.monotonic()
                proc = subprocess.Popen(
                    command, stdout=out, stderr=subprocess.STDOUT, env=child_env(self.threads), start_new_session=True
                )
                try:
                    rc = proc.wait(timeout=delay)
                except subprocess.TimeoutExpired:
                    rc = None
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    kills[kind] += 1
                else:
                    durations[kind].append(time.monotonic() - t0)
                    completed[kind] += 1
            text = log.read_bytes().decode(errors="replace")
            if rc not in (None, 0) and not (kind == "remove" and "nothing matched" in text):
                failures.append(f"{kind} ended with status {rc}: {text.strip().splitlines()[-1:]}")
            if "Traceback" in text:
                failures.append(f"{kind} printed a traceback (see {log.name})")
            if not wait_unlocked(self.col):
                hangs += 1
                failures.append("the writer lock stayed held after the writer was killed")
            # Counted when a kill made the state, not while it lasts (a run killed at start-up leaves it as it was).
            temps, was = temporaries(self.col), temps
            left_temps += rc is None and bool(temps - was)
            behind, was_behind = sidecar_behind(self.col), behind
            mid_save += rc is None and behind and not was_behind
            before = count
            count, problems = check_collection(self.col, self.photos)
            mid_write += rc is None and count != before
            failures.extend(f"after a killed {kind} at {delay:.1f} s: {p}" for p in problems)
        # The run to completion: everything indexed, nothing lost, nothing left over.
        t0 = time.monotonic()
        final = subprocess.run(
            simsearch("index", self.photos, "-c", self.col, "--workers", "0", "-q"),
            capture_output=True,
            env=child_env(self.threads),
            timeout=HANG_S,
            check=False,
        )
        if final.returncode != 0:
            failures.append(f"the final run failed: {final.stderr.decode(errors='replace').strip()[-300:]}")
        count, problems = check_collection(self.col, self.photos)
        failures.extend(f"after the final run: {p}" for p in problems)
        lost = len(self.files) - count
        if lost:
            failures.append(f"{lost} images lost: {count} indexed of {len(self.files)}")
        if leftovers(self.col):
            failures.append(f"{leftovers(self.col)} temporary files left after a completed run")
        worst = self_query(self.col)
        if worst < 0.999:
            failures.append(f"a self-query scored {worst:.4f}")
        return {
            "kills": sum(kills.values()),
            "kills_by_command": kills,
            "kills_that_landed_after_a_commit": mid_write,
            "kills_that_left_a_temporary_file": left_temps,
            "kills_between_the_index_file_and_its_sidecar": mid_save,
            "completed_runs_before_their_kill": completed,
            "median_run_seconds": {k: round(statistics.median(v), 1) if v else None for k, v in durations.items()},
            "final_run_seconds": round(time.monotonic() - t0, 1),
            "photos": len(self.files),
            "indexed_at_the_end": count,
            "lost_images": max(0, lost),
            "self_query_worst_top_score": round(worst, 5),
            "hangs": hangs,
            "seconds": round(time.monotonic() - started, 1),
            "failures": failures,
        }


def self_query(col: Path) -> float:
    """The lowest top score over every stored image searched with its own vector (itself included): 1.0 when each
    one finds itself (or a file of the same content, which shares its vector)."""
    from simsearch import open_collection

    worst = 1.0
    with open_collection(col, readonly=True) as c:
        for image_id in c.store.ids():
            hits = c.search_id(int(image_id), 4, exclude_self=False)
            mine = [h.score for h in hits if h.id == int(image_id)]
            worst = min(worst, mine[0] if mine and hits[0].score - mine[0] < 1e-5 else 0.0)
    return worst
