"""Durable writes: every file simsearch writes goes through `atomic_path` (and every folder written as a whole through
`atomic_folder`), so a reader never sees half of one and a crash leaves either the old one or the new one, plus at most
a temporary one that the next writer removes. A write that the disk refuses (no space, a quota, an I/O error, a
read-only file system) leaves the old one too and raises StorageError, one line naming the cause and the folder."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from simsearch.errors import StorageError

__all__ = [
    "atomic_folder",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "ensure_free_space",
    "refused_write",
    "remove_stale_temps",
]

#: `.NAME.PID.RANDOM.tmp`: the pid lets a later writer tell a dead process's leftover from a live writer's file.
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once at import, before any threads of ours run
    os.umask(mask)
    return mask


_UMASK = _read_umask()

#: Errors that say the disk refused a write, not that the caller asked for something wrong: a full disk, a quota, a
#: failing device, a file system mounted read-only, a file past the file system's size limit.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG})
#: Below this much free space a failed write is put down to the full disk, whatever the writer reported (LMDB reports
#: a short write as an I/O error, faiss as a bare message).
LOW_SPACE_BYTES = 1 << 20


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _size(n: int) -> str:
    """Bytes for people, in the binary units of the `--max-memory` option."""
    scaled, unit = float(n), "bytes"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if scaled < 1024:
            break
        scaled, unit = scaled / 1024, bigger
    return f"{n} bytes" if unit == "bytes" else f"{scaled:.1f} {unit}"


def _refusal(code: int, folder: Path, detail: str = "") -> StorageError:
    cause = os.strerror(code)
    free = _free_bytes(folder)
    if code in (errno.ENOSPC, errno.EDQUOT) and free is not None:
        detail = f"{detail}, {_size(free)} free" if detail else f"{_size(free)} free"
    what = f"{cause} ({detail})" if detail else cause
    hint = "; free some space and run again" if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else ""
    return StorageError(code, cause, str(folder), f"cannot write in {folder}: {what}{hint}")


def refused_write(folder: str | os.PathLike[str], exc: BaseException) -> StorageError | None:
    """The one-line StorageError that a failed write into `folder` amounts to when the disk refused it (see
    DISK_ERRNOS), else None (a caller's mistake or a bug: let the original error through).

    A writer that reports no errno (LMDB's `mdb_txn_commit: Input/output error` after a short write, faiss's
    `write error`) is put down to a full disk when `folder` has less than LOW_SPACE_BYTES free, and an LMDB I/O
    error stays an I/O error otherwise.
    """
    if isinstance(exc, StorageError):
        return exc
    base = Path(folder)
    code = exc.errno if isinstance(exc, OSError) else None
    if code is None or code == errno.EIO:
        free = _free_bytes(base)
        if free is not None and free < LOW_SPACE_BYTES:
            code = errno.ENOSPC
        elif code is None:  # the cause as the writer spelled it, if it names one
            code = next((c for c in sorted(DISK_ERRNOS) if os.strerror(c) in str(exc)), None)
    return None if code not in DISK_ERRNOS else _refusal(code, base)


def ensure_free_space(folder: str | os.PathLike[str], nbytes: int) -> None:
    """Refuse a write of about `nbytes` into `folder` up front (one StorageError line, before the write starts) when
    the disk lacks that much room plus a margin: a sixteenth for an estimate's error, and LOW_SPACE_BYTES for the
    small files written after it. With `nbytes` 0, it checks that a write just made did not fill the disk. A folder
    whose free space cannot be read passes: the write itself will tell."""
    need = nbytes + nbytes // 16 + LOW_SPACE_BYTES
    free = _free_bytes(Path(folder))
    if free is not None and free < need:
        raise _refusal(errno.ENOSPC, Path(folder), f"about {_size(need)} needed")


def temp_path_for(path: Path) -> Path:
    """A temporary name beside `path` (same folder, so the final rename stays on one file system)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` survive a power cut, not only the renamed file's bytes."""
    if os.name != "posix":  # folders cannot be opened for fsync on Windows
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; on a clean exit fsync it and rename it over `path`.

    On an exception the temporary file is removed and `path` is left as it was. The file gets the permissions a
    plain `open` would give (not mkstemp's 0600), since collections and checkpoints are shared like any file.
    """
    target = Path(path)
    tmp = temp_path_for(target)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDWR)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        _raise_refused(target.parent, exc)
        raise
    fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a new, empty temporary folder beside `path` to fill; on a clean exit rename it to `path`.

    `path` must then be missing or an empty folder (clear an old one at the end of the block): a folder cannot be
    renamed over a full one. On an exception, the rename's included, the temporary folder and what it holds are
    removed and `path` is left as it was. What goes inside is the caller's to flush (an LMDB sync, for example).
    """
    target = Path(path)
    tmp = temp_path_for(target)
    try:
        tmp.mkdir()
    except OSError as exc:
        _raise_refused(target.parent, exc)
        raise
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_refused(target.parent, exc)
        raise
    fsync_dir(target.parent)


def _raise_refused(folder: Path, exc: BaseException) -> None:
    """Re-raise an OSError of the disk (DISK_ERRNOS) as its one-line StorageError; anything else goes on as it is."""
    if isinstance(exc, OSError) and not isinstance(exc, StorageError) and exc.errno in DISK_ERRNOS:
        refused = refused_write(folder, exc)
        if refused is not None:
            raise refused from exc


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace `path` with `data` durably (see `atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Replace `path` with UTF-8 `text` durably (see `atomic_path`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], data: Any, *, sort_keys: bool = False) -> None:
    """Replace `path` with `data` as indented JSON durably (see `atomic_path`)."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=sort_keys) + "\n")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike[str], name: str | None = None) -> list[Path]:
    """Remove the temporary files and folders that `atomic_path` and `atomic_folder` left in `folder` when their
    process died (only those for `name`, when given); return what was removed.

    A file whose process is still running is kept: it may be a live writer's. Call this while holding the folder's
    writer lock, so that a recycled pid cannot belong to a writer of the same folder.
    """
    removed: list[Path] = []
    base = Path(folder)
    try:
        entries = list(base.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP.match(entry.name)
        if m is None or (name is not None and m["name"] != name) or _pid_alive(int(m["pid"])):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return removed
