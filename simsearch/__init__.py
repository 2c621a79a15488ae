"""simsearch: image-similarity search with neural embeddings, an LMDB image store and a FAISS index.

>>> import simsearch
>>> col = simsearch.open_collection("photos/")
>>> hits = col.search("query.jpg", k=10)

The collection names load on first use, so that `import simsearch.errors` (and the command line's help) works
without FAISS installed.
"""

from __future__ import annotations

__version__ = "0.1.0"

import importlib
from typing import TYPE_CHECKING, Any

from simsearch.errors import CollectionError, ImageError, ModelError, ModelMismatchError, SimSearchError

if TYPE_CHECKING:
    from simsearch.collection import (
        Collection,
        CollectionInfo,
        ImageRecord,
        IndexReport,
        SearchResult,
        default_collection_path,
        open_collection,
    )

_FROM_COLLECTION = frozenset(
    {
        "Collection",
        "CollectionInfo",
        "ImageRecord",
        "IndexReport",
        "SearchResult",
        "default_collection_path",
        "open_collection",
    }
)


def __getattr__(name: str) -> Any:
    if name not in _FROM_COLLECTION:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module("simsearch.collection"), name)
    globals()[name] = value
    return value


__all__ = [
    "Collection",
    "CollectionError",
    "CollectionInfo",
    "ImageError",
    "ImageRecord",
    "IndexReport",
    "ModelError",
    "ModelMismatchError",
    "SearchResult",
    "SimSearchError",
    "__version__",
    "default_collection_path",
    "open_collection",
]
