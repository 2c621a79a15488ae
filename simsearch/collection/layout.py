"""Where each file of a collection folder lives, where the default collection is, and making (or taking back) a new
folder."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from simsearch.errors import CollectionError

COLLECTION_ENV = "SIMSEARCH_COLLECTION"
MANIFEST = "manifest.json"
STORE = "store.lmdb"
VECTORS = "vectors.faiss"
SIDECAR = VECTORS + ".json"  # written beside the index file by collection.index_file.save_index
LOCK = ".lock"


def default_collection_path() -> Path:
    """``$SIMSEARCH_COLLECTION``, else ``$XDG_DATA_HOME/simsearch/default`` (``~/.local/share/simsearch/default``)."""
    env = os.environ.get(COLLECTION_ENV)
    if env:
        return Path(env).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "simsearch" / "default"


def default_dedup_collection_path() -> Path:
    """Where `dedup` keeps the images it indexes when given no collection: beside the default collection, on its own
    (``$XDG_DATA_HOME/simsearch/dedup``), because it embeds them with the copy-detection model, not the search one."""
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "simsearch" / "dedup"


def resolve_folder(path: str | os.PathLike[str] | None) -> Path:
    return Path(path).expanduser() if path is not None else default_collection_path()


def missing_collection(folder: Path) -> CollectionError:
    why = "" if folder.exists() else " (no such folder)"
    return CollectionError(f"no simsearch collection at {folder}{why}: build one with `simsearch index DIR`")


def check_new_folder(folder: Path) -> None:
    """Refuse to make a collection where something else lives."""
    if folder.exists() and not folder.is_dir():
        raise CollectionError(f"{folder} exists and is not a folder")
    # Hidden leftovers (a lock file, a temporary manifest) are what a crash during creation leaves behind.
    if folder.exists() and any(not f.name.startswith(".") for f in folder.iterdir()):
        raise CollectionError(f"{folder} is not empty and holds no simsearch collection (no {MANIFEST})")


def make_new_folder(folder: Path) -> bool:
    """Make the folder of a new collection; True when it did not exist before."""
    existed = folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    return not existed


def remove_new_collection(folder: Path, made_folder: bool) -> None:
    """Take back a collection that a failed first run made and that holds no image: its files, and its folder when
    the run made that too. Nothing else in the folder is touched."""
    for name in (MANIFEST, VECTORS, SIDECAR, LOCK):
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
    shutil.rmtree(folder / STORE, ignore_errors=True)
    if made_folder:
        with contextlib.suppress(OSError):
            folder.rmdir()  # refused (and kept) when something else has appeared in it
