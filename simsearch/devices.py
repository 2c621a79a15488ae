"""Where a model runs: resolving "auto", "cpu", "cuda", "cuda:N" or "mps" to a torch device.

Its own module, importing torch alone (not timm nor the model code), so that the command line can refuse a device
that this machine lacks before it spends seconds loading a model.
"""

from __future__ import annotations

import torch

from simsearch.errors import ModelError


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None/"auto" -> cuda when available, else cpu; an explicit accelerator that is absent is a ModelError."""
    if isinstance(device, torch.device):
        name = str(device)
    else:
        name = (device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ModelError(f"unknown device {name!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"device {name!r} requested but no CUDA GPU is available here: use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelError(f"device {name!r} requested but only {torch.cuda.device_count()} CUDA GPU(s) exist")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ModelError(f"device {name!r} requested but Apple MPS is not available here: use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ModelError(f"unsupported device {name!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return dev
