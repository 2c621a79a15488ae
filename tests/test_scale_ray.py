"""The Ray engine on a real single-node cluster (`ray_cluster`, one for the whole test run): the same collection as the
local engine, built through `simsearch index --engine ray`; a worker killed mid-run and a rerun end complete."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from collection_helpers import QUERIES, assert_consistent
from conftest import SAMPLE_PHOTOS

from cli.main import main
from simsearch import open_collection

pytestmark = pytest.mark.usefixtures("ray_cluster")

#: A whole indexing run of the 48 sample photos on Ray takes 20-60 s on a loaded 2-core machine.
RUN_TIMEOUT_S = 300


def _records(path: Path) -> dict[int, tuple[str, np.ndarray, bytes | None]]:
    with open_collection(path) as col:
        return {r.id: (r.path, col.store.vectors([r.id], col.dim)[0], col.thumbnail(r.id)) for r in col.store.records()}


def _bounded(work, timeout: float = RUN_TIMEOUT_S):
    """Run `work()` in a thread; its result, or its exception re-raised; a run past `timeout` fails the test."""
    out: dict[str, object] = {}

    def run() -> None:
        try:
            out["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            out["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        pytest.fail(f"the indexing run did not end within {timeout} s")
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out.get("value")


def test_ray_engine_builds_the_collection_the_local_engine_builds(sample_collection, tmp_path):
    col_path = tmp_path / "ray-col"
    runner = CliRunner()
    result = _bounded(
        lambda: runner.invoke(
            main, ["index", str(SAMPLE_PHOTOS), "-c", str(col_path), "--engine", "ray", "--batch-size", "8", "--json"]
        )
    )
    assert result.exit_code == 0, result.output
    local, remote = _records(sample_collection), _records(col_path)
    assert sorted(remote) == sorted(local)  # the same ids...
    for image_id, (path, vector, thumb) in local.items():
        assert remote[image_id][0] == path  # ...for the same files
        assert float(vector @ remote[image_id][1]) >= 0.9999
        assert remote[image_id][2] is not None and thumb is not None
    with open_collection(col_path) as col:
        assert_consistent(col)
    for query in sorted(QUERIES.iterdir()):  # every other command uses the collection unchanged
        outputs = [
            runner.invoke(main, ["query", str(query), "-c", str(c), "-k", "5"]) for c in (sample_collection, col_path)
        ]
        assert all(o.exit_code == 0 for o in outputs), [o.output for o in outputs]
        local_rows, remote_rows = ([line.split() for line in o.stdout.splitlines()[1:]] for o in outputs)
        assert [row[2] for row in remote_rows] == [row[2] for row in local_rows]
        assert np.allclose([float(r[1]) for r in remote_rows], [float(r[1]) for r in local_rows], atol=1e-3)

    rerun = runner.invoke(main, ["index", str(SAMPLE_PHOTOS), "-c", str(col_path), "--engine", "ray", "--json"])
    assert rerun.exit_code == 0, rerun.output
    assert '"embedded": 0' in rerun.output and '"unchanged": 48' in rerun.output  # incremental: nothing to embed


def _ray_workers(marker: str) -> list[int]:
    """Pids of this test run's Ray worker processes (descendants of this process) whose title names `marker`."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    mine, grew = {os.getpid()}, True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in mine} - mine
        grew = bool(found)
        mine |= found
    pids = []
    for pid in mine - {os.getpid()}:
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title.startswith("ray::") and marker in title:
            pids.append(pid)
    return pids


class _KillAfterFirstBatch:
    """Progress hooks that kill the embedding actor's process, and any decoding task's, once the first embedded batch
    is committed."""

    def __init__(self) -> None:
        self.killed: list[int] = []
        self.stage_name = ""
        self.batches = 0

    def stage(self, name: str, total: int) -> None:
        self.stage_name = name

    def advance(self, count: int) -> None:
        if self.stage_name != "embedding":
            return
        self.batches += 1
        if self.batches == 1:
            self.killed = _ray_workers("EmbedActor")
            for pid in self.killed + _ray_workers("decode_batch"):
                os.kill(pid, signal.SIGKILL)

    def skip(self, path: str, reason: str) -> None:
        pass


def test_a_killed_worker_loses_no_committed_batch_and_a_rerun_completes(sample_collection, tmp_path):
    from simsearch import Collection
    from simsearch.scale import RayEngine

    col_path = tmp_path / "col"
    killer = _KillAfterFirstBatch()

    def first_run():
        with RayEngine() as engine, Collection.open(col_path, create=True, device="cpu") as col:
            return col.index_folder(SAMPLE_PHOTOS, batch_size=4, progress=killer, engine=engine)

    try:
        first = _bounded(first_run)
    except Exception:  # noqa: BLE001 - the run may fail with its worker; the committed batches must survive
        first = None
    assert killer.killed, "no embedding actor process was found to kill"
    with open_collection(col_path) as col:
        committed = len(col)
        assert_consistent(col)
    assert committed >= 4  # the batch committed before the kill is there
    with RayEngine() as engine, Collection.open(col_path, device="cpu") as col:
        second = _bounded(lambda: col.index_folder(SAMPLE_PHOTOS, batch_size=4, engine=engine))
    assert second.embedded == 48 - committed  # the rerun embeds only what the store lacks...
    assert second.unchanged == committed
    if first is not None:
        assert first.added == 48  # ...which is nothing when Ray restarted the actor and finished the run
    local, remote = _records(sample_collection), _records(col_path)
    by_path = {path: vector for path, vector, _ in remote.values()}
    assert sorted(by_path) == sorted(path for path, _, _ in local.values())  # complete, each file once
    assert len(by_path) == len(remote) == 48
    for path, vector, _ in local.values():
        assert float(vector @ by_path[path]) >= 0.9999
    with open_collection(col_path) as col:
        assert_consistent(col)


@pytest.mark.parametrize(
    "resources, workers, plan",
    [
        ((2.0, 0.0, 2.0), None, (2, 1, 0.0, True)),  # a 2-core node: one actor a core, decoding its own batches
        ((4.0, 0.0, 2.0), None, (4, 1, 0.0, True)),  # two of them
        ((8.0, 0.0, 8.0), None, (2, 4, 0.0, False)),  # larger nodes: decoding tasks beside one actor per 4 CPUs
        ((8.0, 1.0, 8.0), None, (1, 8, 1.0, False)),  # a GPU: one actor on it
        ((2.0, 0.0, 2.0), 1, (1, 2, 0.0, False)),  # actors the user asked for keep the separate decoding tasks
    ],
)
def test_the_actor_layout_follows_the_cluster(monkeypatch, resources, workers, plan):
    from simsearch.scale import RayEngine

    engine = RayEngine(workers=workers)
    monkeypatch.setattr(engine, "_resources", lambda: resources)
    assert engine._plan_workers() == plan
