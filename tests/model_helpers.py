"""What the model tests share: seeded random input batches."""

from __future__ import annotations

import torch


def _random_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))
