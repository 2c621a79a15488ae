"""The model behind a server's forward workers: the collection's ONNX export, run by ONNX Runtime, where it has one
that applies (see `simsearch.collection.query_model`), else the torch model. With the export, torch is never
imported: the server is ready sooner and uses less memory.

An engine turns an uploaded image (decoded, upright RGB) into what its forward pass takes, and a list of those into
vectors; the server's batcher calls `forward` from several threads at once, one pass per core on a CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from simsearch.cpus import usable_cores

if TYPE_CHECKING:
    from PIL import Image

    from simsearch import Collection

log = logging.getLogger(__name__)

ONNXRUNTIME = "onnxruntime"
TORCH = "torch"


@dataclass(frozen=True)
class Engine:
    """What runs the model: its name ("onnxruntime" or "torch"), the device, the decode size, the eval transform of
    one image and the forward pass of a list of transformed images (`(N, D) float32` rows of unit norm)."""

    name: str
    device: str
    min_side: int
    transform: Callable[[Image.Image], Any]
    forward: Callable[[Sequence[Any]], np.ndarray]
    workers: int


def load_engine(col: Collection, device: str, workers: int | None) -> Engine:
    """The collection's export when it applies on `device`, else its torch model; `workers` passes at once (None:
    one per core on a CPU, each on one thread; one on a GPU)."""
    from simsearch.collection.query_model import export_applies

    if export_applies(device):
        engine = _exported_engine(col, workers)
        if engine is not None:
            return engine
    return _torch_engine(col, workers)


def warm(engine: Engine, col: Collection, batch_sizes: Iterable[int]) -> None:
    """One pass at each batch size (a first pass at a new size sets up kernels), then one index search."""
    from simsearch.collection.searching import warmup_image

    side = max(engine.min_side, 64)
    ready = engine.transform(warmup_image(side))
    vector = None
    for size in sorted({max(1, int(s)) for s in batch_sizes}):
        vector = engine.forward([ready] * size)[0]
    if vector is not None and len(col) and col.index.is_trained:
        col.search_vectors(vector, 1)


def _exported_engine(col: Collection, workers: int | None) -> Engine | None:
    from simsearch.collection.query_model import recorded_identity
    from simsearch.models.exported import load_exported

    count = workers or usable_cores()
    threads = max(1, usable_cores() // count) if count > 1 else None
    model = load_exported(col.path, recorded_identity(col.manifest.model), threads=threads)
    if model is None:
        return None

    def forward(arrays: Sequence[Any]) -> np.ndarray:
        return model.forward(np.stack(arrays))

    log.info("the model runs through its ONNX export (%d forward worker(s))", count)
    return Engine(ONNXRUNTIME, "cpu", model.min_side, model.transform, forward, count)


def _torch_engine(col: Collection, workers: int | None) -> Engine:
    import torch

    from simsearch.embedding import decode_min_side, forward, transform_for

    embedder = col.embedder
    device = str(next(embedder.parameters()).device)
    gpu = device.startswith("cuda")
    count = workers or (1 if gpu else usable_cores())
    if count > 1 and not gpu:
        # On 2 cores, two passes of 8 images on one thread each gave 94 images/s where one pass on two threads gave
        # 74: a pass split over threads waits at every layer for its slowest thread, and with requests decoding
        # beside it, one of its threads is often descheduled.
        torch.set_num_threads(max(1, usable_cores() // count))

    def run(tensors: Sequence[Any]) -> np.ndarray:
        return forward(embedder, torch.stack(list(tensors)))

    log.info("the model runs on torch (%s, %d forward worker(s))", device, count)
    return Engine(TORCH, device, decode_min_side(embedder.data_config), transform_for(embedder), run, count)
