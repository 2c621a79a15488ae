"""When faiss computes exhaustive distances (Flat scans, IVF coarse assignment) with BLAS: set per search, not at
import, because faiss keeps the switch in a process-wide variable that belongs to the application.

faiss 1.15 uses BLAS only when n_queries * dim reaches `distance_compute_blas_threshold` (default 128_000, i.e. ~1000
queries at D=128). Below it a scalar path ran 2-9x slower per query for batches of 8-256 on a 2-core CPU (BLAS won
from ~8 queries at D=128 and ~4 at D=1280, lost for 2 queries). BLAS_THRESHOLD = 4096 switches to BLAS from 32
queries at D=128, 8 at D=512 and 4 at D=1280, and leaves single queries on the scalar path.

Threads are deliberately left alone: for single queries one faiss thread measured faster than two here, but
faiss.omp_set_num_threads is process-wide and belongs to the application or the benchmark, not this library.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import faiss

BLAS_THRESHOLD = 4096

_lock = threading.Lock()
_active = 0  # searches inside `blas_from_small_batches` right now (faiss releases the GIL while it searches)
_saved: int | None = None  # the caller's value, restored when the last of them leaves


@contextlib.contextmanager
def blas_from_small_batches() -> Iterator[None]:
    """Lower faiss's BLAS threshold to BLAS_THRESHOLD for the searches inside, then restore the caller's value.

    Only ever lowered, so a caller that set it lower keeps its value. Nested and concurrent uses (several threads
    searching several indexes) share one lowering: the first to enter saves the value, the last to leave restores it,
    unless something else changed it in between (that value is then left alone). A thread searching outside this
    block meanwhile sees the lowered value too: its results are the same, only computed another way.
    """
    global _active, _saved
    with _lock:
        if _active == 0:
            _saved = int(faiss.cvar.distance_compute_blas_threshold)
            if _saved > BLAS_THRESHOLD:
                faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0 and _saved is not None:
                if _saved > BLAS_THRESHOLD and faiss.cvar.distance_compute_blas_threshold == BLAS_THRESHOLD:
                    faiss.cvar.distance_compute_blas_threshold = _saved
                _saved = None
