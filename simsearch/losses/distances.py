"""Distances between embeddings. Each knows whether a larger value means closer, so one loss serves L2 and cosine."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from simsearch.losses.base import LossError

T = TypeVar("T", Tensor, float)

# Smallest squared distance passed to sqrt: d sqrt(x)/dx is infinite at 0, so identical embeddings would give NaN.
_SQRT_EPS = 1e-12


class Distance:
    """A pairwise measure between embeddings.

    Attributes:
        is_similarity: True when a larger value means closer (cosine), False for a distance (Euclidean).
    """

    is_similarity: bool = False
    name: str = "distance"

    def pairwise(self, a: Tensor, b: Tensor) -> Tensor:
        """All values between rows of ``a`` ``(N, D)`` and rows of ``b`` ``(M, D)``: ``(N, M)``."""
        raise NotImplementedError

    def paired(self, a: Tensor, b: Tensor) -> Tensor:
        """Values between row i of ``a`` and row i of ``b``, both ``(N, D)``: ``(N,)`` (explicit Siamese pairs)."""
        raise NotImplementedError

    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        return self.pairwise(a, b)

    def farness(self, values: T) -> T:
        """Map values (or margins) to a scale where larger always means farther.

        Losses write their inequalities once on this scale; for a similarity that flips every inequality.
        """
        return -values if self.is_similarity else values

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# Squared distances under this share of |a|^2 + |b|^2 are recomputed exactly (float32 keeps ~7 digits of the sum).
_CLOSE = 1e-3


class EuclideanDistance(Distance):
    """L2 distance, or its square with ``squared=True`` (cheaper, but the margins then mean squared units)."""

    is_similarity = False

    def __init__(self, squared: bool = False) -> None:
        self.squared = squared
        self.name = "squared_euclidean" if squared else "euclidean"

    def pairwise(self, a: Tensor, b: Tensor) -> Tensor:
        # |a|^2 + |b|^2 - 2ab is one matmul instead of an (N, M, D) difference tensor; cancellation can make it
        # slightly negative, hence the clamp.
        norms_a, norms_b = (a * a).sum(1), (b * b).sum(1)
        sq = norms_a[:, None] + norms_b[None, :] - 2.0 * (a @ b.T)
        # That cancellation loses everything for close pairs (in float32, unit vectors closer than ~3e-4 come out at
        # exactly 0 with no gradient, so a near-duplicate negative is never pushed away): recompute those few
        # entries, the diagonal of a batch against itself among them, as differences.
        i, j = torch.nonzero(sq < _CLOSE * (norms_a[:, None] + norms_b[None, :]), as_tuple=True)
        if len(i):
            sq = sq.index_put((i, j), ((a[i] - b[j]) ** 2).sum(1))
        return self._from_squared(sq)

    def paired(self, a: Tensor, b: Tensor) -> Tensor:
        return self._from_squared(((a - b) ** 2).sum(1))

    def _from_squared(self, sq: Tensor) -> Tensor:
        if self.squared:
            return sq.clamp_min(0.0)
        # Clamped entries get exactly 0 (with a zero gradient), so identical embeddings are at distance 0, not 1e-6.
        return torch.where(sq > _SQRT_EPS, sq.clamp_min(_SQRT_EPS).sqrt(), torch.zeros_like(sq))

    def __repr__(self) -> str:
        return f"EuclideanDistance(squared={self.squared})"


class CosineSimilarity(Distance):
    """Cosine of the angle between embeddings; inputs are L2-normalised here, so any scale is fine."""

    is_similarity = True
    name = "cosine"

    def pairwise(self, a: Tensor, b: Tensor) -> Tensor:
        return F.normalize(a, dim=1) @ F.normalize(b, dim=1).T

    def paired(self, a: Tensor, b: Tensor) -> Tensor:
        return (F.normalize(a, dim=1) * F.normalize(b, dim=1)).sum(1)


_DISTANCES: dict[str, Callable[[], Distance]] = {
    "euclidean": lambda: EuclideanDistance(),
    "squared_euclidean": lambda: EuclideanDistance(squared=True),
    "cosine": lambda: CosineSimilarity(),
}


def list_distances() -> list[str]:
    """Names that ``create_distance`` (and every loss's ``distance=`` option) accepts."""
    return sorted(_DISTANCES)


def create_distance(name: str) -> Distance:
    """Build a distance by name: ``"euclidean"``, ``"squared_euclidean"`` or ``"cosine"``."""
    try:
        return _DISTANCES[name]()
    except KeyError:
        raise LossError(f"unknown distance {name!r}; choose one of {', '.join(list_distances())}") from None


def as_distance(spec: Distance | str | None, default: Distance) -> Distance:
    """Accept a Distance, a name (as found in a config file) or None for the loss's paper default."""
    if spec is None:
        return default
    if isinstance(spec, str):
        return create_distance(spec)
    if isinstance(spec, Distance):
        return spec
    raise LossError(f"distance must be a Distance or one of {', '.join(list_distances())}, got {spec!r}")
