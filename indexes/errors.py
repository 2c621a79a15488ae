"""Errors of the vector-index layer (kept free of simsearch so the layer imports nothing above it)."""

from __future__ import annotations


class IndexLayerError(Exception):
    """A vector index could not be built, loaded, searched or changed as asked."""
