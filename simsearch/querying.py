"""Queries beyond one image file: standard input and http(s) URLs read under a size and a time limit, several
images combined into one vector (with images to subtract), stored images as queries, the query's own entries left
out, and a score floor.

Reading a query is separate from searching with it, so that a caller can read every query (and refuse a typo, a
text file or an unreachable URL) before it pays for loading the model.
"""

from __future__ import annotations

import http.client
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from simsearch.errors import ImageError, QueryError
from simsearch.images import load_image, open_regular_file, probe_image

if TYPE_CHECKING:
    from simsearch.collection import Collection, SearchResult

#: The largest query read from standard input or a URL.
MAX_QUERY_BYTES = 100 * 2**20
#: How long fetching a URL may take, from connecting to the last byte.
FETCH_TIMEOUT_S = 30.0
_CHUNK = 1 << 16


@dataclass(frozen=True)
class QueryImage:
    """One query image, read: ``label`` as the user wrote it (a path, a URL, "-"), its encoded bytes, and for a file
    the paths under which the collection may hold it (its own entry is "self")."""

    label: str
    data: bytes
    paths: tuple[str, ...] = ()


def is_url(text: str) -> bool:
    return text[:8].lower().startswith(("http://", "https://"))


def read_query(
    spec: str,
    *,
    stdin: BinaryIO | None = None,
    max_bytes: int = MAX_QUERY_BYTES,
    timeout: float = FETCH_TIMEOUT_S,
) -> QueryImage:
    """Read a query image named by ``spec``: a file path, "-" for ``stdin`` (standard input by default) or an
    http(s) URL. Its header is checked now, so that a file that is no image fails before any model loads.

    Raises:
        ImageError: the file cannot be read or is not an image (``cannot search with LABEL: reason``).
        QueryError: the URL cannot be fetched within ``timeout`` seconds and ``max_bytes`` bytes, or standard input
            holds more than ``max_bytes``.
    """
    paths: tuple[str, ...] = ()
    try:
        if spec == "-":
            data = read_stream(stdin if stdin is not None else sys.stdin.buffer, max_bytes, "standard input")
        elif is_url(spec):
            data = fetch_url(spec, max_bytes=max_bytes, timeout=timeout)
        else:
            path = Path(spec).expanduser()
            with open_regular_file(path) as f:
                data = f.read()
            # Entries are kept under the link's own name (folder scans) or its target (files added by name).
            paths = tuple(dict.fromkeys((str(path.parent.resolve() / path.name), str(path.resolve()))))
        probe_image(data)
    except ImageError as exc:
        raise ImageError(f"cannot search with {spec}: {exc}") from exc
    return QueryImage(spec, data, paths)


def read_stream(stream: BinaryIO, max_bytes: int, label: str) -> bytes:
    """All of ``stream``, refused past ``max_bytes`` (a pipe of endless bytes must not fill the memory)."""
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise QueryError(f"{label} holds more than {max_bytes:,} bytes: not a query image")
    if not data:
        raise ImageError("empty input")
    return data


def fetch_url(url: str, *, max_bytes: int = MAX_QUERY_BYTES, timeout: float = FETCH_TIMEOUT_S) -> bytes:
    """The body of an http(s) URL, refused past ``max_bytes`` or ``timeout`` seconds (a one-line QueryError that
    says when the cause is likely no network)."""
    from simsearch import __version__

    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={"User-Agent": f"simsearch/{__version__}", "Accept": "image/*"})
    chunks: list[bytes] = []
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - the scheme was checked
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise QueryError(f"cannot fetch {url}: {int(length):,} bytes is more than the {max_bytes:,} allowed")
            total = 0
            while chunk := response.read1(_CHUNK):
                total += len(chunk)
                if total > max_bytes:
                    raise QueryError(f"cannot fetch {url}: more than the {max_bytes:,} bytes allowed")
                if time.monotonic() > deadline:
                    raise QueryError(f"cannot fetch {url}: it took longer than {timeout:g} s")
                chunks.append(chunk)
    except urllib.error.HTTPError as exc:
        raise QueryError(f"cannot fetch {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise QueryError(f"cannot fetch {url}: no answer within {timeout:g} s (offline?)") from None
        why = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
        raise QueryError(f"cannot fetch {url}: {why} (offline?)") from None
    except TimeoutError:
        raise QueryError(f"cannot fetch {url}: no answer within {timeout:g} s (offline?)") from None
    except (http.client.HTTPException, OSError) as exc:
        raise QueryError(f"cannot fetch {url}: {getattr(exc, 'strerror', None) or exc or type(exc).__name__}") from None
    return b"".join(chunks)


def embed_queries(
    col: Collection, images: Sequence[QueryImage], ids: Sequence[int] = (), *, device: str | None = None
) -> np.ndarray:
    """One vector per query, images first then stored ids (no model loads when there are only ids): ``(Q, D)``.

    On the CPU, images go through the model exported into the collection when it has one (no torch import, see
    `simsearch.collection.query_model`)."""
    from simsearch.collection.query_model import embed_query_images

    try:
        rows = [embed_query_images(col, [q.data for q in images], device)] if images else []
    except ImageError as exc:  # a header that read well over pixels that do not: say which image
        raise ImageError(f"cannot search with {_undecodable(images)}: {exc}") from exc
    rows += [col.vector(image_id)[None, :] for image_id in ids]
    if not rows:
        return np.empty((0, col.dim), dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(rows), dtype=np.float32)


def _undecodable(images: Sequence[QueryImage]) -> str:
    """The label of the first image that does not decode (the error path only: each is decoded again)."""
    for image in images:
        try:
            load_image(image.data)
        except ImageError:
            return image.label
    return "a query image"


def combine(positive: np.ndarray, negative: np.ndarray | None = None) -> np.ndarray:
    """One query vector from several: the mean of the ``positive`` vectors minus the mean of the ``negative`` ones,
    L2-normalised: "like these, and unlike those".

    Raises:
        QueryError: nothing to search with, or vectors that cancel out (the same image added and subtracted).
    """
    positive = np.asarray(positive, dtype=np.float32).reshape(-1, positive.shape[-1])
    if not len(positive):
        raise QueryError("no query image")
    vector = positive.mean(axis=0)
    if negative is not None and len(negative):
        vector = vector - np.asarray(negative, dtype=np.float32).reshape(-1, vector.shape[0]).mean(axis=0)
    norm = float(np.linalg.norm(vector))
    if norm < 1e-6:
        raise QueryError("the query images cancel out: the images subtracted are the images searched with")
    return (vector / norm).astype(np.float32)


def own_ids(col: Collection, images: Iterable[QueryImage], ids: Iterable[int] = ()) -> set[int]:
    """The collection's entries of the query itself: the stored ids queried, and the entries of query files."""
    found = {int(i) for i in ids}
    for q in images:
        for path in q.paths:
            image_id = col.store.id_for_path(path)
            if image_id is not None:
                found.add(image_id)
                break
    return found


def search(
    col: Collection,
    vector: np.ndarray,
    k: int = 10,
    *,
    exclude_ids: Iterable[int] = (),
    min_score: float | None = None,
) -> list[SearchResult]:
    """The ``k`` best results for one query vector, without ``exclude_ids`` and, with ``min_score``, without results
    that score lower (fewer than ``k`` then)."""
    results: list[SearchResult] = col.search_vectors(vector, k, exclude_ids=exclude_ids)
    if min_score is not None:
        results = [r for r in results if r.score >= min_score]
    return results
