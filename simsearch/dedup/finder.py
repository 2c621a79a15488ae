"""Duplicates in a collection: exact copies by the stored SHA-256, near duplicates through the collection's own index.

`find_duplicates` groups a whole collection (or the images under some folders of it), `duplicates_of` answers for
one image, `find_against` checks the images of one collection against another (new uploads against a catalogue).
Every score reported is an exact cosine between stored vectors, whatever the index type.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from simsearch.dedup.grouping import complete_linkage, min_pair_score
from simsearch.dedup.keep import DEFAULT_KEEP, choose_keep
from simsearch.dedup.neighbours import DEFAULT_K, Neighbours, matches_above, pairs_above
from simsearch.dedup.results import DedupReport, DuplicateGroup, Match
from simsearch.dedup.stored import NEAR_DUPLICATE, Threshold, resolve_threshold
from simsearch.errors import CollectionError, ModelMismatchError

if TYPE_CHECKING:
    from simsearch.collection import Collection, ImageInput, ImageRecord

__all__ = ["duplicates_of", "find_against", "find_duplicates", "source_of"]

log = logging.getLogger(__name__)


def source_of(col: Collection) -> Neighbours:
    """The collection's stored vectors and index as the pair search reads them."""
    index = col.index
    if len(col) and not index.is_trained:
        raise CollectionError(
            f"the {index.factory} index trains once the collection holds {index.min_training_vectors} images; "
            f"it holds {len(col)}"
        )
    return Neighbours(read=lambda ids: col.store.vectors(ids.tolist(), col.dim), knn=index.search)


def _records(col: Collection, folders: Sequence[str | os.PathLike[str]] | None) -> dict[int, ImageRecord]:
    if not folders:
        return {r.id: r for r in col.store.records()}
    found: dict[int, ImageRecord] = {}
    for folder in folders:
        root = folders_of([folder])[0]
        found.update((r.id, r) for r in col.store.records_under(root).values())
    return found


def find_duplicates(
    col: Collection,
    *,
    threshold: float | None = None,
    precision: float | None = None,
    keep: str = DEFAULT_KEEP,
    folders: Sequence[str | os.PathLike[str]] | None = None,
    reference: Sequence[str | os.PathLike[str]] = (),
    k: int = DEFAULT_K,
) -> DedupReport:
    """Group the collection's duplicates (those under `folders` when given) and choose the file to keep in each.

    Args:
        threshold: cosine at or above which two images are duplicates; default: the calibrated one for `precision`.
        precision: precision goal of the calibration to use (default `stored.DEFAULT_PRECISION`).
        keep: the keep rule (`keep.KEEP_RULES`).
        reference: folders whose files are never removed.
        k: neighbours asked per image at first (more are asked where needed).
    """
    started = time.perf_counter()
    line = resolve_threshold(col, threshold, precision, NEAR_DUPLICATE)
    records = _records(col, folders)
    copies: dict[str, list[int]] = defaultdict(list)
    for image_id in sorted(records):
        copies[records[image_id].sha256].append(image_id)
    # One image per set of identical files is paired up; its copies share its vector and join its group after.
    firsts = np.fromiter((ids[0] for ids in copies.values()), dtype=np.int64, count=len(copies))
    source = source_of(col)
    pairs = pairs_above(source, firsts, line.value, k=k) if len(firsts) > 1 else None
    near = complete_linkage(pairs, line.value, source.vectors) if pairs is not None and len(pairs) else []
    grouped = {i for g in near for i in g}
    by_first = {ids[0]: ids for ids in copies.values()}
    seeds = near + [[first] for first, ids in by_first.items() if len(ids) > 1 and first not in grouped]
    groups = []
    for seed in seeds:
        members = [records[i] for first in seed for i in by_first[first]]
        weakest = min_pair_score(seed, source.vectors)
        groups.append(_group(members, source, line, keep, reference, weakest))
    groups.sort(key=lambda g: (-len(g.members), g.kept.path))
    return DedupReport(
        groups=groups,
        threshold=line,
        keep_rule=keep,
        images=len(records),
        seconds=time.perf_counter() - started,
        reference=folders_of(reference),
    )


def _group(
    members: list[ImageRecord],
    source: Neighbours,
    line: Threshold,
    keep: str,
    reference: Sequence[str | os.PathLike[str]],
    weakest: float,
) -> DuplicateGroup:
    kept, remove, reason = choose_keep(members, keep, folders_of(reference))
    ordered = [kept] + [m for m in members if m.id != kept.id]
    vectors = source.vectors(np.asarray([m.id for m in ordered], dtype=np.int64))
    scores = (vectors @ vectors[0]).tolist()
    matches = [
        Match(m, float(min(1.0, s)), m.sha256 == kept.sha256, line.meaning(float(s)))
        for m, s in zip(ordered, scores, strict=True)
    ]
    return DuplicateGroup(kept=kept, remove=remove, members=matches, reason=reason, weakest=weakest)


def _sha256_of(image: ImageInput) -> str | None:
    import hashlib

    from simsearch.images import file_sha256

    if isinstance(image, (bytes, bytearray)):
        return hashlib.sha256(image).hexdigest()
    if isinstance(image, (str, os.PathLike)):
        return file_sha256(image)
    return None  # a decoded picture has no file bytes to compare


def duplicates_of(
    col: Collection,
    image: ImageInput,
    *,
    threshold: float | None = None,
    precision: float | None = None,
    k: int = DEFAULT_K,
) -> list[Match]:
    """The stored images that are duplicates of `image` (a path, encoded bytes or a PIL image), best first:
    the same file bytes (exact), or a cosine at or above the threshold (near)."""
    line = resolve_threshold(col, threshold, precision, NEAR_DUPLICATE)
    sha = _sha256_of(image)
    exact_ids = set(col.store.ids_for_sha256(sha)) if sha else set()
    vector = col.embed([image])
    found: dict[int, float] = {}
    if len(col):
        _, ids, scores = matches_above(source_of(col), vector, line.value, k=k)
        found = dict(zip(ids.tolist(), scores.tolist(), strict=True))
    for image_id in exact_ids:
        found.setdefault(image_id, 1.0)
    records = dict(zip(found, col.store.get_many(found), strict=True))
    matches = [
        Match(record, min(1.0, s), i in exact_ids, line.meaning(s))
        for i, s in found.items()
        if (record := records[i]) is not None
    ]
    return sorted(matches, key=lambda m: (not m.exact, -m.score, m.record.path))


def find_against(
    col: Collection,
    other: Collection,
    *,
    threshold: float | None = None,
    precision: float | None = None,
    folders: Sequence[str | os.PathLike[str]] | None = None,
    k: int = DEFAULT_K,
    chunk: int = 4096,
) -> tuple[Threshold, list[tuple[ImageRecord, list[Match]]]]:
    """Which images of `col` (those under `folders` when given) already exist in `other`: each with its matches
    there, best first. Both collections must hold vectors of the same model."""
    mine, theirs = col.manifest.model, other.manifest.model
    if mine.weights_sha256 != theirs.weights_sha256 or mine.spec.get("tta") != theirs.spec.get("tta"):
        raise ModelMismatchError(
            f"{col.path} holds vectors of {mine.id} and {other.path} of {theirs.id}: their scores do not compare"
        )
    line = resolve_threshold(other, threshold, precision, NEAR_DUPLICATE)
    records = _records(col, folders)
    ids = np.asarray(sorted(records), dtype=np.int64)
    source = source_of(other)
    out: list[tuple[ImageRecord, list[Match]]] = []
    for start in range(0, len(ids), chunk):
        part = ids[start : start + chunk]
        rows, found, scores = matches_above(source, col.store.vectors(part.tolist(), col.dim), line.value, k=k)
        per_row: dict[int, dict[int, float]] = defaultdict(dict)
        for row, image_id, score in zip(rows.tolist(), found.tolist(), scores.tolist(), strict=True):
            per_row[row][image_id] = score
        for row, image_id in enumerate(part.tolist()):
            record = records[image_id]
            hits = per_row.get(row, {})
            exact = set(other.store.ids_for_sha256(record.sha256))
            for same in exact:
                hits.setdefault(same, 1.0)
            if hits:
                out.append((record, _matches(other, hits, exact, line)))
    return line, out


def _matches(other: Collection, hits: dict[int, float], exact: set[int], line: Threshold) -> list[Match]:
    records = other.store.get_many(hits)
    found = [
        Match(r, min(1.0, s), i in exact, line.meaning(s))
        for (i, s), r in zip(hits.items(), records, strict=True)
        if r is not None
    ]
    return sorted(found, key=lambda m: (not m.exact, -m.score, m.record.path))


def folders_of(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Folders as absolute paths with links resolved, as the store records image paths."""
    return [str(Path(p).expanduser().resolve()) for p in paths]
