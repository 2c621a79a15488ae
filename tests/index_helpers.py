"""What the vector-index tests share: seeded unit and clustered vectors, sparse ids, and the mark of GPU-only tests."""

from __future__ import annotations

import numpy as np
import pytest

from indexes import gpu_count

needs_gpu = pytest.mark.skipif(gpu_count() == 0, reason="faiss sees no GPU (faiss-cpu build or no CUDA device)")


def unit_vectors(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(rng: np.random.Generator, n: int, d: int, n_clusters: int = 50, noise: float = 1.0) -> np.ndarray:
    """(n, d) float32 unit vectors around random centres: the structure IVF and HNSW are built for."""
    centres = rng.standard_normal((n_clusters, d)).astype(np.float32)
    x = centres[rng.integers(0, n_clusters, n)] + noise * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def sparse_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """Distinct, non-contiguous int64 ids, so a test notices positions leaking out as ids."""
    return rng.choice(10**12, size=n, replace=False).astype(np.int64)
