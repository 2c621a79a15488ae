"""The collection's index on disk: the faiss file, then its sidecar, each through the library's one atomic write."""

from __future__ import annotations

from pathlib import Path

from indexes import IndexLayerError, VectorIndex, sidecar_path
from simsearch.fsio import atomic_path, atomic_write_json


def save_index(index: VectorIndex, path: Path) -> None:
    """Write `index` to `path` and its sidecar to `<path>.json`, each crash-safely; the sidecar comes second and
    records the index file's size, so a crash in between leaves the new index beside the previous sidecar, which
    `VectorIndex.load` recognises as stale.

    Raises:
        IndexLayerError: the folder does not exist or a write fails.
    """
    if not path.parent.is_dir():
        raise IndexLayerError(f"cannot save index to {path}: folder {path.parent} does not exist")
    try:
        with atomic_path(path) as tmp:
            index.write_to(tmp)
        atomic_write_json(sidecar_path(path), index.sidecar(file_bytes=path.stat().st_size))
    except OSError as exc:
        raise IndexLayerError(f"cannot save index to {path}: {exc}") from exc
    index.remove_older_files(path)
