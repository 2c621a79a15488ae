"""The benchmark suites (one module each, see `benchmarks/__main__.py` for the contract) and what several of them
share: finding suites, the device and precision set-up, Caltech-101 photo folders, latency statistics.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import math
import pkgutil
import shutil
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from simsearch.models import Embedder

logger = logging.getLogger(__name__)

#: Suites in the order `python -m benchmarks all` runs them; modules found beside them run after these.
KNOWN_SUITES = ("quality", "embed", "query", "search", "train")


class BenchmarkError(Exception):
    """A benchmark cannot run as asked (bad option, missing data); `__main__` prints it as one line."""


def available() -> list[str]:
    """Names of the suite modules present in this checkout (a suite still being written may be absent)."""
    names = [n for n in KNOWN_SUITES if importlib.util.find_spec(f"{__name__}.{n}") is not None]
    extra = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    return names + [n for n in extra if n not in names]


def load(name: str) -> ModuleType:
    """Import the suite module `name` and check that it has the contract's two functions."""
    module = importlib.import_module(f"{__name__}.{name}")
    missing = [f for f in ("add_arguments", "run") if not callable(getattr(module, f, None))]
    if missing:
        raise BenchmarkError(f"suite {name!r} lacks {', '.join(missing)}")
    return module


# --------------------------------------------------------------------------------------------------------------------
# Device and precision
# --------------------------------------------------------------------------------------------------------------------

AMP_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}


def autocast(device: str, amp: str) -> contextlib.AbstractContextManager[Any]:
    """Autocast for `--amp fp16|bf16` (fp16 on CUDA only), a no-op for `off`.

    The library's `forward` runs in the calling thread (decode workers never run the model), so a context entered
    around `Collection.index_folder` or `Collection.search` covers their forward passes too.
    """
    import torch

    if amp == "off":
        return contextlib.nullcontext()
    device_type = torch.device(device).type
    if amp == "fp16" and device_type != "cuda":
        raise BenchmarkError("--amp fp16 needs --device cuda (CPU autocast supports bf16 only)")
    return torch.autocast(device_type=device_type, dtype=getattr(torch, AMP_DTYPES[amp]))


def prepare(embedder: Embedder, device: str) -> Embedder:
    """NHWC weights on every device: `load_embedder` does it on the CPU only, convolutions on CUDA gain too."""
    if device.startswith("cuda"):
        embedder.use_channels_last()
    return embedder


def synchronize(device: str) -> None:
    """Wait for queued GPU work before reading a clock (the library's `forward` already syncs via `.cpu()`)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


# --------------------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------------------


def caltech_photo_names(n: int, data: str | Path | None) -> list[Path]:
    """`n` Caltech-101 photos spread over the 101 object classes: the first ceil(n / 101) of each class (more when
    small classes run out), classes in sorted order, from the copy that `simsearch.data` unpacks once into its cache.

    n = 1000 gives the 10 first photos of each of the first 100 classes (the selection of `benchmarks/engine.py`).
    """
    from simsearch.data import caltech101_classes, default_cache_dir

    if n < 1:
        raise BenchmarkError(f"need at least one photo, got {n}")
    classes = caltech101_classes(root=data)  # unpacks the tar on first use
    folder = default_cache_dir() / "caltech101"
    by_class = [sorted((folder / cls).glob("*.jpg")) for cls in classes]
    total = sum(len(files) for files in by_class)
    if n > total:
        raise BenchmarkError(f"Caltech-101 has {total} object photos, {n} asked")
    # Small classes run out before big ones: raise the per-class share until n photos are found.
    per_class = math.ceil(n / len(classes))
    while sum(min(len(files), per_class) for files in by_class) < n:
        per_class += 1
    chosen: list[Path] = []
    for files in by_class:
        chosen.extend(files[:per_class])
        if len(chosen) >= n:
            break
    return chosen[:n]


def copy_photos(photos: Sequence[Path], dest: Path) -> Path:
    """Copy photos into `dest/<class>/<file>` (a folder that holds exactly them, as a user's photo folder would)."""
    for photo in photos:
        target = dest / photo.parent.name / photo.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photo, target)
    return dest


def class_balanced_rows(labels: np.ndarray, limit: int | None) -> np.ndarray:
    """Rows of a split for `--limit N`: all rows without a limit; else the first ceil(N / classes) (at least 2)
    images of as many whole classes, in label order, as fit in N, so that every query still has a class mate.

    Returns:
        `(M,) int64` row indices, M <= N, in the split's own order.
    """
    labels = np.asarray(labels)
    if limit is None or limit >= len(labels):
        return np.arange(len(labels), dtype=np.int64)
    if limit < 2:
        raise BenchmarkError(f"--limit must be at least 2 (a query needs a class mate), got {limit}")
    classes = np.unique(labels)
    per_class = max(2, math.ceil(limit / len(classes)))
    keep: list[np.ndarray] = []
    taken = 0
    for cls in classes:
        rows = np.flatnonzero(labels == cls)[:per_class]
        if taken + len(rows) > limit:
            break
        keep.append(rows)
        taken += len(rows)
    if not keep:
        raise BenchmarkError(f"--limit {limit} is smaller than one class's {per_class} images")
    return np.sort(np.concatenate(keep))


# --------------------------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------------------------


def percentiles_ms(seconds: Sequence[float], points: Sequence[int] = (50, 95)) -> dict[str, float]:
    """Percentiles (`points`, default p50 and p95), mean and min of durations given in seconds, in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {
        **{f"p{p}_ms": float(np.percentile(ms, p)) for p in points},
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
    }
