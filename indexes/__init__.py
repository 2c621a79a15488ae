"""Vector-index layer: FAISS indexes over L2-normalised float32 vectors with int64 ids (numpy + faiss only).

Modules, one concern each: `vector_index` (the VectorIndex wrapper), `checks` (what callers hand it), `building`
(the one index builder), `ids`, `placement` (GPU/CPU), `persistence` (file and sidecar), `blas` (faiss's BLAS
switch, set per search), `params` (search-parameter strings and sweeps), `factory` (defaults by size), `memory`
(sizes and estimates), `evaluation` (exact k-NN and recall), `tuning` (the measured choice) and `calibration` (the
full-size check).
"""

from indexes.calibration import Calibration, calibrate
from indexes.errors import IndexLayerError
from indexes.evaluation import exact_neighbors_chunked, exact_scorer
from indexes.factory import choose_factory
from indexes.memory import estimate_memory, format_bytes, parse_memory
from indexes.params import default_search_params
from indexes.persistence import sidecar_path
from indexes.placement import gpu_count
from indexes.tuning import IndexChoice, choose_index
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
    "format_bytes",
    "gpu_count",
    "parse_memory",
    "sidecar_path",
]
