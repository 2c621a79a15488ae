"""Dynamic batching (server.batching): concurrent images share forward passes, each gets its own vector back, a lone
image does not wait, failures reach every waiter, and stopping fails what still waits."""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence

import numpy as np
import pytest

pytest.importorskip("fastapi")

from server.batching import FORWARD_THREAD, BatcherStopped, ForwardBatcher  # noqa: E402


def echo(sizes: list[int], gate: threading.Event | None = None, entered: threading.Event | None = None):
    """A fake model: the vector of tensor x is [x, 2x]; records batch sizes; may hold its first pass at `gate`
    (setting `entered` once inside it)."""

    def forward(tensors: Sequence[float]) -> np.ndarray:
        if gate is not None and not sizes:
            if entered is not None:
                entered.set()
            gate.wait(10)
        sizes.append(len(tensors))
        return np.array([[t, 2 * t] for t in tensors], dtype=np.float32)

    return forward


def test_concurrent_images_share_passes_and_each_gets_its_own_vector() -> None:
    sizes: list[int] = []
    gate, entered = threading.Event(), threading.Event()
    batcher = ForwardBatcher(echo(sizes, gate, entered), max_batch=8, max_wait_s=0.05)
    batcher.start()
    try:
        first = batcher.submit([100.0])  # holds the model while the others queue up
        assert entered.wait(10)
        futures = [batcher.submit([float(i)])[0] for i in range(20)]
        gate.set()
        assert first[0].result(10).vector.tolist() == [100.0, 200.0]
        results = [f.result(10) for f in futures]
    finally:
        batcher.stop()
    assert [r.vector.tolist() for r in results] == [[float(i), 2.0 * i] for i in range(20)]
    assert sizes[0] == 1 and max(sizes[1:]) == 8 and sum(sizes) == 21
    assert all(1 <= r.batch <= 8 for r in results)


def test_a_lone_image_does_not_wait_for_company() -> None:
    sizes: list[int] = []
    batcher = ForwardBatcher(echo(sizes), max_batch=32, max_wait_s=60.0)
    batcher.start()
    try:
        result = batcher.submit([3.0])[0].result(timeout=10)  # would take 60 s if it waited for more
    finally:
        batcher.stop()
    assert result.vector.tolist() == [3.0, 6.0] and sizes == [1]


def test_announced_images_are_waited_for_and_batched_together() -> None:
    sizes: list[int] = []
    batcher = ForwardBatcher(echo(sizes), max_batch=32, max_wait_s=30.0)
    batcher.start()
    try:
        with batcher.announce(3):
            futures = batcher.submit([1.0])
            futures += batcher.submit([2.0, 3.0])
        values = [f.result(10).vector[0] for f in futures]
    finally:
        batcher.stop()
    assert values == [1.0, 2.0, 3.0] and sizes == [3]


def test_a_failed_pass_fails_its_waiters_and_the_next_pass_works() -> None:
    calls = []

    def flaky(tensors: Sequence[float]) -> np.ndarray:
        calls.append(len(tensors))
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return np.ones((len(tensors), 2), dtype=np.float32)

    batcher = ForwardBatcher(flaky, max_batch=4, max_wait_s=0.0)
    batcher.start()
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            batcher.embed([1.0])
        assert batcher.embed([1.0, 2.0])[1].vector.tolist() == [1.0, 1.0]
    finally:
        batcher.stop()


def test_stopping_fails_what_still_waits_and_refuses_new_work() -> None:
    gate, entered = threading.Event(), threading.Event()
    sizes: list[int] = []
    batcher = ForwardBatcher(echo(sizes, gate, entered), max_batch=1, max_wait_s=0.0)
    batcher.start()
    running = batcher.submit([1.0])
    assert entered.wait(10)
    waiting = batcher.submit([2.0])
    stopper = threading.Thread(target=batcher.stop)
    stopper.start()
    while not batcher._stopping:  # stop() has been called while the first pass runs
        threading.Event().wait(0.01)
    gate.set()
    stopper.join(10)
    assert running[0].result(10).vector.tolist() == [1.0, 2.0]
    with pytest.raises(BatcherStopped):
        waiting[0].result(10)
    with pytest.raises(BatcherStopped):
        batcher.submit([3.0])


def test_several_workers_run_passes_at_once_and_every_image_gets_its_vector() -> None:
    inside = threading.Barrier(2, timeout=10)
    sizes: list[int] = []

    def forward(tensors: Sequence[float]) -> np.ndarray:
        if len(sizes) < 2:
            sizes.append(len(tensors))
            inside.wait()  # two passes inside the model at once, or this times out
        return np.array([[t, -t] for t in tensors], dtype=np.float32)

    batcher = ForwardBatcher(forward, max_batch=1, max_wait_s=0.0, workers=2)
    batcher.start()
    try:
        futures = [batcher.submit([float(i)])[0] for i in range(10)]
        values = [f.result(10).vector.tolist() for f in futures]
    finally:
        batcher.stop()
    assert values == [[float(i), -float(i)] for i in range(10)]


def test_the_follow_up_step_gets_each_pass_with_its_tags_and_answers_each_image() -> None:
    seen: list[tuple[list[float], list[str]]] = []
    gate, entered = threading.Event(), threading.Event()

    def then(vectors: np.ndarray, tags: list) -> list:
        seen.append(([float(v[0]) for v in vectors], list(tags)))
        return [f"{tag}:{v[0]:g}" for v, tag in zip(vectors, tags, strict=True)]

    batcher = ForwardBatcher(echo([], gate, entered), max_batch=8, max_wait_s=0.0, then=then)
    batcher.start()
    try:
        first = batcher.submit([9.0], "a")
        assert entered.wait(10)
        futures = batcher.submit([1.0, 2.0], "b") + batcher.submit([3.0], "c")
        gate.set()
        assert first[0].result(10).found == "a:9"
        results = [f.result(10) for f in futures]
    finally:
        batcher.stop()
    assert [r.found for r in results] == ["b:1", "b:2", "c:3"]
    assert [r.vector.tolist() for r in results] == [[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]]
    assert seen == [([9.0], ["a"]), ([1.0, 2.0, 3.0], ["b", "b", "c"])]


def test_an_error_of_the_follow_up_step_fails_only_the_images_it_names() -> None:
    def then(vectors: np.ndarray, tags: list) -> list:
        return [ValueError(f"bad {tag}") if tag == "bad" else tag for tag in tags]

    gate, entered = threading.Event(), threading.Event()
    batcher = ForwardBatcher(echo([], gate, entered), max_batch=8, max_wait_s=0.0, then=then)
    batcher.start()
    try:
        batcher.submit([0.0], "first")
        assert entered.wait(10)
        good, bad = batcher.submit([1.0], "good"), batcher.submit([2.0], "bad")
        gate.set()
        assert good[0].result(10).found == "good"
        with pytest.raises(ValueError, match="bad bad"):
            bad[0].result(10)
    finally:
        batcher.stop()


def test_a_raising_follow_up_step_fails_its_pass_and_the_next_pass_works() -> None:
    calls = []

    def then(vectors: np.ndarray, tags: list) -> list:
        calls.append(len(tags))
        if len(calls) == 1:
            raise RuntimeError("index gone")
        return list(tags)

    batcher = ForwardBatcher(echo([]), max_batch=4, max_wait_s=0.0, then=then)
    batcher.start()
    try:
        with pytest.raises(RuntimeError, match="index gone"):
            batcher.submit([1.0], "x")[0].result(10)
        assert batcher.submit([2.0], "y")[0].result(10).found == "y"
    finally:
        batcher.stop()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread names are read from /proc")
def test_forward_workers_carry_their_name_in_the_kernel() -> None:
    """`top -H` and per-thread CPU accounting (the serve suite's) tell the model's threads from the others."""
    names: list[str] = []

    def forward(tensors: Sequence[float]) -> np.ndarray:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm") as f:
            names.append(f.read().strip())
        return np.zeros((len(tensors), 2), dtype=np.float32)

    batcher = ForwardBatcher(forward, workers=2)
    batcher.start()
    try:
        batcher.submit([1.0])[0].result(timeout=10)
    finally:
        batcher.stop()
    assert names and names[0] in (f"{FORWARD_THREAD}-0", f"{FORWARD_THREAD}-1")
