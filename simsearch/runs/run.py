"""One run of a training loop in its folder: starting or resuming it, the best epoch so far, the per-epoch writes
(history first, then the state) and its throughput. Both loops (`simsearch.training`, `simsearch.pretraining`) run
through it, so a run folder behaves the same whichever model it trains."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from simsearch.runs.folder import (
    HISTORY_FILE,
    LAST_DIR,
    STATE_FILE,
    forget_run,
    load_state,
    read_history,
    save_state,
    write_json,
)
from simsearch.runs.recipe import RunIdentity

__all__ = ["Best", "EpochProgress", "RunFolder", "Throughput"]

logger = logging.getLogger(__name__)


class EpochProgress(Protocol):
    """Receives progress; the CLI draws a bar with it. Epochs are numbered from 1."""

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None: ...

    def step(self, loss: float, samples_per_second: float) -> None: ...

    def end_epoch(self, epoch: int, record: dict[str, Any]) -> None: ...


@dataclass
class Best:
    """The best epoch so far by one number, and the epochs since it (for early stopping)."""

    higher_is_better: bool
    value: float = math.nan
    epoch: int = 0
    bad_epochs: int = 0

    def __post_init__(self) -> None:
        if math.isnan(self.value):
            self.value = -math.inf if self.higher_is_better else math.inf

    def update(self, epoch: int, value: float) -> bool:
        """Note an epoch's number; True when it is the best so far."""
        improved = value > self.value if self.higher_is_better else value < self.value
        if improved:
            self.value, self.epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return improved


@dataclass
class Throughput:
    """Samples counted since it was made, and their rate."""

    samples: int = 0
    started: float = field(default_factory=time.perf_counter)

    def add(self, samples: int) -> None:
        self.samples += samples

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    @property
    def per_second(self) -> float:
        return self.samples / max(self.seconds, 1e-9)


class RunFolder:
    """A run's output folder: `history.json` and `last/state.pt`, resumed when the saved state is of the same run.

    Without `resume` the old state and history are deleted at once (see `forget_run`).
    """

    def __init__(self, out: Path, identity: RunIdentity, *, resume: bool) -> None:
        self.out = out
        self.identity = identity
        self.resume = resume
        self.state_path = out / LAST_DIR / STATE_FILE
        self.history: list[dict[str, Any]] = []
        if not resume:
            forget_run(out)

    def saved_state(self) -> dict[str, Any] | None:
        """The state to resume from (None: start at epoch 1); the history is cut back to its epoch.

        Raises:
            the identity's error: the state is damaged, or of another recipe or other data.
        """
        if not self.resume or not self.state_path.is_file():
            return None
        state = load_state(self.state_path, self.identity.error)
        self.identity.check(state, self.state_path)
        self.history = read_history(self.out, int(state["epoch"]))
        logger.info("resuming %s after epoch %d", self.out, int(state["epoch"]))
        return state

    def saved_recipe(self, state: dict[str, Any]) -> dict[str, Any]:
        return self.identity.saved_recipe(state)

    def end_epoch(self, record: dict[str, Any], state: dict[str, Any], *, summary: str, improved: bool) -> None:
        """Log an epoch (`summary`: its scores), add its record to the history and save the state after it.

        History first: a state never names an epoch that history.json lacks (resuming cuts the rest).
        """
        epochs = self.identity.recipe.get("epochs")
        logger.info("epoch %d/%s: %s%s", record["epoch"], epochs, summary, " (best)" if improved else "")
        self.history.append(record)
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.out / HISTORY_FILE, self.history)
        save_state(self.state_path, {**state, "epoch": record["epoch"], **self.identity.state_fields()})
