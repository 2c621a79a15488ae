"""Keeping an open collection current, and safe to search from many threads.

A long-lived process (a server) keeps one `Collection` open while other processes write to it (`simsearch index`,
`simsearch remove`). Each of their commits bumps the store's generation counter; before every search one read of that
counter (an LMDB read transaction, microseconds) says whether the in-memory index may be behind, and only then is it
brought in line with the store: no reopening, no writer lock, so writers are never held up.

Threads: searches share the index, changes to it (this process's own writes, catching up with other processes,
rebuilds) take it alone. FAISS's CPU indexes may be searched from many threads at once (FAISS lets go of the GIL
while it searches) but not while they change, so a readers-writer lock gives both. Measured on a shared 2-core
machine (Flat index of 10,000 vectors of 1,280 dimensions, one query per search, one FAISS thread per search, 1, 2
and 4 threads): the readers-writer lock, a plain lock and no lock at all (FAISS's own safety for concurrent
searches, wrong while the index changes) took turns being fastest from run to run (4 threads: 385, 278 and 381
searches/s in one run, 117, 129 and 103 in another), and none gained from more threads, since the cores were busy
with other work. Taking and leaving the lock cost 5 us for the readers-writer lock, 0.5 us for a plain one and
0.7 us for none, against 2-15 ms per search. So the readers-writer lock: of the three, the one that is correct while
the index changes and still lets searches run side by side where cores are free (a plain lock never can). A GPU
copy of the index is searched by one thread at a time (FAISS's GPU indexes are not safe for concurrent use).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simsearch.collection.index_policy import IndexPolicy


class ReadWriteLock:
    """Many readers or one writer. Writer-preferring (a stream of searches cannot keep a change out for ever), and
    reentrant for the writing thread, which may also read: a change may call other changes, and search, inside."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer: int | None = None
        self._depth = 0
        self._waiting = 0

    @contextmanager
    def reading(self) -> Iterator[None]:
        if self._writer == threading.get_ident():
            yield  # the writing thread reads what it is changing
            return
        with self._cond:
            while self._writer is not None or self._waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._writer != me:
                self._waiting += 1
                try:
                    while self._writer is not None or self._readers:
                        self._cond.wait()
                finally:
                    self._waiting -= 1
                self._writer = me
            self._depth += 1
        try:
            yield
        finally:
            with self._cond:
                self._depth -= 1
                if not self._depth:
                    self._writer = None
                    self._cond.notify_all()


class StoreFollower:
    """Remembers the store generation that the in-memory index agrees with, and catches up when the store moved on.

    ``writing`` says whether this process holds the collection's writer lock: no other process can commit then, and
    this process keeps its index in line itself (it synchronised when it took the lock), so only the generation its
    own commits reached is noted. A catch-up reads the lock's state under the index guard, which the taking of the
    lock also passes through (`IndexPolicy.sync_with_store`), so the two never interleave.
    """

    def __init__(self, policy: IndexPolicy, writing: Callable[[], bool]) -> None:
        self.policy = policy
        self.writing = writing
        self.seen: int | None = policy.store.generation

    def forget(self) -> None:
        """Catch up at the next search whatever the generation says (after giving back the writer lock)."""
        self.seen = None

    def catch_up(self) -> bool:
        """Bring the index in line with the commits of other processes; returns whether it had to look."""
        store = self.policy.store
        if store.generation == self.seen:
            return False
        with self.policy.guard.writing():
            generation = store.generation  # read before the store is, so that a later commit is caught next time
            if generation == self.seen:
                return False
            if not self.writing():
                self.policy.sync_with_store()
            self.seen = generation
        return True
