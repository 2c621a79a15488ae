"""What the image tests share: colours, noisy JPEGs and a way to close what a test opened."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)


def _close(actual: tuple[int, ...], expected: tuple[int, ...], tol: int = 12) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True))


def _noise_jpeg(path: Path, size: tuple[int, int], seed: int = 0) -> bytes:
    """A JPEG of random blocks (noise compresses badly, so cutting it in half really cuts image data)."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, "JPEG", quality=90)
    return path.read_bytes()
