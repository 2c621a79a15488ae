"""Where searches run: a CPU master index takes every change and every save; with a GPU, searches run on a lazily
made GPU copy of it that is dropped on each change (faiss-cpu builds and machines without CUDA stay on the CPU)."""

from __future__ import annotations

import logging
from typing import Any

import faiss

from indexes.errors import IndexLayerError, faiss_reason

logger = logging.getLogger(__name__)

#: faiss GPU k-selection handles k <= 2048; larger k is searched on the CPU master instead.
GPU_MAX_K = 2048


def gpu_count() -> int:
    """Number of GPUs faiss can use: 0 for a faiss-cpu build, a machine without CUDA, or any failure to ask."""
    if not hasattr(faiss, "StandardGpuResources"):
        return 0
    try:
        return int(faiss.get_num_gpus())
    except Exception as exc:  # a broken CUDA setup must read as "no GPU", never as a crash at import or create
        logger.debug("faiss.get_num_gpus() failed, assuming no GPU: %s", exc)
        return 0


def resolve_use_gpu(use_gpu: bool | None) -> bool:
    """None: a GPU when faiss sees one; True: one is required; False: CPU only."""
    if use_gpu is None:
        return gpu_count() > 0
    if use_gpu and gpu_count() == 0:
        raise IndexLayerError("use_gpu=True but faiss sees no GPU (faiss-cpu build, or no CUDA device)")
    return bool(use_gpu)


def gpu_capable(index: faiss.Index) -> bool:
    """Whether faiss's GPU cloner has a GPU version of the core index (through IDMap/PreTransform wrappers)."""
    node = faiss.downcast_index(index)
    while isinstance(node, (faiss.IndexIDMap, faiss.IndexPreTransform)):
        node = faiss.downcast_index(node.index)
    return isinstance(node, (faiss.IndexFlat, faiss.IndexIVFFlat, faiss.IndexIVFPQ, faiss.IndexIVFScalarQuantizer))


class GpuPlacement:
    """The GPU copy of one CPU master index, when wanted and possible. Not thread-safe (nor is VectorIndex)."""

    def __init__(self, master: faiss.Index, factory: str, use_gpu: bool | None) -> None:
        self.wanted = resolve_use_gpu(use_gpu)
        self.refused = self.wanted and not gpu_capable(master)
        if self.refused:
            logger.debug("faiss has no GPU version of %r; it stays on the CPU", factory)
        self._factory = factory
        self._copy: faiss.Index | None = None
        self._res: Any = None

    @property
    def on_gpu(self) -> bool:
        """Whether searches run on a GPU copy (a GPU is wanted and faiss can put this index type on one)."""
        return self.wanted and not self.refused

    def drop(self) -> None:
        """Forget the copy after a change of the master; the next search clones it again."""
        self._copy = None

    def apply_params(self, params: str) -> None:
        """Give an existing copy new search params; a copy that refuses them is dropped (the master has them)."""
        if self._copy is not None and not _apply_gpu_params(self._copy, params):
            self._copy = None

    def index_for_search(self, master: faiss.Index, k: int, params: str) -> faiss.Index:
        """The GPU copy when wanted and possible (made lazily, with `params`), else the CPU master."""
        if not self.on_gpu or k > GPU_MAX_K:
            return master
        if self._copy is None:
            try:
                self._copy = self._clone(master, params)
            except (RuntimeError, AttributeError) as exc:
                logger.warning(
                    "could not put %r on the GPU, searching on the CPU: %s", self._factory, faiss_reason(exc)
                )
                self.refused = True
                return master
        return self._copy

    def _clone(self, master: faiss.Index, params: str) -> faiss.Index:
        if gpu_count() > 1:
            gpu_index = faiss.index_cpu_to_all_gpus(master)  # replicas; faiss keeps their resources alive
        else:
            if self._res is None:
                self._res = faiss.StandardGpuResources()
            gpu_index = faiss.index_cpu_to_gpu(self._res, 0, master)
        if params:
            _apply_gpu_params(gpu_index, params)
        logger.debug("cloned %r (%d vectors) to the GPU", self._factory, master.ntotal)
        return gpu_index


def _apply_gpu_params(gpu_index: faiss.Index, params: str) -> bool:
    space_cls = getattr(faiss, "GpuParameterSpace", faiss.ParameterSpace)
    try:
        space: Any = space_cls()
        space.set_index_parameters(gpu_index, params)
    except RuntimeError as exc:
        logger.debug("search params %r not applied to the GPU copy: %s", params, faiss_reason(exc))
        return False
    return True
