"""The learning-rate schedule of metric learning: a linear warm-up to the full rate, then half a cosine down to zero,
stepped once per optimizer step. timm's `CosineLRScheduler` computes the rates; this module only says which of its
steps each of ours is, and warns when a resumed run's schedule differs from the one it started with."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
from timm.scheduler import CosineLRScheduler

__all__ = ["WarmupCosine", "rate_factor", "warn_on_new_schedule"]

logger = logging.getLogger(__name__)


class WarmupCosine:
    """Warm-up over `warmup_steps` steps, then a cosine from each group's rate to 0 at `total_steps`.

    Step s (from 0) runs at `(s + 1) / warmup_steps` of the rate while s < warmup_steps (the warm-up's last step at
    the full rate), then at `(1 + cos(pi * (s - warmup_steps) / (total_steps - warmup_steps))) / 2`, and at 0 past
    the end. timm's warm-up counts its steps from 0 and reaches the full rate one step later, so warm-up steps are
    handed to it counted from 1: the rates are those that runs have always had, and a saved run resumes on them.

    The state is the number of steps taken (`last_epoch`, as torch's schedulers name it).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int) -> None:
        self.optimizer = optimizer
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        with _without_one_step_notice():
            self.scheduler = CosineLRScheduler(
                optimizer,
                t_initial=max(1, total_steps - warmup_steps),
                lr_min=0.0,
                warmup_t=warmup_steps,
                warmup_lr_init=0.0,
                warmup_prefix=True,
                t_in_epochs=False,
            )
        self.last_epoch = 0
        self._apply()

    def _apply(self) -> None:
        step = self.last_epoch
        self.scheduler.step_update(step + 1 if step < self.warmup_steps else step)

    def step(self) -> None:
        """After an optimizer step: set the rates of the next one."""
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        """The rate of each parameter group for the next step."""
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Go on from a saved step count (states saved by torch's `LambdaLR` hold the same `last_epoch`)."""
        self.last_epoch = int(state["last_epoch"])
        self._apply()


@contextlib.contextmanager
def _without_one_step_notice() -> Iterator[None]:
    """timm warns that a one-step cosine has no effect; here it has one (the rate is 0 after that step), so a run of
    one step (or a warm-up as long as the run) would print a false warning."""
    timm_logger = logging.getLogger(CosineLRScheduler.__module__)

    def keep(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Cosine annealing scheduler will have no effect")

    timm_logger.addFilter(keep)
    try:
        yield
    finally:
        timm_logger.removeFilter(keep)


def rate_factor(total_steps: int, warmup_steps: int, step: int) -> float:
    """The share of the full rate that `WarmupCosine` gives step `step` (from 0)."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = WarmupCosine(optimizer, total_steps, warmup_steps)
    schedule.load_state_dict({"last_epoch": step})
    return schedule.get_last_lr()[0]


def warn_on_new_schedule(
    saved_epochs: int, epochs: int, lr: float, schedule: WarmupCosine, steps_per_epoch: int
) -> None:
    """Resuming with another `epochs` is allowed (it extends or shortens a run), but the cosine is recomputed for the
    new length, so the learning rate jumps at the resumed step: say so, with both rates, rather than hide it."""
    if saved_epochs == epochs:
        return
    step = schedule.last_epoch
    warmup = schedule.warmup_steps
    old_factor = rate_factor(steps_per_epoch * saved_epochs, warmup, step)
    new_factor = rate_factor(steps_per_epoch * epochs, warmup, step)
    logger.warning(
        "the run was started for %d epochs and resumes for %d: the learning-rate schedule is recomputed, "
        "so at step %d the rate goes from %.3g to %.3g",
        saved_epochs,
        epochs,
        step,
        lr * old_factor,
        lr * new_factor,
    )
