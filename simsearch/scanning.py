"""Which files a folder scan reaches, and an account of what it left out.

Left out: hidden entries; junk folders (NAS thumbnail folders, recycle bins, version control, package caches); the
folders a scan is told never to enter (a collection's own); what `--exclude` patterns and `.simsearchignore` files
(gitignore syntax, read with `pathspec`) name. Named pipes, devices, sockets, dangling links, symlink loops and
symlinked folders are never opened, only counted. Image-ness is not judged here (a photo without an extension must
still reach the decoder); `is_not_an_image` tells afterwards a file that is no image at all (a sidecar, a video, a
note) from an image that failed to decode.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from simsearch.errors import CollectionError
from simsearch.files import special_kind
from simsearch.images import EMPTY_FILE, NOT_AN_IMAGE

log = logging.getLogger(__name__)

#: Folders skipped by default, by name: Synology and QNAP thumbnails and recycle bins, Windows system folders,
#: version control and package caches (hidden folders such as `.git` are skipped anyway).
JUNK_FOLDERS: tuple[str, ...] = (
    "@eaDir",
    "#recycle",
    "#snapshot",
    "$RECYCLE.BIN",
    "System Volume Information",
    "node_modules",
    "__pycache__",
    ".git",
)
#: A file of gitignore patterns, read in every scanned folder; its patterns apply below that folder.
IGNORE_FILE = ".simsearchignore"


@dataclass(frozen=True)
class ScanScope:
    """What a scan leaves out. The default is what `simsearch index` does; `everything` leaves out hidden entries
    only."""

    exclude: tuple[str, ...] = ()  # gitignore patterns, relative to the scanned folder; they win over ignore files
    ignore_file: str | None = IGNORE_FILE
    skip_names: tuple[str, ...] = JUNK_FOLDERS
    hidden_folders: bool = False
    never: tuple[str, ...] = ()  # folders never entered, wherever they are met

    @classmethod
    def everything(cls) -> ScanScope:
        return cls(ignore_file=None, skip_names=())

    def all_folders(self) -> ScanScope:
        """Also enter hidden and junk folders (hidden files stay out)."""
        return replace(self, skip_names=(), hidden_folders=True)

    def never_entering(self, folder: str | os.PathLike[str]) -> ScanScope:
        return replace(self, never=(*self.never, os.fspath(folder)))


@dataclass
class ScanTally:
    """What a scan did not yield: entries that rules excluded, junk folders it did not enter, and files that are no
    regular files (kind, e.g. "named pipe", "dangling link", "symlink loop"). `warn` logs each of those at WARNING
    (a bare scan that reports to nobody else), else at DEBUG (a run that reports them itself)."""

    excluded: int = 0
    skipped_folders: list[str] = field(default_factory=list)
    special: list[tuple[str, str]] = field(default_factory=list)
    unreadable_folders: list[Path] = field(default_factory=list)
    warn: bool = False

    def note(self, path: str, kind: str) -> None:
        self.special.append((path, kind))
        message = "not following %s: %s (link its files, or copy it in)" if kind == "symlinked folder" else None
        log.log(logging.WARNING if self.warn else logging.DEBUG, message or "skipping %s: %s", path, kind)


def compile_patterns(lines: Iterable[str], source: str | None = "--exclude") -> object:
    """A gitignore-syntax matcher of `lines` (a pattern `pathspec` refuses is a CollectionError, naming `source`
    when given)."""
    import pathspec

    try:
        return pathspec.GitIgnoreSpec.from_lines(list(lines))
    except (ValueError, TypeError) as exc:
        raise CollectionError(f"{source}: {exc}" if source else str(exc)) from None


def walk(
    root: str | os.PathLike[str], scope: ScanScope | None = None, tally: ScanTally | None = None
) -> Iterator[Path]:
    """Yield every regular file under `root` that `scope` lets in, recursively, in sorted order (absolute paths under
    the resolved `root`; symlinked files under their own name, symlinked folders never followed). What is left out
    is counted in `tally`. A sub-folder that cannot be listed is counted and appended to `tally.unreadable_folders`:
    a caller that mirrors the tree must not take its files for deleted.

    Raises:
        FileNotFoundError: `root` does not exist.
        NotADirectoryError: `root` is not a folder.
        CollectionError: a pattern of `scope.exclude` or of an ignore file is malformed.
    """
    scope = scope or ScanScope()
    tally = tally if tally is not None else ScanTally()
    base = Path(root).expanduser()
    if not base.exists():
        raise FileNotFoundError(f"folder not found: {base}")
    if not base.is_dir():
        raise NotADirectoryError(f"not a folder: {base}")
    base = base.resolve()
    walker = _Walker(base, scope, tally)
    yield from walker.files()


class _Walker:
    """An explicit stack of sorted entry iterators, each with the ignore rules that hold in its folder: deep trees
    cannot hit the recursion limit."""

    def __init__(self, base: Path, scope: ScanScope, tally: ScanTally) -> None:
        self.base = base
        self.scope = scope
        self.tally = tally
        self.command_line = (str(base), compile_patterns(scope.exclude)) if scope.exclude else None
        self.never = set()
        for folder in scope.never:
            try:
                info = os.stat(folder)
            except OSError:
                continue
            self.never.add((info.st_dev, info.st_ino))

    def files(self) -> Iterator[Path]:
        Rules = tuple[tuple[str, object], ...]
        root_rules: Rules = self._rules_of(str(self.base), ())
        stack: list[tuple[Iterator[os.DirEntry[str]], Rules]] = [(iter(self._entries(self.base, True)), root_rules)]
        while stack:
            entries, rules = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    if self._enters(entry, rules):
                        stack.append((iter(self._entries(Path(entry.path), False)), self._rules_of(entry.path, rules)))
                    continue
                if entry.name.startswith("."):
                    continue
                if self._ignored(entry.path, rules, is_dir=False):
                    self.tally.excluded += 1
                    continue
                if entry.is_file(follow_symlinks=False):
                    yield Path(entry.path)
                    continue
                kind = self._kind(entry)
                if kind is None:
                    yield Path(entry.path)  # a link to a regular file
                else:
                    self.tally.note(entry.path, kind)
            except OSError as exc:
                log.debug("cannot look at %s: %s", entry.path, exc.strerror or exc)
                self.tally.note(entry.path, "unreadable entry")

    def _enters(self, entry: os.DirEntry[str], rules: tuple[tuple[str, object], ...]) -> bool:
        name = entry.name
        if name.startswith(".") and not self.scope.hidden_folders:
            return False
        info = entry.stat(follow_symlinks=False)
        if (info.st_dev, info.st_ino) in self.never:
            log.debug("not entering %s: never scanned", entry.path)
            return False
        if name in self.scope.skip_names:
            self.tally.skipped_folders.append(entry.path)
            log.debug("not entering %s: a junk folder", entry.path)
            return False
        if self._ignored(entry.path, rules, is_dir=True):
            self.tally.excluded += 1
            return False
        return True

    @staticmethod
    def _kind(entry: os.DirEntry[str]) -> str | None:
        """None for a link to a regular file, else what the entry is instead."""
        if entry.is_symlink():
            try:
                mode = os.stat(entry.path).st_mode
            except FileNotFoundError:
                return "dangling link"
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    return "symlink loop"
                raise
            if stat.S_ISREG(mode):
                return None
            if stat.S_ISDIR(mode):
                return "symlinked folder"
        else:
            mode = entry.stat(follow_symlinks=False).st_mode
        return special_kind(mode)

    def _entries(self, folder: Path, is_root: bool) -> list[os.DirEntry[str]]:
        """A folder's entries sorted by name; an unreadable sub-folder is counted and skipped, an unreadable root
        raises."""
        try:
            with os.scandir(folder) as it:
                return sorted(it, key=lambda e: e.name)
        except OSError as exc:
            if is_root:
                raise
            self.tally.unreadable_folders.append(folder)
            log.debug("cannot list %s: %s", folder, exc.strerror or exc)
            self.tally.note(str(folder), "unreadable folder")
            return []

    def _rules_of(self, folder: str, outer: tuple[tuple[str, object], ...]) -> tuple[tuple[str, object], ...]:
        """The rules that hold in `folder`: its own ignore file's (checked first), then the outer folders'."""
        name = self.scope.ignore_file
        if name is None:
            return outer
        path = os.path.join(folder, name)
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except (FileNotFoundError, NotADirectoryError):
            return outer
        except OSError as exc:
            raise CollectionError(f"cannot read {path}: {exc.strerror or exc}") from None
        return ((folder, compile_patterns(lines, path)), *outer)

    def _ignored(self, path: str, rules: tuple[tuple[str, object], ...], *, is_dir: bool) -> bool:
        """The first rule set with an opinion decides (command line first, then the nearest ignore file), as
        in git; a negated pattern (`!keep.jpg`) takes a file back in."""
        for folder, spec in (self.command_line, *rules) if self.command_line else rules:
            relative = path[len(folder) + 1 :].replace(os.sep, "/") + ("/" if is_dir else "")
            decision = spec.check_file(relative).include  # type: ignore[attr-defined]
            if decision is not None:
                return bool(decision)
        return False


def claims_to_be_an_image(path: str | os.PathLike[str]) -> bool:
    """Whether a file's extension is one that Pillow reads or writes as an image (.jpg, .png, .tif, ...)."""
    from PIL import Image

    return os.path.splitext(os.fspath(path))[1].lower() in Image.registered_extensions()


def is_not_an_image(path: str | os.PathLike[str], reason: str) -> bool:
    """A skipped file that no image format recognised (or an empty one) and whose name does not claim to be an image
    either: a sidecar (.xmp, .aae, .json), a video, a note. Such files are counted, not reported one by one; a `.jpg`
    that is not an image, or is empty, is a damaged photo, and is named."""
    return reason in (NOT_AN_IMAGE, EMPTY_FILE) and not claims_to_be_an_image(path)
