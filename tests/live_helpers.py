"""What the live-collection tests share: private copies of the sample collection, new photos, and the command line
and other processes run beside the test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, copy_collection

from simsearch import Collection


@pytest.fixture
def private(sample_collection: Path, tmp_path: Path) -> Path:
    return copy_collection(sample_collection, tmp_path / "col")


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def simsearch_cli(*args: str) -> str:
    """Run the command line in another process, as a user beside a long-lived searcher would; returns stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", *args], cwd=REPO, env=env(), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def id_of(col: Collection, path: Path) -> int:
    image_id = col.store.id_for_path(str(path))
    assert image_id is not None, path
    return image_id
