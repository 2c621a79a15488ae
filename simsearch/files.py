"""Files before they are images: scanning a folder tree in a stable order, hashing a file's bytes, and opening only
regular files of a bounded size (a named pipe or a device would hang a reader)."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from simsearch.errors import ImageError

__all__ = ["MAX_FILE_BYTES", "file_sha256", "open_regular_file", "scan_folder", "special_kind"]

#: No image file read is larger: a bigger one is refused before a byte of it is decoded.
MAX_FILE_BYTES: int = 1 << 30
_HASH_CHUNK = 1 << 20


def scan_folder(root: str | os.PathLike, *, unreadable: list[Path] | None = None) -> Iterator[Path]:
    """Yield every regular file under `root`, recursively, in sorted order.

    A sub-folder that cannot be listed is logged and skipped, and appended to `unreadable` when given: a caller that
    mirrors the tree must not take its files for deleted.

    Paths are absolute, under the resolved `root`. Hidden entries (name starting with ".") are skipped, symlinked
    folders are not followed (no loops, no escaping the tree) but symlinked files are yielded under their own name;
    named pipes, devices, sockets, dangling links and symlink loops are logged and skipped.
    Image-ness is not judged here: a photo with a wrong or missing extension must still reach `probe_image`.
    Order is lexicographic by path component, so two scans of an unchanged tree agree. (`simsearch.scanning.walk`
    is the same scan with ignore rules and junk folders left out, counting what it skips.)

    Raises:
        FileNotFoundError: `root` does not exist.
        NotADirectoryError: `root` is not a folder.
    """
    from simsearch.scanning import ScanScope, ScanTally, walk

    tally = ScanTally(unreadable_folders=unreadable if unreadable is not None else [], warn=True)
    yield from walk(root, ScanScope.everything(), tally)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks into one reused buffer (flat memory for any size)."""
    digest = hashlib.sha256()
    buffer = bytearray(_HASH_CHUNK)
    view = memoryview(buffer)
    with open_regular_file(path) as f:
        while n := f.readinto(buffer):  # type: ignore[attr-defined]
            digest.update(view[:n])
    return digest.hexdigest()


def open_regular_file(path: str | os.PathLike, *, max_bytes: int = MAX_FILE_BYTES) -> IO[bytes]:
    """Open `path` (after following links) for binary reading, only if it is a regular file of at most `max_bytes`.

    The open itself never blocks: a named pipe, a device such as `/dev/zero` or a socket (directly or behind a link)
    would hang a reader or feed it endless bytes, so it is refused before a byte is read.

    Raises:
        ImageError: not a regular file, too large, or unreadable (one-line reason).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ImageError(f"not a file path: {type(path).__name__}")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except IsADirectoryError as exc:
        raise ImageError("not a file (a folder)") from exc
    except OSError as exc:
        raise ImageError(f"cannot read file: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ImageError("not a file (a folder)")
        if not stat.S_ISREG(info.st_mode):
            raise ImageError(f"not a regular file (a {special_kind(info.st_mode)})")
        if info.st_size > max_bytes:
            raise ImageError(f"file too large: {info.st_size:,} bytes (limit {max_bytes:,})")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def special_kind(mode: int) -> str:
    """What a file that is neither a regular file nor a folder is, in words ("named pipe", "device", "socket")."""
    if stat.S_ISFIFO(mode):
        return "named pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"
