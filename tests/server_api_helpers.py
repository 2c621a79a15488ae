"""What the in-process API tests share: a module's copy of the sample collection and an open server over it,
uploads, and the readings of an answer (classes of the hits, stage timing names)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import copy_collection
from serving import QUERIES, serving

STAGES = ("decode", "transform", "queue", "forward", "search", "store")


@pytest.fixture(scope="module")
def copy(sample_collection: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_collection(sample_collection, tmp_path_factory.mktemp("api") / "col")


@pytest.fixture
def fresh(sample_collection: Path, tmp_path: Path) -> Path:
    """A private copy for a test that starts a server of its own (LMDB opens a folder once per process)."""
    return copy_collection(sample_collection, tmp_path / "col")


@pytest.fixture(scope="module")
def client(copy: Path) -> Iterator:
    """An open server (no tokens) over a copy of the 48 sample photos; tests here only read."""
    with serving(copy) as c:
        yield c


def upload(path: Path) -> dict:
    return {"image": (path.name, path.read_bytes(), "image/jpeg")}


def classes(hits: list[dict]) -> list[str]:
    return [Path(h["path"]).parent.name for h in hits]


# ------------------------------------------------------------------------------------------------------ bad uploads


def _truncated_jpeg() -> bytes:
    data = (QUERIES / "starfish_0042.jpg").read_bytes()
    return data[: len(data) // 3]
