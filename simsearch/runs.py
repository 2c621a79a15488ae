"""What both training loops (metric learning in `simsearch.training`, autoencoders in `simsearch.pretraining`) share
about a run: its seeding, and the layout and crash-safe writes of its output folder (`history.json`, `last/state.pt`).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simsearch.fsio import atomic_path, atomic_write_json

__all__ = ["HISTORY_FILE", "LAST_DIR", "STATE_FILE", "forget_run", "save_state", "seed_everything", "write_json"]

# The resumable state of the latest epoch lives in LAST_DIR/STATE_FILE; the per-epoch records in HISTORY_FILE.
LAST_DIR = "last"
STATE_FILE = "state.pt"
HISTORY_FILE = "history.json"


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch, so that a run with the same recipe draws the same batches and weights."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def write_json(path: Path, data: Any) -> None:
    """Durable write-then-rename: an interruption mid-write leaves the previous file intact."""
    atomic_write_json(path, data)


def _cpu(value: Any) -> Any:
    """A copy of a (nested) state dict with every tensor on the CPU, so the state loads on any device."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu").clone()
    if isinstance(value, dict):
        return {k: _cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_cpu(v) for v in value)
    return value


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write a run's resumable state (tensors moved to the CPU), then rename: an interruption mid-write leaves the
    previous epoch's state intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(_cpu(state), tmp)


def forget_run(out: Path) -> None:
    """Delete a run folder's resumable state and history before a restart: a restart interrupted before its first
    epoch ends must not leave the old run there for the next call to resume. The old best model stays until the new
    run saves its own."""
    (out / LAST_DIR / STATE_FILE).unlink(missing_ok=True)
    (out / HISTORY_FILE).unlink(missing_ok=True)
