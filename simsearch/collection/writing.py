"""The writing side of an open collection: the one-writer lock, the format upgrade by the first write, the repair of
the index at open, and the save of index and manifest.

A collection takes the writer lock on its first write and keeps it until it closes or gives it back
(`release`); meanwhile it follows the commits of other writers (see `live`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from simsearch.collection.index_file import expected_file_bytes
from simsearch.collection.index_policy import IndexPolicy
from simsearch.collection.layout import MANIFEST
from simsearch.collection.live import StoreFollower
from simsearch.collection.lock import WriterLock
from simsearch.collection.manifest import VERSION, Manifest, now_iso
from simsearch.collection.migrations import migrate_in_place
from simsearch.collection.store import Store
from simsearch.errors import CollectionError, ReadOnlyCollectionError, StorageError
from simsearch.fsio import ensure_free_space

log = logging.getLogger(__name__)


class WriteAccess:
    """Takes and gives back the writer lock and writes what a change leaves behind; `follower` (the catch-up with
    other writers) is made here since it must know whether this process holds the lock."""

    def __init__(self, path: Path, manifest: Manifest, store: Store, policy: IndexPolicy, on_disk_version: int) -> None:
        self.path = path
        self.manifest = manifest
        self.store = store
        self.policy = policy
        self.lock = WriterLock(path)
        self.on_disk_version = on_disk_version
        self.follower = StoreFollower(policy, lambda: self.lock.held)

    def begin(self) -> None:
        """Take the writer lock, kept until `release` (see `_took_lock`)."""
        if self.store.readonly:
            raise ReadOnlyCollectionError(f"collection {self.path} is open read-only: it cannot be changed")
        if not self.lock.held:
            self.lock.acquire()  # removes dead writers' temporary files first: their space counts below
            self._took_lock()
        try:  # every write ends by saving the index beside the old one: refused now if today's has no room
            ensure_free_space(self.path, expected_file_bytes(self.policy.index))
        except StorageError:
            self.release()  # nothing was changed
            raise

    def release(self) -> None:
        """Give back the writer lock when held; the next `begin` takes it again."""
        if self.lock.held:
            self.lock.release()
            self.follower.forget()

    def save(self) -> None:
        """Write the index (through the index policy), then the manifest that says which store generation it agrees
        with."""
        self.policy.save()
        self.manifest.count = len(self.store)
        self.manifest.updated = now_iso()
        self.manifest.save(self.path / MANIFEST)

    def reconcile(self) -> None:
        """At open: repair an index that disagrees with the store, and persist the repair when no writer is busy.

        A reader that only took the lock to save the repair gives it back at once, so that a long-lived searcher
        never keeps `simsearch index` out. A collection opened read-only, or of an older format, is repaired in
        memory only: only a writer saves it (and upgrades the format on disk).
        """
        if self.policy.is_current():
            return
        if self.store.readonly or self.on_disk_version < VERSION or not self.lock.try_acquire():
            self.policy.sync_with_store()  # another process is writing: repair in memory only
            return
        self._took_lock()
        try:
            self.save()
        except (CollectionError, StorageError) as exc:  # a budget the grown collection no longer fits, a full disk
            log.warning("the repaired index of %s could not be saved (%s): it is used as it is", self.path, exc)
        finally:
            self.release()

    def _took_lock(self) -> None:
        """Upgrade an older format on disk, then bring the in-memory index in line with the store, since another
        process may have written since this one opened the collection."""
        try:
            migrate_in_place(self.path, self.manifest, self.store, self.on_disk_version)
            self.on_disk_version = VERSION
            self.policy.sync_with_store()
        except BaseException:
            self.release()
            raise
