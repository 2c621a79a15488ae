"""tqdm progress bars on stderr: per stage for indexing runs (with one-line reports of skipped files), per epoch for
training and pretraining runs."""

from __future__ import annotations

import sys
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
    """Implements ``simsearch.training.TrainProgress``: one bar per epoch with the loss and samples/s, then the line
    that `summary(epoch, record)` writes for the finished epoch (each kind of run reports its own scores).

    `quiet` drops both: a quiet run reports only its final line."""

    def __init__(self, quiet: bool, summary: Callable[[int, dict[str, Any]], str]) -> None:
        self.enabled = not quiet and sys.stderr.isatty()
        self.quiet = quiet
        self.summary = summary
        self._bar: tqdm | None = None

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
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
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{samples_per_second:.1f}", refresh=False)
            self._bar.update(1)

    def end_epoch(self, epoch: int, record: dict[str, Any]) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if not self.quiet:
            tqdm.write(self.summary(epoch, record), file=sys.stderr)
