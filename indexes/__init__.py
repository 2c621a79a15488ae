"""Vector-index layer: FAISS indexes over L2-normalised float32 vectors with int64 ids (numpy + faiss only)."""

from indexes.errors import IndexLayerError
from indexes.factory import choose_factory, default_search_params, gpu_count
from indexes.tuning import (
    Calibration,
    IndexChoice,
    calibrate,
    choose_index,
    estimate_memory,
    exact_neighbors_chunked,
    exact_scorer,
    parse_memory,
)
from indexes.vector_index import VectorIndex

__all__ = [
    "Calibration",
    "IndexChoice",
    "IndexLayerError",
    "VectorIndex",
    "calibrate",
    "choose_factory",
    "choose_index",
    "default_search_params",
    "estimate_memory",
    "exact_neighbors_chunked",
    "exact_scorer",
    "gpu_count",
    "parse_memory",
]
