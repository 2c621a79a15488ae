"""Helpers shared by the collection tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import SAMPLE_PHOTOS, SAMPLES

from simsearch import Collection

QUERIES = SAMPLES / "queries"
SAMPLE_CLASSES = sorted(p.name for p in SAMPLE_PHOTOS.iterdir() if p.is_dir())


def assert_consistent(c: Collection) -> None:
    """Store and index hold exactly the same ids."""
    assert c.store.ids().tolist() == np.sort(c.index.ids()).tolist()


def paths_found(c: Collection, query: str | bytes | Path) -> list[str]:
    return [r.path for r in c.search(query, k=max(len(c), 1))]
