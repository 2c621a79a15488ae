"""The one index builder: a faiss factory string (inner product) made into an index that VectorIndex can hold, with
the build settings factory strings cannot express; and the timed train-and-add build that the tuner and the search
benchmark measure, which goes through the same builder so that what they measure is what the engine builds.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import faiss
import numpy as np

from indexes.errors import IndexLayerError, faiss_reason
from indexes.factory import HNSW_EF_CONSTRUCTION, OPQ_ITERATIONS

IP = faiss.METRIC_INNER_PRODUCT
_CHILD_ATTRS = ("index", "base_index", "refine_index", "storage", "quantizer")


def new_index(
    d: int, factory: str, *, with_ids: bool = True, opq_iterations: int = OPQ_ITERATIONS, check: bool = True
) -> Any:
    """An empty inner-product index of dimension `d` from a faiss factory string (kept verbatim).

    Args:
        with_ids: wrap it in IndexIDMap2 unless it maps ids itself (an IDMap, or an IVF under transforms only).
        opq_iterations: OPQ rotation training iterations (faiss's default of 50 took minutes at d=1280 here).
        check: refuse what VectorIndex cannot hold (below); False builds any inner-product index, for measuring.

    Raises:
        IndexLayerError: a factory string faiss cannot parse (with its reason); with `check`, one whose index would
            not give cosine scores with stable ids (another metric, an IDMap inside a transform, a centring or
            shrinking stage).
    """
    try:
        raw = faiss.index_factory(int(d), factory, IP)
    except RuntimeError as exc:
        raise IndexLayerError(f"bad index factory string {factory!r}: {faiss_reason(exc)}") from exc
    if check:
        _check_usable(raw, factory)
    apply_build_settings(raw, opq_iterations=opq_iterations)
    return wrapped(raw) if with_ids else raw


def _check_usable(raw: Any, factory: str) -> None:
    if raw.metric_type != IP:
        raise IndexLayerError(f"index factory {factory!r} does not support the inner-product metric")
    if not isinstance(raw, faiss.IndexIDMap) and ivf_below_transforms(raw) is None and "IDMap" in factory:
        raise IndexLayerError(f"index factory {factory!r}: IDMap must wrap the whole index (put it first)")
    problem = transform_problem(raw)
    if problem:
        raise IndexLayerError(f"index factory {factory!r}: {problem}; use OPQ or RR at full dimension to rotate")


def apply_build_settings(index: faiss.Index, *, opq_iterations: int = OPQ_ITERATIONS) -> None:
    """Build settings that factory strings cannot express, for a fresh index and every index inside it."""
    for node in walk(index):
        if isinstance(node, faiss.IndexHNSW):
            node.hnsw.efConstruction = HNSW_EF_CONSTRUCTION  # see factory.py
        if isinstance(node, faiss.IndexIVFPQ):
            # faiss turns on polysemous training for 8-bit PQ: 80 s on 8.7k x 1280 here, for a code reordering that
            # only its Hamming pre-filter uses, and that filter is off (polysemous_ht = 0).
            cast(Any, node).do_polysemous_training = False
        if isinstance(node, faiss.IndexPreTransform):
            for transform in transforms(node):
                if isinstance(transform, faiss.OPQMatrix):
                    transform.niter = opq_iterations  # see factory.py


@dataclass
class BuiltIndex:
    """A faiss index built by `build_index`, with its training and adding times in seconds."""

    index: Any
    factory: str
    train_s: float
    add_s: float

    @property
    def build_s(self) -> float:
        return self.train_s + self.add_s


def build_index(
    factory: str,
    d: int,
    train: np.ndarray | None,
    chunks: np.ndarray | Iterable[np.ndarray],
    *,
    with_ids: bool = True,
    opq_iterations: int = OPQ_ITERATIONS,
    centroids: np.ndarray | None = None,
) -> BuiltIndex:
    """Build `factory` with `new_index` (any inner-product index, even one VectorIndex refuses, so that it can be
    measured), train it and add vectors, timing both steps.

    Args:
        factory: faiss factory string.
        d: dimension.
        train: (T, d) float32 training vectors for IVF/PQ/OPQ (ignored by indexes that need none).
        chunks: (N, d) float32 array, or an iterable of such arrays added in turn (so a caller never has to hold
            a whole data set twice: once as numpy, once inside the index).
        with_ids: wrap non-IVF indexes in IndexIDMap2 with ids 0..N-1, as VectorIndex stores them.
        opq_iterations: OPQ rotation training iterations.
        centroids: (nlist, d) coarse centroids of an earlier IVF build on the same data (see `coarse_centroids`):
            an IVF without a transform in front then skips its k-means and trains only its codes. A benchmark
            comparing IVF variants at one nlist so trains the k-means once instead of once per variant.
    """
    index = new_index(d, factory, with_ids=with_ids, opq_iterations=opq_iterations, check=False)
    ivf = _plain_ivf(index)
    if centroids is not None and ivf is not None and ivf.nlist == len(centroids):
        ivf.quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))  # faiss then skips the k-means
    mapped = isinstance(index, faiss.IndexIDMap)
    t0 = time.perf_counter()
    if not index.is_trained:
        if train is None:
            raise IndexLayerError(f"{factory!r} needs training vectors")
        index.train(np.ascontiguousarray(train, dtype=np.float32))
    t1 = time.perf_counter()
    start = 0
    for chunk in [chunks] if isinstance(chunks, np.ndarray) else chunks:
        x = np.ascontiguousarray(chunk, dtype=np.float32)
        if mapped:
            index.add_with_ids(x, np.arange(start, start + len(x), dtype=np.int64))
        else:
            index.add(x)
        start += len(x)
    t2 = time.perf_counter()
    return BuiltIndex(index=index, factory=factory, train_s=t1 - t0, add_s=t2 - t1)


def coarse_centroids(index: Any) -> np.ndarray | None:
    """(nlist, d) centroids of an IVF index with no transform in front (None otherwise), for `build_index`."""
    ivf = _plain_ivf(index)
    if ivf is not None and ivf.quantizer.ntotal == ivf.nlist:
        return np.asarray(ivf.quantizer.reconstruct_n(0, ivf.nlist), dtype=np.float32)
    return None


# ---------------------------------------------------------------------------------------------------- the index tree


def min_training_vectors(index: faiss.Index) -> int:
    """faiss's hard floor for training `index`: nlist points for IVF k-means, 2**nbits per PQ sub-quantizer."""
    need = 1
    for node in walk(index):
        if isinstance(node, faiss.IndexIVF):
            need = max(need, int(node.nlist))
        pq = getattr(node, "pq", None)
        if pq is not None and hasattr(pq, "ksub"):
            need = max(need, int(pq.ksub))
    return need


def walk(index: faiss.Index) -> Iterator[faiss.Index]:
    """The index and every sub-index (wrapped index, HNSW storage, IVF quantizer, refine parts), downcast."""
    stack = [faiss.downcast_index(index)]
    while stack:
        node = stack.pop()
        yield node
        for attr in _CHILD_ATTRS:
            child = getattr(node, attr, None)
            if isinstance(child, faiss.Index):
                stack.append(faiss.downcast_index(child))


def transforms(index: faiss.IndexPreTransform) -> list[Any]:
    """The vector transforms of a pre-transform chain, downcast."""
    chain: Any = index.chain  # a SWIG vector; faiss's stubs call it a list
    return [faiss.downcast_VectorTransform(chain.at(i)) for i in range(chain.size())]


def ivf_below_transforms(index: faiss.Index) -> faiss.IndexIVF | None:
    """The IVF index reached through IndexPreTransform wrappers only, if any: such an index maps ids itself."""
    node = faiss.downcast_index(index)
    while isinstance(node, faiss.IndexPreTransform):
        node = faiss.downcast_index(node.index)
    return node if isinstance(node, faiss.IndexIVF) else None


def wrapped(index: Any) -> Any:
    """`index` in an IndexIDMap2 unless it maps ids itself (an IDMap, or an IVF under transforms only)."""
    if isinstance(index, faiss.IndexIDMap) or ivf_below_transforms(index) is not None:
        return index
    return faiss.IndexIDMap2(index)  # the wrapper keeps a Python reference to the inner index


def transform_problem(index: Any) -> str | None:
    """Why a pre-transform of `index` (wrapped in IDMap or not) would make scores other than cosines, or None.

    faiss's PCA and ITQ subtract the data mean, which changes every inner product (a vector no longer scores 1
    against itself); a transform to fewer dimensions drops part of every vector. OPQ and RR at full dimension only
    rotate, which keeps inner products.
    """
    while isinstance(index, faiss.IndexIDMap):
        index = faiss.downcast_index(index.index)
    if not isinstance(index, faiss.IndexPreTransform):
        return None
    for transform in transforms(index):
        if isinstance(transform, faiss.PCAMatrix | faiss.ITQTransform | faiss.ITQMatrix):
            kind = "PCA" if isinstance(transform, faiss.PCAMatrix) else "ITQ"
            return f"a {kind} stage centres the vectors, which breaks cosine scores"
        if transform.d_out < transform.d_in:
            return f"a stage maps {transform.d_in} to {transform.d_out} dimensions, which breaks cosine scores"
    return None


def _plain_ivf(index: Any) -> Any:
    """The IVF of an index working in the input space (itself, or below an id map and/or a refine stage); None behind
    a transform."""
    node = index
    if isinstance(node, faiss.IndexIDMap | faiss.IndexIDMap2):
        node = faiss.downcast_index(node.index)
    if isinstance(node, faiss.IndexRefine):
        node = faiss.downcast_index(node.base_index)
    return node if isinstance(node, faiss.IndexIVF) else None
