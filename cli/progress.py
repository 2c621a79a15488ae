"""tqdm progress bars on stderr: per stage for indexing runs (with one-line reports of skipped files), per epoch for
training and pretraining runs."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from cli.output import printable


class BarProgress:
    """Implements ``simsearch.collection.Progress``: one bar per stage, with a rate (images/s) and an ETA."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bar: tqdm | None = None

    def stage(self, name: str, total: int) -> None:
        self.close()
        if total:
            self._bar = tqdm(
                total=total,
                desc=name,
                unit="img",
                file=sys.stderr,
                disable=not self.enabled,
                dynamic_ncols=True,
                smoothing=0.1,
            )

    def advance(self, count: int) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def skip(self, path: str, reason: str) -> None:
        tqdm.write(f"skipped {printable(path)}: {reason}", file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class EpochBar:
    """Implements ``simsearch.training.TrainProgress``: the run's plan as one line, then one bar per epoch with the
    loss and samples/s, then the line that `summary(epoch, record)` writes for the finished epoch (each kind of run
    reports its own scores).

    Where stderr is not a terminal (a log file, a pipe) there is no bar: a progress line after the first batch and
    then every `every_s` seconds says that the run is alive, how fast it goes and how long the epoch has left.
    `quiet` drops all of it: a quiet run reports only its final line."""

    def __init__(self, quiet: bool, summary: Callable[[int, dict[str, Any]], str], *, every_s: float = 30.0) -> None:
        self.enabled = not quiet and sys.stderr.isatty()
        self.lines = not quiet and not self.enabled
        self.quiet = quiet
        self.summary = summary
        self.every_s = every_s
        self._bar: tqdm | None = None
        self._epoch = (0, 0, 0)
        self._done = 0
        self._started = self._last_line = 0.0

    def start_run(self, plan: Any) -> None:
        if not self.quiet:
            tqdm.write(plan.describe(), file=sys.stderr)

    def before_training(self, scores: dict[str, float]) -> None:
        if not self.quiet:
            tqdm.write(
                f"epoch 0 (before training): val R@1 {scores['recall@1']:.4f} MAP@R {scores['map@r']:.4f}",
                file=sys.stderr,
            )

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self._epoch, self._done = (epoch, epochs, steps), 0
        self._started = time.monotonic()
        self._bar = tqdm(
            total=steps,
            desc=f"epoch {epoch}/{epochs}",
            unit="batch",
            file=sys.stderr,
            disable=not self.enabled,
            dynamic_ncols=True,
            leave=False,
        )

    def step(self, loss: float, samples_per_second: float) -> None:
        self._done += 1
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{samples_per_second:.1f}", refresh=False)
            self._bar.update(1)
        now = time.monotonic()
        if self.lines and (self._done == 1 or now - self._last_line >= self.every_s):
            self._last_line = now
            epoch, epochs, steps = self._epoch
            left = (now - self._started) / self._done * (steps - self._done)
            tqdm.write(
                f"epoch {epoch}/{epochs}: batch {self._done}/{steps}, loss {loss:.4f}, "
                f"{samples_per_second:.1f} samples/s, {_duration(left)} left in the epoch",
                file=sys.stderr,
            )

    def end_epoch(self, epoch: int, record: dict[str, Any]) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if not self.quiet:
            tqdm.write(self.summary(epoch, record), file=sys.stderr)


def _duration(seconds: float) -> str:
    """`2 h 05 min`, `4 min 10 s` or `12 s`: as long as it needs to be and no longer."""
    whole = round(seconds)
    if whole >= 3600:
        return f"{whole // 3600} h {whole % 3600 // 60:02d} min"
    if whole >= 60:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole} s"
