"""The writer lock: one writer per collection. LMDB would serialise transactions, but the index file and the manifest
would be overwritten by whichever writer saved last."""

from __future__ import annotations

import fcntl
import logging
from pathlib import Path
from typing import IO

from simsearch.collection.layout import LOCK
from simsearch.errors import CollectionError
from simsearch.fsio import remove_stale_temps

log = logging.getLogger(__name__)


class WriterLock:
    """A POSIX record lock on the collection's `.lock` file, held from the first write until `release`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._handle: IO[bytes] | None = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    def acquire(self) -> None:
        """Take the lock or raise CollectionError; then remove the temporary files that dead writers left behind
        (only a lock holder may: a live writer's temporary file is never taken for a leftover)."""
        if self._handle is not None:
            return
        handle = open(self.folder / LOCK, "wb")  # noqa: SIM115 - held until release()
        try:
            # A POSIX record lock belongs to this process alone: forked decode workers do not inherit it, so workers
            # orphaned by a killed `index` cannot keep the collection locked (an flock would be shared with them).
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError) as exc:
            handle.close()
            raise CollectionError(
                f"another simsearch process is writing to {self.folder}; try again when it ends"
            ) from exc
        self._handle = handle
        for leftover in remove_stale_temps(self.folder):
            log.info("removed %s, left by a writer that died", leftover)

    def try_acquire(self) -> bool:
        """Take the lock if no other writer holds it."""
        try:
            self.acquire()
            return True
        except (CollectionError, OSError):
            return False

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file releases the lock
            self._handle = None
