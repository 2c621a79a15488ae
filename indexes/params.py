"""Search-parameter strings: faiss ParameterSpace strings ("nprobe=16", "efSearch=64") for a factory's defaults,
the sweeps the tuner and the full-size check walk, and applying a string to a bare faiss index.

The sweeps are our own lists rather than `faiss.ParameterSpace.initialize` ranges: faiss proposes independent
ranges whose Cartesian product it explores (nprobe only up to nlist/2, quantizer_efSearch unrelated to nprobe, a
Hamming threshold for PQ), while an HNSW coarse quantizer must widen its beam with nprobe (see `ivf_params`) and the
tuner walks one knob from cheap to dear and stops at the first setting that reaches its recall target. faiss's
`ParameterSpace.explore` times query batches on all threads against its own recall criteria; the tuner needs
single-query times and the tie-aware recall of `indexes.evaluation`. Strings are applied through ParameterSpace.
"""

from __future__ import annotations

import math
import re
from typing import Any

import faiss

from indexes.factory import factory_nlist

#: efSearch default: recall@10 >= 0.9 on 100k x 128 clustered vectors with efConstruction=80.
HNSW_EF_SEARCH = 64
#: Candidates refined with SQ8 codes re-rank this many times k PQ-fast-scan hits.
REFINE_K_FACTOR = 8
EF_SEARCH_SWEEP = (16, 32, 64, 128, 256, 512)
NPROBE_SWEEP = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

_PROBE = re.compile(r"(?:nprobe|efSearch)=(\d+)")


def params_probe(params: str) -> int | None:
    """The knob of a search-parameter string, nprobe or efSearch ("nprobe=16,quantizer_efSearch=64" -> 16)."""
    match = _PROBE.search(params)
    return int(match.group(1)) if match else None


def default_search_params(factory: str) -> str:
    """faiss ParameterSpace string that gives a factory's index a sensible recall/speed trade-off.

    IVF: nprobe = round(sqrt(nlist)) (e.g. 32 of 1024 lists); HNSW: efSearch=HNSW_EF_SEARCH; anything else
    (Flat, PQ, ...) has nothing to tune and gets "".
    """
    nlist = factory_nlist(factory)
    if nlist is not None:
        return ivf_params(factory, max(1, min(nlist, round(math.sqrt(nlist)))))
    if "HNSW" in factory:
        return f"efSearch={HNSW_EF_SEARCH}"
    return ""


def ivf_params(factory: str, nprobe: int) -> str:
    """The search params that probe `nprobe` lists of an IVF `factory`. An HNSW coarse quantizer ("IVF4096_HNSW32")
    must return nprobe centroids, so its beam is widened with them: quantizer_efSearch = max(64, 2 * nprobe)."""
    if re.search(r"IVF\d+_HNSW", factory):
        return f"nprobe={nprobe},quantizer_efSearch={max(HNSW_EF_SEARCH, 2 * nprobe)}"
    return f"nprobe={nprobe}"


def param_sweep(factory: str, nlist: int | None = None) -> list[str]:
    """Search-parameter strings to try for `factory`, cheapest (lowest recall) first; [""] when nothing to tune."""
    own = factory_nlist(factory)
    if own is None:
        return [f"efSearch={ef}" for ef in EF_SEARCH_SWEEP] if "HNSW" in factory else [""]
    lists = nlist or own
    probes = [p for p in NPROBE_SWEEP if p < lists] + [lists]
    extra = f",k_factor_rf={REFINE_K_FACTOR}" if "Refine" in factory or "RFlat" in factory else ""
    return [ivf_params(factory, p) + extra for p in probes]


def sweep_from(factory: str, start_params: str) -> list[str]:
    """The factory's parameter sweep from `start_params` upwards (its first value >= the start's, then the rest)."""
    sweep = param_sweep(factory)
    if start_params in sweep:
        return sweep[sweep.index(start_params) :]
    first = params_probe(start_params)
    if first is None:
        return [start_params] if start_params and sweep == [""] else sweep
    rest = [p for p in sweep if (params_probe(p) or 0) > first]
    return [start_params, *rest]


def set_params(index: Any, params: str) -> None:
    """Apply a faiss ParameterSpace string ("nprobe=16", "efSearch=64,...") to a bare faiss index; "" does nothing."""
    if params:
        space: Any = faiss.ParameterSpace()  # faiss's stubs type the string argument as int
        space.set_index_parameters(index, params)
