"""A run folder's layout and its crash-safe writes: the per-epoch records (`history.json`), the resumable state of the
latest epoch (`last/state.pt`), and the seeding that makes an epoch a function of (seed, epoch)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simsearch.errors import SimSearchError
from simsearch.fsio import atomic_path, atomic_write_json

__all__ = [
    "HISTORY_FILE",
    "LAST_DIR",
    "STATE_FILE",
    "forget_run",
    "load_state",
    "read_history",
    "save_state",
    "seed_everything",
    "write_json",
]

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


def load_state(path: Path, error: type[SimSearchError]) -> dict[str, Any]:
    """A state written by `save_state`; a damaged file is `error` in one line."""
    # weights_only: tensors, numbers, strings and containers only, never arbitrary pickled objects.
    try:
        return torch.load(path, map_location="cpu", weights_only=True)  # type: ignore[no-any-return]
    except Exception as exc:  # noqa: BLE001 - torch raises several types for a damaged file
        raise error(f"cannot resume from {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from None


def read_history(out: Path, last_epoch: int) -> list[dict[str, Any]]:
    """The history's records up to `last_epoch`: a crash between writing the history and the state leaves the history
    one epoch ahead, and the resumed run replays that epoch."""
    path = out / HISTORY_FILE
    if not path.is_file():
        return []
    return [h for h in json.loads(path.read_text(encoding="utf-8")) if h["epoch"] <= last_epoch]


def forget_run(out: Path) -> None:
    """Delete a run folder's resumable state and history before a restart: a restart interrupted before its first
    epoch ends must not leave the old run there for the next call to resume. The old best model stays until the new
    run saves its own."""
    (out / LAST_DIR / STATE_FILE).unlink(missing_ok=True)
    (out / HISTORY_FILE).unlink(missing_ok=True)
