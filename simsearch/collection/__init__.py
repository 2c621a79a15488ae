"""A collection: one folder holding a manifest, an LMDB image store and a FAISS index that agree.

Who owns what (an image from `simsearch index` to the FAISS add crosses each layer once, top to bottom):
  - facade.py: `Collection`, the public API (open, search, add, remove, configure, info); it delegates, nothing more.
  - ingest.py: the pipeline of one indexing run (scan -> probe and hash -> plan -> embed -> write), state per run.
  - index_policy.py: the only place that chooses, tunes, checks and rebuilds the index; `save` is its entry point;
    index_tuning.py: its measured choice and the check at full size.
  - store.py: the LMDB store, the truth (metadata, thumbnails, vectors); the index is derived from it.
  - manifest.py: the current manifest format; migrations.py: every upgrade of an older format (in memory for a
    reader, on disk by the first writer).
  - identity.py: which model made the vectors and which may join them; lock.py: the one-writer lock.
  - writing.py: the writing side of an open collection (writer lock, upgrade on first write, repair at open, save).
  - layout.py: where each file lives and the default collection; results.py: the types the API hands back.

The names below load on first use: `layout` (where the default collection is) imports neither FAISS nor LMDB, so
that the command line's help works on an install without a FAISS extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simsearch.collection.layout import COLLECTION_ENV, default_collection_path, default_dedup_collection_path
from simsearch.lazy import lazy_getattr

if TYPE_CHECKING:
    from simsearch.collection.facade import Collection, ImageInput, open_collection
    from simsearch.collection.index_policy import KEEP
    from simsearch.collection.ingest import Progress
    from simsearch.collection.results import CollectionInfo, IndexReport, SearchResult
    from simsearch.collection.store import ImageRecord

_LAZY = {
    "Collection": "facade",
    "ImageInput": "facade",
    "open_collection": "facade",
    "KEEP": "index_policy",
    "Progress": "ingest",
    "CollectionInfo": "results",
    "IndexReport": "results",
    "SearchResult": "results",
    "ImageRecord": "store",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


__all__ = [
    "COLLECTION_ENV",
    "KEEP",
    "Collection",
    "CollectionInfo",
    "ImageInput",
    "ImageRecord",
    "IndexReport",
    "Progress",
    "SearchResult",
    "default_collection_path",
    "default_dedup_collection_path",
    "open_collection",
]
