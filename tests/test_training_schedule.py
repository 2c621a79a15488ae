"""The learning-rate schedule: linear warm-up then half a cosine, computed by timm, step for step the rates of the
formula written out."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch


def _reference_factor(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """The schedule as it was written by hand before timm computed it: linear warm-up from ~0 to 1, then half a
    cosine down to 0 at `total_steps`. The reference that the timm-based schedule must reproduce."""

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def test_the_schedule_warms_up_linearly_then_follows_half_a_cosine_to_zero() -> None:
    from simsearch.training.schedule import rate_factor

    total, warmup = 20, 4
    factor = _reference_factor(total, warmup)
    expected = []
    for step in range(total + 2):  # two steps past the end stay at zero
        if step < warmup:
            expected.append((step + 1) / warmup)
        else:
            t = min(1.0, (step - warmup) / (total - warmup))
            expected.append((1 + math.cos(math.pi * t)) / 2)
    assert [factor(step) for step in range(total + 2)] == pytest.approx(expected)
    assert [rate_factor(total, warmup, step) for step in range(total + 2)] == pytest.approx(expected, rel=1e-12)
    assert rate_factor(total, warmup, warmup - 1) == 1.0 and rate_factor(total, warmup, warmup) == 1.0
    assert rate_factor(total, warmup, total) == pytest.approx(0.0)
    assert rate_factor(10, 0, 0) == 1.0  # no warm-up: the cosine starts at once


@pytest.mark.parametrize(
    ("steps_per_epoch", "epochs", "warmup_epochs"),
    [(5, 4, 1.0), (3, 2, 0.0), (7, 3, 0.5), (1, 1, 0.0), (2, 1, 1.0), (4, 2, 3.0), (6, 10, 0.25)],
)
def test_timm_s_cosine_scheduler_gives_every_step_the_rate_of_the_hand_written_schedule(
    steps_per_epoch: int, epochs: int, warmup_epochs: float
) -> None:
    """Per step and per parameter group (backbone at lr x 0.1, head, loss at its own lr), the optimizer's rates under
    `WarmupCosine` (timm's CosineLRScheduler) are those of torch's LambdaLR driven by the hand-written formula, from
    the first step to two steps past the end; and resuming from a saved step count gives the same rates."""
    from simsearch.training.schedule import WarmupCosine

    total, warmup = steps_per_epoch * epochs, round(warmup_epochs * steps_per_epoch)

    def optimizer() -> torch.optim.Optimizer:
        groups = [{"params": [torch.zeros(1, requires_grad=True)], "lr": lr} for lr in (1e-4, 1e-3, 0.05)]
        return torch.optim.AdamW(groups, lr=1e-3)

    reference_optimizer = optimizer()
    reference = torch.optim.lr_scheduler.LambdaLR(reference_optimizer, _reference_factor(total, warmup))
    timm_optimizer = optimizer()
    schedule = WarmupCosine(timm_optimizer, total, warmup)
    for step in range(total + 2):
        expected = [group["lr"] for group in reference_optimizer.param_groups]
        assert schedule.get_last_lr() == pytest.approx(expected, rel=1e-12, abs=1e-18), step
        assert [group["lr"] for group in timm_optimizer.param_groups] == schedule.get_last_lr()
        reference_optimizer.step()
        reference.step()
        schedule.step()
        if step == total // 2:  # a resumed run: a new schedule loaded from the saved step count (LambdaLR's too)
            state = schedule.state_dict()
            assert state == {"last_epoch": reference.state_dict()["last_epoch"]}
            schedule = WarmupCosine(timm_optimizer, total, warmup)
            schedule.load_state_dict(reference.state_dict())


def test_resuming_with_more_epochs_jumps_to_the_rate_of_the_longer_cosine_as_the_hand_written_schedule_did() -> None:
    from simsearch.training.schedule import WarmupCosine, rate_factor

    steps_per_epoch, warmup = 4, 2
    for done in range(0, 9):
        for new_epochs in (2, 3, 5):
            longer = _reference_factor(steps_per_epoch * new_epochs, warmup)(done)
            assert rate_factor(steps_per_epoch * new_epochs, warmup, done) == pytest.approx(longer, rel=1e-12)
            group = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
            schedule = WarmupCosine(group, steps_per_epoch * new_epochs, warmup)
            schedule.load_state_dict({"last_epoch": done})
            assert schedule.get_last_lr()[0] == pytest.approx(0.01 * longer, rel=1e-12)
