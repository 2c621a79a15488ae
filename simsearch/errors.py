"""Domain exceptions: the library raises these, the CLI turns them into one-line errors."""

from __future__ import annotations


class SimSearchError(Exception):
    """Base class of every error that simsearch raises on purpose."""


class CollectionError(SimSearchError):
    """A collection folder is missing, corrupt, locked or of an unknown format version."""


class ModelMismatchError(CollectionError):
    """The collection was built with another model: vectors of two models never mix."""


class ModelError(SimSearchError):
    """A model could not be built or its weights could not be loaded."""


class ImageError(SimSearchError):
    """A file is not a readable image (corrupt, truncated, empty, too large, not an image)."""
