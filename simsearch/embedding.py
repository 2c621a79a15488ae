"""Image files in, C-contiguous L2-normalised ``(N, D) float32`` vectors out, in batches for indexing.

Three layouts (`embed_files`), chosen by measurement on the embed suite:
- lanes, the default on a CPU of 2 cores for jobs of a few hundred images or more: one worker process per core
  decodes its batch and runs the model on it on one thread, so no layer of the forward waits for a core that is
  decoding. Measured on 1,000 Caltech-101 photos: 89-93 images/s against 77-80 for decoding between the batches of
  a two-thread forward (the model alone: 117-125); on 256 photos, where starting the lanes weighs more, 75 against 80.
  Two batches are in the model at once, each lane keeping its memory for the next: peak memory of the process and
  its lanes 3.1 GiB on 1,000 photos at batch 32, against 2.0 GiB decoding here (256 photos);
- decoding in DataLoader worker processes beside the forward in this process (the default with more cores or a GPU);
- everything in this process, one step after the other (`workers=0`).
The forward pass itself, the eval transform and the decoding size are `simsearch.models.inputs`', shared with
`Embedder.embed`.
"""

from __future__ import annotations

import ctypes
import logging
import math
import multiprocessing
import signal
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from simsearch.allocator import freed_memory_kept, keep_freed_memory, return_freed_memory
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
_LANES_FROM_BATCHES = 6  # batches per lane, at least, for the default layout to start lanes
_FORK = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None


def default_workers(on_cpu: bool = True) -> int:
    """Decoding processes beside a forward in this process: half the cores, since the forward wants the other half;
    none on a CPU of 2 cores or fewer, where long jobs run lanes (`default_layout`) and short ones decode here."""
    cores = usable_cores()
    return 0 if on_cpu and cores <= 2 else max(1, cores // 2)


def default_lanes(on_cpu: bool = True) -> int:
    """Worker processes that each decode and run the model on one thread: one per core on a CPU of 2 cores (see
    the module's measurements), where processes can be forked (a lane inherits the model rather than unpickling
    it); none elsewhere: one core has nothing to overlap, and with more, decoding workers feed a forward here."""
    return 2 if on_cpu and usable_cores() == 2 and _FORK is not None else 0


def default_layout(images: int, batch_size: int, on_cpu: bool = True) -> tuple[int, int]:
    """`(lanes, workers)` for a job of `images` when the caller chose neither: lanes where `default_lanes` has them
    and the job has at least 6 batches a lane (starting lanes, a process and a first pass each, costs about a
    second: on 8 batches of 32 they were 6% slower than decoding here, on 31 batches 20% faster)."""
    lanes = default_lanes(on_cpu)
    if lanes and math.ceil(images / batch_size) >= _LANES_FROM_BATCHES * lanes:
        return lanes, 0
    return 0, default_workers(on_cpu)


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
    lanes: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    thumbnails: bool = True,
) -> Iterator[EmbeddedBatch]:
    """Embed image files in batches.

    Args:
        workers: processes that decode for a forward in this process (0: decode here too).
        lanes: processes that each decode and run the model on one thread, for a model on the CPU where processes
            can be forked (elsewhere the job takes the `workers` layout); a positive number leaves `workers` unused.
            With neither given: `default_layout`. A job of one batch starts no lanes: starting a process and
            warming a model in it would take longer than the batch.
    """
    if not paths:
        return
    device = next(embedder.parameters()).device.type
    on_cuda, on_cpu = device == "cuda", device == "cpu"
    batches = math.ceil(len(paths) / batch_size)
    if lanes is None and workers is None:
        lanes, workers = default_layout(len(paths), batch_size, on_cpu=on_cpu)
    dataset = _ImageFiles(paths, transform_for(embedder), decode_min_side(embedder.data_config), max_pixels, thumbnails)
    if lanes and batches > 1 and on_cpu and _FORK is not None:
        yield from _embed_in_lanes(embedder, dataset, batch_size, min(lanes, batches))
        return
    workers = default_workers(on_cpu=on_cpu) if workers is None else workers
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=min(workers, batches),
        collate_fn=_collate,
        worker_init_fn=_worker_init if workers else None,
        pin_memory=on_cuda,
        prefetch_factor=4 if workers else None,
    )
    with freed_memory_kept():
        for batch in loader:
            yield _forwarded(embedder, batch)


def _forwarded(embedder: Embedder, batch: _Collated) -> EmbeddedBatch:
    vectors = (
        forward(embedder, batch.tensors)
        if batch.tensors is not None
        else np.empty((0, embedder.embed_dim), dtype=np.float32)
    )
    return EmbeddedBatch(batch.positions, vectors, batch.thumbnails, batch.failures)


class _ForwardHere:
    """A lane's collate step: the decoded batch through the model, in the worker, so only vectors and thumbnails
    cross back (a few hundred KiB a batch, not its tensors)."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def __call__(self, items: list[Decoded]) -> EmbeddedBatch:
        return _forwarded(self.embedder, _collate(items))


def _lane_init(worker: int) -> None:
    _worker_init(worker)
    # A lane does nothing else until it ends: its freed activations stay mapped for its next batch.
    keep_freed_memory()


def _embed_in_lanes(embedder: Embedder, dataset: _ImageFiles, batch_size: int, lanes: int) -> Iterator[EmbeddedBatch]:
    # The lanes inherit this process's heap: free pages in it would be copied one by one as a lane reuses them.
    return_freed_memory()
    loader = DataLoader(
        dataset,
        batch_sampler=_ramped(len(dataset), batch_size, lanes),
        num_workers=lanes,
        collate_fn=_ForwardHere(embedder),
        worker_init_fn=_lane_init,
        multiprocessing_context=_FORK,
        prefetch_factor=2,
    )
    yield from loader


def _ramped(n: int, batch_size: int, lanes: int) -> list[list[int]]:
    """Batches of the `n` positions for `lanes` lanes, dealt round-robin (a DataLoader hands batch i to worker
    i % lanes): each lane gets an equal share, so all end together rather than one running a last batch alone, and
    each lane's first batch is a quarter batch, so its first vectors come after one short pass (its warm-up
    included) while the other lanes are still starting."""
    plans = []
    for lane in range(lanes):
        share = n // lanes + (1 if lane < n % lanes else 0)
        sizes = [min(share, max(1, batch_size // 4))] if share else []
        left = share - sum(sizes)
        sizes += [batch_size] * (left // batch_size) + ([left % batch_size] if left % batch_size else [])
        plans.append(sizes)
    batches, start = [], 0
    for round_ in range(max(map(len, plans), default=0)):
        for sizes in plans:
            if round_ < len(sizes):
                batches.append(list(range(start, start + sizes[round_])))
                start += sizes[round_]
    return batches
