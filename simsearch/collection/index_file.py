"""The collection's index on disk: the faiss file, then its sidecar, each through the library's one atomic write."""

from __future__ import annotations

from pathlib import Path

from indexes import IndexLayerError, VectorIndex, estimate_memory, sidecar_path
from simsearch.errors import StorageError
from simsearch.fsio import atomic_path, atomic_write_json, ensure_free_space, refused_write


def expected_file_bytes(index: VectorIndex) -> int:
    """About how many bytes `index` serializes to, known before it is written (0 when it cannot be told: an index of
    unknown type, or one whose lists live in their own file, written when it was built)."""
    if index.on_disk or not index.factory:
        return 0
    try:
        return estimate_memory(index.factory, index.ntotal, index.dim)
    except IndexLayerError:
        return 0


def save_index(index: VectorIndex, path: Path) -> None:
    """Write `index` to `path` and its sidecar to `<path>.json`, each crash-safely; the sidecar comes second and
    records the index file's size, so a crash in between leaves the new index beside the previous sidecar, which
    `VectorIndex.load` recognises as stale.

    A disk without room for the index is refused before anything is written, and a write that the disk refuses
    halfway leaves the previous files in place; either way one StorageError line names the cause and the folder.

    Raises:
        StorageError: no space left (or a quota, an I/O error, a read-only file system) in the folder.
        IndexLayerError: the folder does not exist or a write fails otherwise.
    """
    folder = path.parent
    if not folder.is_dir():
        raise IndexLayerError(f"cannot save index to {path}: folder {folder} does not exist")
    ensure_free_space(folder, expected_file_bytes(index))
    try:
        with atomic_path(path) as tmp:
            index.write_to(tmp)
            # faiss only prints an error of the file's last flush (at close) and returns: a disk that filled up
            # meanwhile may have lost the file's tail, so the file is not trusted then.
            ensure_free_space(folder, 0)
        atomic_write_json(sidecar_path(path), index.sidecar(file_bytes=path.stat().st_size))
    except StorageError:
        raise
    except (OSError, IndexLayerError) as exc:
        refused = refused_write(folder, exc)
        if refused is not None:
            raise refused from exc
        if isinstance(exc, IndexLayerError):
            raise
        raise IndexLayerError(f"cannot save index to {path}: {exc}") from exc
    index.remove_older_files(path)
