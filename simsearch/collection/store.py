"""The LMDB image store: per-image metadata, a preview thumbnail and the image's vector, under one int64 id.

The store is the collection's source of truth. It keeps each vector beside its metadata so that the FAISS index is
a derived artefact: after a crash the index is reconciled from the store, never the other way round.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lmdb
import numpy as np

from simsearch.errors import CollectionError
from simsearch.fsio import refused_write

log = logging.getLogger(__name__)

_ID = struct.Struct(">q")  # big-endian so that LMDB's byte order is numeric order for ids >= 0
#: The address space mapped for the store (not disk: the file grows with its data), doubled on demand. Generous, so
#: that a process that keeps the store open never has to follow another one's growth of the map: LMDB refuses a read
#: transaction (MDB_MAP_RESIZED) once the data outgrow the reader's map, and a map may not be changed while another
#: thread of the process reads.
_INITIAL_MAP_SIZE = 1 << 38


@dataclass(frozen=True)
class ImageRecord:
    """What the store knows of one image file."""

    id: int
    path: str
    size: int
    mtime_ns: int
    sha256: str
    width: int
    height: int
    format: str


@dataclass(frozen=True)
class SkippedFile:
    """A file that could not be read as an image; remembered so an unchanged bad file is not decoded every run."""

    size: int
    mtime_ns: int
    reason: str
    max_pixels: int  # the limit it was checked against: a higher one may let it in


def _key(image_id: int) -> bytes:
    return _ID.pack(image_id)


def _unkey(key: bytes) -> int:
    return int(_ID.unpack(key)[0])


class Store:
    """An LMDB environment with five named databases; every write batch is one atomic transaction.

    Databases: ``records`` id -> JSON metadata, ``paths`` path -> id, ``hashes`` sha256 -> ids (duplicates allowed),
    ``vectors`` id -> float32 bytes, ``thumbs`` id -> JPEG bytes, ``meta`` counters (next id, generation).
    """

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly and not self.path.exists():
            raise CollectionError(f"no image store at {self.path}")
        try:
            try:
                self._env = self._open(readonly, lock=True)
            except lmdb.ReadonlyError:
                if not readonly:
                    raise
                # A reader registers in LMDB's lock file, which it may not be allowed to write (a folder shared by
                # another user). On a read-only file system LMDB goes without the lock file by itself; here it is
                # asked to: a reader then relies on writers not reusing the pages it reads, as there.
                log.warning("cannot write the lock file of %s: reading it without LMDB's reader lock", self.path)
                self._env = self._open(readonly, lock=False)
        except lmdb.Error as exc:
            raise CollectionError(f"cannot open image store {self.path}: {exc}") from exc
        self.readonly = readonly
        names = ["meta", "records", "paths", "vectors", "thumbs", "skipped"]
        try:
            # Without an explicit transaction, py-lmdb opens each handle in one of its own that it commits, which
            # keeps the handles valid in read-only mode too (a handle from an aborted read transaction is not).
            self._dbs = {name: self._env.open_db(name.encode(), create=not readonly) for name in names}
            self._dbs["hashes"] = self._env.open_db(b"hashes", dupsort=True, create=not readonly)
        except lmdb.Error as exc:
            raise CollectionError(f"image store {self.path} is incomplete or damaged: {exc}") from exc

    def _open(self, readonly: bool, *, lock: bool) -> lmdb.Environment:
        return lmdb.open(
            str(self.path),
            map_size=_INITIAL_MAP_SIZE,
            max_dbs=8,
            readonly=readonly,
            lock=lock,
            readahead=False,  # random reads of small records: readahead only pollutes the page cache
        )

    # -- reading ----------------------------------------------------------------------------------------------------

    def _meta_int(self, txn: lmdb.Transaction, name: bytes, default: int = 0) -> int:
        raw = txn.get(name, db=self._dbs["meta"])
        return default if raw is None else _unkey(bytes(raw))

    @property
    def generation(self) -> int:
        """Counts committed write batches; the index records the generation it was last saved at."""
        with self._env.begin() as txn:
            return self._meta_int(txn, b"generation")

    def __len__(self) -> int:
        with self._env.begin() as txn:
            return int(txn.stat(self._dbs["records"])["entries"])

    def get(self, image_id: int) -> ImageRecord | None:
        with self._env.begin() as txn:
            return self._get(txn, image_id)

    def _get(self, txn: lmdb.Transaction, image_id: int) -> ImageRecord | None:
        raw = txn.get(_key(image_id), db=self._dbs["records"])
        return None if raw is None else ImageRecord(id=image_id, **json.loads(bytes(raw)))

    def get_many(self, ids: Iterable[int]) -> list[ImageRecord | None]:
        with self._env.begin() as txn:
            return [self._get(txn, int(i)) for i in ids]

    def id_for_path(self, path: str) -> int | None:
        with self._env.begin() as txn:
            raw = txn.get(os.fsencode(path), db=self._dbs["paths"])
        return None if raw is None else _unkey(raw)

    def ids_for_sha256(self, sha256: str) -> list[int]:
        with self._env.begin() as txn, txn.cursor(db=self._dbs["hashes"]) as cur:
            if not cur.set_key(sha256.encode()):
                return []
            return [_unkey(v) for v in cur.iternext_dup()]

    def ids(self) -> np.ndarray:
        """Every id in the store, ascending: (N,) int64."""
        with self._env.begin() as txn, txn.cursor(db=self._dbs["records"]) as cur:
            keys = b"".join(cur.iternext(keys=True, values=False))
        return np.frombuffer(keys, dtype=">i8").astype(np.int64)

    def records(self) -> Iterator[ImageRecord]:
        with self._env.begin() as txn, txn.cursor(db=self._dbs["records"]) as cur:
            for key, raw in cur:
                yield ImageRecord(id=_unkey(key), **json.loads(raw))

    def records_under(self, folder: str) -> dict[str, ImageRecord]:
        """Records whose path lies inside ``folder`` (an absolute path), keyed by path; a range scan on ``paths``."""
        prefix = folder.rstrip(os.sep) + os.sep
        out: dict[str, ImageRecord] = {}
        with self._env.begin() as txn, txn.cursor(db=self._dbs["paths"]) as cur:
            if not cur.set_range(os.fsencode(prefix)):
                return out
            for key, raw in cur:
                path = os.fsdecode(key)
                if not path.startswith(prefix):
                    break
                record = self._get(txn, _unkey(raw))
                if record is not None:
                    out[path] = record
        return out

    def records_for(self, items: Iterable[int | str | os.PathLike[str]]) -> dict[int, ImageRecord]:
        """The records that ids, file paths or folder paths (everything under them) name, by id."""
        found: dict[int, ImageRecord] = {}
        for item in items:
            if isinstance(item, (int, np.integer)):
                record = self.get(int(item))
                if record is not None:
                    found[record.id] = record
                continue
            path = Path(item).expanduser().absolute()
            matched: dict[int, ImageRecord] = {}
            for p in (str(path), str(path.resolve())):
                image_id = self.id_for_path(p)
                record = self.get(image_id) if image_id is not None else None
                if record is not None:
                    matched[record.id] = record
                matched.update((r.id, r) for r in self.records_under(p).values())
            if not matched:
                log.info("not in the collection: %s", path)
            found.update(matched)
        return found

    def skipped_under(self, folder: str) -> dict[str, SkippedFile]:
        """Files under ``folder`` that an earlier run could not read, keyed by path (see ``WriteBatch.skip``)."""
        prefix = os.fsencode(folder.rstrip(os.sep) + os.sep)
        out: dict[str, SkippedFile] = {}
        with self._env.begin() as txn, txn.cursor(db=self._dbs["skipped"]) as cur:
            if cur.set_range(prefix):
                for key, raw in cur:
                    if not key.startswith(prefix):
                        break
                    out[os.fsdecode(key)] = SkippedFile(**json.loads(raw))
        return out

    def skipped(self, path: str) -> SkippedFile | None:
        with self._env.begin() as txn:
            raw = txn.get(os.fsencode(path), db=self._dbs["skipped"])
        return None if raw is None else SkippedFile(**json.loads(raw))

    def rewrite_skips(self, upgrade: Callable[[dict[str, Any]], dict[str, Any] | None]) -> int:
        """Pass every skip record through `upgrade` in one transaction (format upgrades use it): a returned record
        replaces the stored one, None deletes it. Returns how many records changed."""
        if self.readonly:
            raise CollectionError(f"image store {self.path} is open read-only")
        changed = 0
        with self.write_txn() as txn, txn.cursor(db=self._dbs["skipped"]) as cur:
            for key, raw in list(cur):
                old = json.loads(bytes(raw))
                new = upgrade(dict(old)) if isinstance(old, dict) else None
                if new is None:
                    txn.delete(key, db=self._dbs["skipped"])
                elif new != old:
                    txn.put(key, json.dumps(new).encode(), db=self._dbs["skipped"])
                else:
                    continue
                changed += 1
        return changed

    def vectors(self, ids: Iterable[int], dim: int) -> np.ndarray:
        """The stored vectors of ``ids``: (N, dim) float32; a missing id is an error since store and index agree."""
        ids = list(ids)
        out = np.empty((len(ids), dim), dtype=np.float32)
        with self._env.begin() as txn:
            for row, image_id in enumerate(ids):
                raw = txn.get(_key(int(image_id)), db=self._dbs["vectors"])
                if raw is None or len(raw) != dim * 4:
                    raise CollectionError(f"image store is missing the vector of id {image_id}")
                out[row] = np.frombuffer(raw, dtype=np.float32)
        return out

    def vectors_present(self, ids: Iterable[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """The ids of ``ids`` that the store still holds, (M,) int64, and their vectors, (M, dim) float32, read in
        one transaction: a process that follows another one's commits may ask for ids removed since it listed them."""
        kept: list[int] = []
        rows: list[np.ndarray] = []
        with self._env.begin() as txn:
            for image_id in ids:
                raw = txn.get(_key(int(image_id)), db=self._dbs["vectors"])
                if raw is not None and len(raw) == dim * 4:
                    kept.append(int(image_id))
                    rows.append(np.frombuffer(raw, dtype=np.float32))
        vectors = np.stack(rows) if rows else np.empty((0, dim), dtype=np.float32)
        return np.asarray(kept, dtype=np.int64), vectors

    def thumbnail(self, image_id: int) -> bytes | None:
        with self._env.begin() as txn:
            raw = txn.get(_key(image_id), db=self._dbs["thumbs"])
        return None if raw is None else bytes(raw)

    @property
    def max_path_bytes(self) -> int:
        """The longest file path (in bytes) that the store can keep: paths are LMDB keys, of at most 511 bytes."""
        return int(self._env.max_key_size())

    def disk_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())

    # -- writing ----------------------------------------------------------------------------------------------------

    def write(self) -> WriteBatch:
        """Start an atomic batch: ``with store.write() as batch: batch.add(...)``."""
        if self.readonly:
            raise CollectionError(f"image store {self.path} is open read-only")
        return WriteBatch(self)

    @contextlib.contextmanager
    def write_txn(self) -> Iterator[lmdb.Transaction]:
        """One LMDB write transaction. A commit that fails (a full disk, a quota, an I/O error) aborts it, which
        leaves the store as it was before, and is one domain error line naming the cause and the folder; a full map
        (MapFullError) goes through for the caller to grow the map and try again."""
        try:
            with self._env.begin(write=True) as txn:
                yield txn
        except lmdb.MapFullError:
            raise
        except lmdb.Error as exc:
            refused = refused_write(self.path, exc)
            raise refused or CollectionError(f"cannot write image store {self.path}: {exc}") from exc

    def _grow(self) -> None:
        self._env.set_mapsize(self._env.info()["map_size"] * 2)

    def close(self) -> None:
        self._env.close()


class WriteBatch:
    """Collects changes and commits them in one LMDB transaction, so a crash keeps all of them or none."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._ops: list[tuple[str, tuple]] = []

    def new_ids(self, count: int) -> list[int]:
        """Reserve ``count`` fresh ids; ids are never reused, so a stale index entry can never alias a new image."""
        meta = self._store._dbs["meta"]
        with self._store.write_txn() as txn:
            first = self._store._meta_int(txn, b"next_id", 1)
            txn.put(b"next_id", _key(first + count), db=meta)
        return list(range(first, first + count))

    def add(self, record: ImageRecord, vector: np.ndarray, thumbnail: bytes | None) -> None:
        self._ops.append(("add", (record, np.ascontiguousarray(vector, dtype=np.float32).tobytes(), thumbnail)))

    def update(self, record: ImageRecord) -> None:
        """Replace the metadata of an existing id (a moved, renamed or touched file keeps its id and vector)."""
        self._ops.append(("update", (record,)))

    def delete(self, image_id: int) -> None:
        self._ops.append(("delete", (image_id,)))

    def skip(self, path: str, size: int, mtime_ns: int, reason: str, *, max_pixels: int) -> None:
        """Remember that ``path`` (at this size and mtime, under this pixel limit) is not a readable image."""
        self._ops.append(("skip", (path, SkippedFile(size, mtime_ns, reason, max_pixels))))

    def forget_skip(self, path: str) -> None:
        self._ops.append(("forget_skip", (path,)))

    def __enter__(self) -> WriteBatch:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None and self._ops:
            self.commit()

    def commit(self) -> None:
        while True:
            try:
                with self._store.write_txn() as txn:
                    for op, args in self._ops:
                        getattr(self, f"_{op}")(txn, *args)
                    gen = self._store._meta_int(txn, b"generation")
                    txn.put(b"generation", _key(gen + 1), db=self._store._dbs["meta"])
                break
            except lmdb.MapFullError:
                self._store._grow()
        self._ops.clear()

    def _add(self, txn: lmdb.Transaction, record: ImageRecord, vector: bytes, thumbnail: bytes | None) -> None:
        dbs, key = self._store._dbs, _key(record.id)
        self._put_record(txn, record)
        txn.put(key, vector, db=dbs["vectors"])
        if thumbnail is not None:
            txn.put(key, thumbnail, db=dbs["thumbs"])

    def _put_record(self, txn: lmdb.Transaction, record: ImageRecord) -> None:
        dbs, key = self._store._dbs, _key(record.id)
        old = self._store._get(txn, record.id)
        if old is not None:
            self._unlink(txn, old)
        meta = asdict(record)
        del meta["id"]
        txn.put(key, json.dumps(meta, separators=(",", ":")).encode(), db=dbs["records"])
        txn.put(os.fsencode(record.path), key, db=dbs["paths"])
        txn.put(record.sha256.encode(), key, db=dbs["hashes"])
        txn.delete(os.fsencode(record.path), db=dbs["skipped"])  # readable now

    def _unlink(self, txn: lmdb.Transaction, record: ImageRecord) -> None:
        dbs, key = self._store._dbs, _key(record.id)
        if txn.get(os.fsencode(record.path), db=dbs["paths"]) == key:
            txn.delete(os.fsencode(record.path), db=dbs["paths"])
        txn.delete(record.sha256.encode(), key, db=dbs["hashes"])

    def _skip(self, txn: lmdb.Transaction, path: str, skipped: SkippedFile) -> None:
        txn.put(os.fsencode(path), json.dumps(asdict(skipped)).encode(), db=self._store._dbs["skipped"])

    def _forget_skip(self, txn: lmdb.Transaction, path: str) -> None:
        txn.delete(os.fsencode(path), db=self._store._dbs["skipped"])

    def _update(self, txn: lmdb.Transaction, record: ImageRecord) -> None:
        self._put_record(txn, record)

    def _delete(self, txn: lmdb.Transaction, image_id: int) -> None:
        dbs, key = self._store._dbs, _key(image_id)
        old = self._store._get(txn, image_id)
        if old is None:
            return
        self._unlink(txn, old)
        for name in ("records", "vectors", "thumbs"):
            txn.delete(key, db=dbs[name])
