"""The work a Ray cluster does for `RayEngine`: the decoding task and the embedding actor of its Ray Data pipeline (or
one actor doing both), and the shard build of an on-disk index. Each runs in a Ray worker process; batches travel as
dicts of numpy columns.

Columns between the stages: ``position`` (int64, index into the run's list of files), ``ok`` (bool), ``pixels``
((n, C, H, W) float32, zeros where not ok), ``thumb`` (JPEG bytes, b"" where not ok), ``error`` (str, "" where ok);
the embedding stage replaces ``pixels`` with ``vector`` ((n, D) float32 L2-normalised, zeros where not ok).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from simsearch.embedding import Transform, decode_files, forward
from simsearch.models import Embedder

Batch = dict[str, np.ndarray]


def decode_batch(
    batch: Batch, *, transform: Transform, min_side: int, max_pixels: int, shape: tuple[int, ...]
) -> Batch:
    """Read, decode, transform and thumbnail the files of one batch (a CPU task). A file that cannot be read is a row
    with ``ok`` False and its reason, never an exception: one bad file must not fail the batch."""
    torch.set_num_threads(1)  # one image at a time; threads would only fight the embedding actors for the cores
    items = decode_files(batch["path"].tolist(), transform, min_side, max_pixels)
    n = len(items)
    pixels = np.zeros((n, *shape), dtype=np.float32)
    ok = np.zeros(n, dtype=bool)
    thumbs = np.empty(n, dtype=object)
    errors = np.empty(n, dtype=object)
    for row, item in enumerate(items):
        if item.tensor is not None:
            pixels[row] = item.tensor.numpy()
            ok[row] = True
        thumbs[row] = item.thumbnail or b""
        errors[row] = "" if item.tensor is not None else item.error or "unreadable"
    return {"position": batch["position"], "ok": ok, "pixels": pixels, "thumb": thumbs, "error": errors}


class EmbedActor:
    """One model per actor, loaded once (a Ray Data callable class in an actor pool): embeds the rows that decoded."""

    def __init__(self, model: Embedder, threads: int) -> None:
        import ray

        from simsearch.allocator import keep_freed_memory

        # The actor's process does nothing else: a batch's freed activations stay mapped for the next (as in a lane).
        keep_freed_memory()
        torch.set_num_threads(max(1, threads))
        device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
        self.model = model.to(device).eval()
        self.dim = int(model.embed_dim)

    def __call__(self, batch: Batch) -> Batch:
        ok = np.asarray(batch["ok"], dtype=bool)
        vectors = np.zeros((len(ok), self.dim), dtype=np.float32)
        if ok.any():
            vectors[ok] = forward(self.model, torch.from_numpy(np.ascontiguousarray(batch["pixels"][ok])))
        return {
            "position": batch["position"],
            "ok": ok,
            "vector": vectors,
            "thumb": batch["thumb"],
            "error": batch["error"],
        }


class DecodeEmbedActor(EmbedActor):
    """An embedding actor that decodes its own batches first (`decode_batch`), on the model's core: the layout of the
    local engine's lanes, for nodes of 2 CPUs, where decoding beside a forward on the other core took turns with it
    rather than overlapping it."""

    def __init__(self, model: Embedder, threads: int, **decoding: Any) -> None:
        super().__init__(model, threads)
        self.decoding = decoding

    def __call__(self, batch: Batch) -> Batch:
        return super().__call__(decode_batch(batch, **self.decoding))


def build_shard(trained: Any, ids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Add one shard's vectors to a copy of the trained index; returns that shard serialised (a CPU task)."""
    from indexes.ondisk import fill_shard

    return fill_shard(trained, ids, vectors)
