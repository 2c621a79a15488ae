"""Per-request stage timings: what a request spent decoding, transforming, in the model, in the index and in the
store, sent back in a `Server-Timing` header (browsers' developer tools draw it) and observed by the metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

#: The stages of a query, in the order they run; `queue` is the wait for a shared forward pass to start.
STAGES = ("decode", "transform", "queue", "forward", "search", "store")


class StageTimer:
    """Seconds per stage for one request; a stage met more than once (a batch of images) adds up."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def merge(self, seconds: dict[str, float]) -> None:
        for stage, value in seconds.items():
            self.add(stage, value)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def milliseconds(self) -> dict[str, float]:
        ordered = [s for s in STAGES if s in self.seconds] + sorted(set(self.seconds) - set(STAGES))
        return {stage: round(self.seconds[stage] * 1000, 3) for stage in ordered}

    def header(self) -> str:
        """`decode;dur=1.2, forward;dur=30.1, ..., total;dur=33.0` (milliseconds), total last."""
        parts = [f"{stage};dur={ms:.3f}" for stage, ms in self.milliseconds().items()]
        parts.append(f"total;dur={(time.perf_counter() - self.started) * 1000:.3f}")
        return ", ".join(parts)
