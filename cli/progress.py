"""A tqdm progress bar on stderr for indexing runs, and the one-line reports of skipped files."""

from __future__ import annotations

import sys

from tqdm import tqdm


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
        tqdm.write(f"skipped {path}: {reason}", file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
