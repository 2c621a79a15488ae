"""Dynamic batching: images of concurrent queries share one forward pass, which costs far less per image than one
pass each, and then one index search. Worker threads run the model; requests hand them transformed images and wait
for their vectors (and for what the follow-up step made of them)."""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


#: The forward workers' thread name, also given to the operating system (as `top -H` and /proc show it).
FORWARD_THREAD = "simsearch-fwd"
_PR_SET_NAME = 15  # from <linux/prctl.h>


def _name_os_thread(name: str) -> None:
    """Give the calling thread `name` (at most 15 bytes) in the kernel too, where Python 3.11 leaves it unnamed."""
    if sys.platform != "linux":
        return
    try:
        ctypes.CDLL(None).prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        log.debug("could not name thread %s", name)


class BatcherStopped(RuntimeError):
    """The server is shutting down: a query that was still waiting for the model gets this."""


@dataclass(frozen=True)
class Embedded:
    """One image's vector, with how long it waited for its pass to start and how long the pass took, and what the
    batcher's follow-up step gave for it (None without one)."""

    vector: np.ndarray
    queue_s: float
    forward_s: float
    batch: int
    found: Any = None


@dataclass
class _Item:
    tensor: Any
    tag: Any = None
    future: Future[Embedded] = field(default_factory=Future)
    submitted: float = field(default_factory=time.perf_counter)


class ForwardBatcher:
    """Runs `forward(stack of tensors) -> (N, D) vectors` on batches of at most `max_batch` queued images.

    A pass starts as soon as a worker is free and an image is queued. It waits up to `max_wait_s` for more only
    while other requests are announced (decoding an image they will submit): with nothing on the way, waiting
    would only add latency, and a lone query is never delayed. With `workers` > 1, as many passes run at once (on a
    CPU, each on its own core: see `SearchService.load`).

    `then(vectors, tags)`, when given, runs in the same worker right after a pass, on the pass's vectors and the tags
    its images were submitted with, and gives one result per image; an exception instance among them fails only that
    image. The server searches the index there: one flat search of a pass's queries reads the stored vectors once
    for all of them, where a search per request reads them once each.
    """

    def __init__(
        self,
        forward: Callable[[Sequence[Any]], np.ndarray],
        *,
        max_batch: int = 32,
        max_wait_s: float = 0.005,
        workers: int = 1,
        on_batch: Callable[[int, float], None] | None = None,
        then: Callable[[np.ndarray, list[Any]], Sequence[Any]] | None = None,
    ) -> None:
        self._forward = forward
        self._then = then
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._items: list[_Item] = []
        self._announced = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._run, name=f"{FORWARD_THREAD}-{i}", daemon=True) for i in range(workers)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the pass under way, then fail whatever still waits."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)
        with self._cond:
            left, self._items = self._items, []
        for item in left:
            item.future.set_exception(BatcherStopped("the server is shutting down"))

    @contextmanager
    def announce(self, count: int = 1) -> Iterator[None]:
        """Say that `count` images are being prepared: a pass about to start may wait a moment for them."""
        with self._cond:
            self._announced += count
        try:
            yield
        finally:
            with self._cond:
                self._announced -= count
                self._cond.notify_all()

    def submit(self, tensors: Sequence[Any], tag: Any = None) -> list[Future[Embedded]]:
        """Queue images; `tag` goes with each of them to the follow-up step."""
        items = [_Item(t, tag) for t in tensors]
        with self._cond:
            if self._stopping:
                raise BatcherStopped("the server is shutting down")
            self._items.extend(items)
            self._cond.notify_all()
        return [item.future for item in items]

    def embed(self, tensors: Sequence[Any]) -> list[Embedded]:
        """Submit and wait (for callers in a worker thread)."""
        return [f.result() for f in self.submit(tensors)]

    def _take(self) -> list[_Item] | None:
        with self._cond:
            while not self._items and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            deadline = time.perf_counter() + self.max_wait_s
            while len(self._items) < self.max_batch and self._announced > 0 and not self._stopping:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch, self._items = self._items[: self.max_batch], self._items[self.max_batch :]
            return batch

    def _run(self) -> None:
        _name_os_thread(threading.current_thread().name)
        while (batch := self._take()) is not None:
            started = time.perf_counter()
            try:
                vectors = self._forward([item.tensor for item in batch])
                took = time.perf_counter() - started
                if self._on_batch is not None:
                    self._on_batch(len(batch), took)
                found = [None] * len(batch) if self._then is None else self._then(vectors, [i.tag for i in batch])
            except BaseException as exc:  # noqa: BLE001 - every waiting request gets the failure, the thread lives on
                log.exception("a pass of %d images failed", len(batch))
                for item in batch:
                    item.future.set_exception(exc)
                continue
            for item, vector, result in zip(batch, vectors, found, strict=True):
                if isinstance(result, BaseException):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(Embedded(vector, started - item.submitted, took, len(batch), result))
