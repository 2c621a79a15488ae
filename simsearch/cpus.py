"""How many cores this process may use, for the forward passes and decoding workers that share them (torch-free, so
that a server running an ONNX export can ask too)."""

from __future__ import annotations

import os

__all__ = ["usable_cores"]


def usable_cores() -> int:
    """The cores this process may run on: its affinity mask, which containers and `taskset` narrow, not the
    machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity masks on this platform
        return os.cpu_count() or 1
