"""An index on disk: the faiss file and its JSON sidecar (factory string, search params, and the size and vector
count of the file it describes). This layer writes the plain faiss file and says what the sidecar holds; the caller
makes both writes crash-safe (the library's one atomic write), index file first. Reading both back trusts the index
file over a sidecar that describes anything else."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import faiss

from indexes import ondisk
from indexes.errors import IndexLayerError, faiss_reason
from indexes.ids import native_ids

logger = logging.getLogger(__name__)

#: Version of the JSON sidecar written next to every index file; a newer one is refused on load.
SIDECAR_FORMAT = 1
METRIC = "inner_product"


def write_index_file(index: faiss.Index, path: Path) -> None:
    """Write `index` to `path` as a plain faiss file: not crash-safe by itself, so write to a temporary name and
    rename it into place."""
    try:
        ondisk.sync_lists(index)  # an on-disk index's lists are durable before the file that names them
        faiss.write_index(index, str(path))
    except (OSError, RuntimeError) as exc:
        raise IndexLayerError(f"cannot write index to {path}: {faiss_reason(exc)}") from exc


def sidecar_fields(index: faiss.Index, *, factory: str, search_params: str, file_bytes: int) -> dict[str, Any]:
    """The sidecar describing `index` saved as a file of `file_bytes` bytes: written after the index file, so that a
    crash between the two leaves a sidecar that `read_index` recognises as describing another file."""
    lists = ondisk.lists_file(index)
    return {
        "format": SIDECAR_FORMAT,
        "factory": factory,
        "dim": int(index.d),
        "ntotal": int(index.ntotal),
        "metric": METRIC,
        "search_params": search_params,
        "faiss_version": faiss.__version__,
        "file_bytes": int(file_bytes),
        **({"lists": lists.name} if lists is not None else {}),
    }


def remove_older_files(index: faiss.Index, path: Path) -> None:
    """After `index` was saved to `path` with its sidecar: remove what earlier saves left that it no longer names
    (the lists files of earlier on-disk builds)."""
    ondisk.remove_stale_lists(path, ondisk.lists_file(index))


def read_index(path: Path) -> tuple[faiss.Index, dict[str, Any]]:
    """The index in `path` and its sidecar's fields ({} when the sidecar does not describe this very file)."""
    if not path.is_file():
        raise IndexLayerError(f"no index file at {path}")
    # An on-disk index (its sidecar says so) is read without its lists, which are then mapped read-only from the
    # index file's folder; any other index is read whole.
    flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if _names_lists(sidecar_path(path)) else 0
    try:
        index = faiss.read_index(str(path), flags)
        ondisk.open_lists(index, path.parent)
    except (RuntimeError, MemoryError, ValueError) as exc:
        raise IndexLayerError(
            f"cannot read index file {path} (corrupt or not a faiss index): {faiss_reason(exc)}"
        ) from exc
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise IndexLayerError(f"index file {path} does not use the inner-product metric")
    native_ids(index, str(path))  # refuse unusable layouts with the file's name in the message
    meta = _read_sidecar(sidecar_path(path), dim=int(index.d), ntotal=int(index.ntotal), file_bytes=path.stat().st_size)
    return index, meta


def _names_lists(sidecar: Path) -> bool:
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and bool(meta.get("lists"))


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _read_sidecar(path: Path, *, dim: int, ntotal: int, file_bytes: int) -> dict[str, Any]:
    """The sidecar's fields, or {} when it is missing, unreadable or describes another index or another state of this
    one (warned)."""
    if not path.is_file():
        logger.warning("no sidecar %s: factory string and search params unknown", path)
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        logger.warning("unreadable sidecar %s ignored: %s", path, exc)
        return {}
    if not isinstance(meta, dict):
        logger.warning("sidecar %s ignored: not a JSON object", path)
        return {}
    fmt = meta.get("format")
    if isinstance(fmt, int) and fmt > SIDECAR_FORMAT:
        raise IndexLayerError(
            f"{path} has sidecar format {fmt}, newer than this code reads ({SIDECAR_FORMAT}); upgrade simsearch"
        )
    if meta.get("dim") != dim or meta.get("metric") != METRIC:
        logger.warning(
            "sidecar %s ignored: it describes another index (dim %s, metric %s)",
            path,
            meta.get("dim"),
            meta.get("metric"),
        )
        return {}
    # Sidecars written before `file_bytes` was kept are checked by their vector count alone.
    if meta.get("ntotal") != ntotal or meta.get("file_bytes", file_bytes) != file_bytes:
        logger.warning(
            "sidecar %s ignored: it describes an earlier save of the index (%s vectors, %s bytes; the file has %d, "
            "%d): factory string and search params unknown",
            path,
            meta.get("ntotal"),
            meta.get("file_bytes", "?"),
            ntotal,
            file_bytes,
        )
        return {}
    return meta
