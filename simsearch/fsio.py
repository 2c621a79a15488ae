"""Durable writes: every file simsearch writes goes through `atomic_path` (and every folder written as a whole through
`atomic_folder`), so a reader never sees half of one and a crash leaves either the old one or the new one, plus at most
a temporary one that the next writer removes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_folder",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "remove_stale_temps",
]

#: `.NAME.PID.RANDOM.tmp`: the pid lets a later writer tell a dead process's leftover from a live writer's file.
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once at import, before any threads of ours run
    os.umask(mask)
    return mask


_UMASK = _read_umask()


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
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
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
    tmp.mkdir()
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(target.parent)


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
