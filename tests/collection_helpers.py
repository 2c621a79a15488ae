"""Helpers shared by the collection tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from conftest import SAMPLE_PHOTOS, SAMPLES

from simsearch import Collection, open_collection

QUERIES = SAMPLES / "queries"
SAMPLE_CLASSES = sorted(p.name for p in SAMPLE_PHOTOS.iterdir() if p.is_dir())


def assert_consistent(c: Collection) -> None:
    """Store and index hold exactly the same ids."""
    assert c.store.ids().tolist() == np.sort(c.index.ids()).tolist()


def paths_found(c: Collection, query: str | bytes | Path) -> list[str]:
    return [r.path for r in c.search(query, k=max(len(c), 1))]


def index_older_than_the_store(path: Path, scratch: Path) -> int:
    """Leave the collection at `path` as a crash between a store commit and the index save would: ids 1-3 removed
    and a copy of a sample photo added (under `scratch`) in the store, the index and manifest as before. Returns
    the copy's id."""
    saved = {name: (path / name).read_bytes() for name in ("manifest.json", "vectors.faiss", "vectors.faiss.json")}
    twin = scratch / "photos" / "twin.jpg"
    twin.parent.mkdir()
    shutil.copy(SAMPLE_PHOTOS / "ketch" / "image_0005.jpg", twin)
    with open_collection(path) as c:
        c.remove([1, 2, 3])
        assert c.add([twin], workers=0).reused == 1  # a copy: new id, no model needed
        new_id = c.store.id_for_path(str(twin.resolve()))
    assert new_id is not None
    for name, data in saved.items():  # as if the process died before writing the index and the manifest
        (path / name).write_bytes(data)
    return new_id
