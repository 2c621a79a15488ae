"""Image files in, C-contiguous L2-normalised ``(N, D) float32`` vectors out, in batches for indexing.

Decoding runs in DataLoader worker processes so that it overlaps the forward pass in the main process, except on a
CPU of 2 cores, where the forward wants both and decoding goes between its batches (`default_workers`). The forward
pass itself, the eval transform and the decoding size are `simsearch.models.inputs`', shared with `Embedder.embed`.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import platform
import signal
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from simsearch.cpus import usable_cores
from simsearch.errors import ImageError
from simsearch.images import DEFAULT_MAX_PIXELS, load_image, make_thumbnail
from simsearch.models import Embedder

# decode_min_side, embed_images and forward stay importable from here: the collection, the server and the
# benchmarks embed through these names.
from simsearch.models.inputs import (  # noqa: F401
    Transform,
    decode_min_side,
    embed_images,
    forward,
    transform_for,
)

log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# mallopt parameters and glibc's defaults for them, from <malloc.h>.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_GLIBC_DEFAULTS = {_M_TRIM_THRESHOLD: 128 * 1024, _M_MMAP_MAX: 65536}
_MALLOC_ENV = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def default_workers(on_cpu: bool = True) -> int:
    """Decoding workers: half the cores, since the forward pass in the main process wants the other half; none for a
    forward on a CPU of 2 cores or fewer.

    There the forward runs on every core, and a decoding process takes one from it: its threads wait at every layer
    for the one descheduled. Decoding between batches in this process measured faster on 2 cores (embed record:
    0.86 of the bare forward against 0.81 with one decoding process, 0.82 with two; 0.64 against 0.53 on an earlier
    machine)."""
    cores = usable_cores()
    return 0 if on_cpu and cores <= 2 else max(1, cores // 2)


@dataclass
class Decoded:
    """One file made ready for the model: its tensor and thumbnail, or (tensor None) why it could not be read."""

    position: int
    tensor: torch.Tensor | None
    thumbnail: bytes | None
    error: str | None


class _ImageFiles(Dataset):
    """Decodes, transforms and thumbnails one file per item; an unreadable file becomes an error, never an exception,
    so that one bad file cannot stop a DataLoader."""

    def __init__(
        self, paths: Sequence[str | Path], transform: Transform, min_side: int, max_pixels: int, thumbnails: bool
    ) -> None:
        self.paths = list(paths)
        self.transform = transform
        self.min_side = min_side
        self.max_pixels = max_pixels
        self.thumbnails = thumbnails

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, position: int) -> Decoded:
        try:
            image = load_image(self.paths[position], max_pixels=self.max_pixels, min_side=self.min_side)
            thumb = make_thumbnail(image) if self.thumbnails else None
            return Decoded(position, self.transform(image), thumb, None)
        except ImageError as exc:
            return Decoded(position, None, None, str(exc))
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a property of the file, reported not raised
            return Decoded(position, None, None, f"{type(exc).__name__}: {exc}")


def decode_files(
    paths: Sequence[str | Path], transform: Transform, min_side: int, max_pixels: int, *, thumbnails: bool = True
) -> list[Decoded]:
    """Decode, transform and thumbnail files in this process, one by one as a DataLoader worker does: the decoding
    step of an engine that runs elsewhere (`simsearch.scale`)."""
    files = _ImageFiles(paths, transform, min_side, max_pixels, thumbnails)
    return [files[i] for i in range(len(files))]


@dataclass
class _Collated:
    """A batch as it crosses from a decode worker: the images that decoded as one tensor, the others as failures."""

    positions: list[int]
    tensors: torch.Tensor | None  # (len(positions), C, H, W), channels-last
    thumbnails: list[bytes | None]
    failures: list[tuple[int, str]]


def _collate(items: list[Decoded]) -> _Collated:
    """Runs in the decode worker: one tensor per batch crosses to the main process (one shared-memory segment, not
    one per image), already in the layout the forward pass takes, so neither stacking nor re-layout holds up the
    model's thread."""
    good = [item for item in items if item.tensor is not None]
    tensors = None
    if good:
        tensors = torch.stack([item.tensor for item in good])  # type: ignore[misc]
        tensors = tensors.contiguous(memory_format=torch.channels_last)
    return _Collated(
        positions=[item.position for item in good],
        tensors=tensors,
        thumbnails=[item.thumbnail for item in good],
        failures=[(item.position, item.error or "unreadable") for item in items if item.tensor is None],
    )


def _worker_init(_: int) -> None:
    # Each worker decodes one image at a time; torch threads inside workers would only fight the forward pass.
    torch.set_num_threads(1)
    if sys.platform == "linux":
        # If the indexing process is killed (kill -9, the OOM killer), the kernel ends its workers too, rather than
        # leaving orphans that decode for nobody.
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            log.debug("prctl(PR_SET_PDEATHSIG) unavailable; orphaned workers rely on torch's watchdog")


@contextlib.contextmanager
def freed_memory_kept() -> Iterator[None]:
    """While indexing, memory that the forward pass frees stays with the process for the next batch (glibc only).

    glibc hands every allocation above 32 MiB (and, by default, many above 128 KiB) to the kernel with `mmap` and
    back with `munmap` when freed; a batch's activations are many such tensors, so every batch faulted in hundreds
    of MiB of fresh zeroed pages: on 28x28 images the process spent more time in the kernel than in the model.
    Serving all allocations from the heap, and not trimming it, keeps those pages mapped and reused: measured on
    1,000 Fashion-MNIST PNGs, minor page faults 10.5 M -> 0.19 M, system CPU 17 s -> 0.8 s, peak RSS +8%.
    glibc's defaults come back afterwards; a user's own MALLOC_* settings are left alone.
    """
    libc = _glibc()
    if libc is None or any(os.environ.get(name) for name in _MALLOC_ENV):
        yield
        return
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    try:
        yield
    finally:
        for param, value in _GLIBC_DEFAULTS.items():
            libc.mallopt(param, value)


def _glibc() -> ctypes.CDLL | None:
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") else None
    except OSError:
        return None


@dataclass
class EmbeddedBatch:
    """One batch of results; ``positions`` index into the input sequence of paths."""

    positions: list[int]
    vectors: np.ndarray  # (len(positions), D) float32, L2-normalised
    thumbnails: list[bytes | None]
    failures: list[tuple[int, str]]  # (position, reason) of files that could not be decoded


def embed_files(
    embedder: Embedder,
    paths: Sequence[str | Path],
    *,
    batch_size: int = 32,
    workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    thumbnails: bool = True,
) -> Iterator[EmbeddedBatch]:
    """Embed image files in batches, decoding in ``workers`` processes (0 decodes in this process; None:
    `default_workers`)."""
    if not paths:
        return
    on_cuda = next(embedder.parameters()).device.type == "cuda"
    workers = default_workers(on_cpu=not on_cuda) if workers is None else workers
    dataset = _ImageFiles(paths, transform_for(embedder), decode_min_side(embedder.data_config), max_pixels, thumbnails)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=min(workers, math.ceil(len(dataset) / batch_size)),
        collate_fn=_collate,
        worker_init_fn=_worker_init if workers else None,
        pin_memory=on_cuda,
        prefetch_factor=4 if workers else None,
    )
    with freed_memory_kept():
        for batch in loader:
            vectors = (
                forward(embedder, batch.tensors)
                if batch.tensors is not None
                else np.empty((0, embedder.embed_dim), dtype=np.float32)
            )
            yield EmbeddedBatch(batch.positions, vectors, batch.thumbnails, batch.failures)
