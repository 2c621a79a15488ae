"""simsearch: image-similarity search with neural embeddings, an LMDB image store and a FAISS index.

>>> import simsearch
>>> col = simsearch.open_collection("photos/")
>>> hits = col.search("query.jpg", k=10)
"""

from __future__ import annotations

__version__ = "0.1.0"

from simsearch.collection import (
    Collection,
    CollectionInfo,
    ImageRecord,
    IndexReport,
    SearchResult,
    default_collection_path,
    open_collection,
)
from simsearch.errors import CollectionError, ImageError, ModelError, ModelMismatchError, SimSearchError

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
