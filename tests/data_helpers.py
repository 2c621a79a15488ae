"""What the data tests share: small PNG files and a class tree of them."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image


def _png(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


@pytest.fixture
def class_tree(tmp_path: Path) -> Path:
    """root/{cat,dog,emu}: cat has a nested folder, hidden files and a text file that must not count."""
    root = tmp_path / "labeled"
    _png(root / "dog" / "a.png", (0, 0, 255))
    _png(root / "dog" / "b.PNG", (0, 0, 250))
    _png(root / "cat" / "x.png", (255, 0, 0))
    _png(root / "cat" / "nested" / "y.jpg", (250, 0, 0))
    _png(root / "cat" / ".hidden.png", (1, 1, 1))
    (root / "cat" / "notes.txt").write_text("not an image")
    _png(root / "emu" / "e.png", (0, 255, 0))
    _png(root / ".trash" / "t.png", (9, 9, 9))
    _png(root / "stray.png", (9, 9, 9))  # a file directly in root belongs to no class
    return root
