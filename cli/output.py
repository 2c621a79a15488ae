"""How results reach a terminal or a pipe: one option set for the output mode, and the writers of each mode.

Modes: the table (a header only on a terminal; control characters in names shown escaped), bare paths one a line
(`--paths`/`-f`) or NUL-terminated (`-0`), tab-separated values (`--tsv`), one JSON document (`--json`) or one JSON
line per query (`--jsonl`). Scores are printed with four decimals in every mode.

Names are bytes on POSIX; a name that is not UTF-8 reaches Python with surrogate escapes. `--paths`, `-0` and `--tsv`
write the exact bytes; the table escapes each such byte as `\\xNN`; JSON, which must be UTF-8, writes the name with
U+FFFD for each such byte and adds the exact bytes in base64 under the same key plus `_b64` (see `json_safe`).
"""

from __future__ import annotations

import base64
import enum
import functools
import json
import os
import sys
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from simsearch.collection import SearchResult

F = TypeVar("F", bound=Callable[..., Any])

SCORE_DECIMALS = 4


class Mode(enum.Enum):
    TABLE = "table"
    PATHS = "paths"
    NUL = "nul"
    TSV = "tsv"
    JSON = "json"
    JSONL = "jsonl"


_MODE_FLAGS = (
    (Mode.PATHS, ("-f", "--paths"), "Print only the paths, one a line (for xargs -d '\\n')."),
    (Mode.NUL, ("-0", "--null"), "Print only the paths, each ended by a NUL byte (for xargs -0)."),
    (Mode.TSV, ("--tsv",), "Tab-separated rank, score, id, path (tab, newline and backslash in names escaped)."),
    (Mode.JSON, ("--json",), "One JSON document on stdout."),
    (Mode.JSONL, ("--jsonl",), "One JSON object a line, one line a query."),
)


def output_options(func: F) -> F:
    """Add the mode flags to a command; it receives `output` (a Mode) instead. Two modes at once are a usage error."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        chosen = [mode for mode, names, _ in _MODE_FLAGS if kwargs.pop(f"out_{mode.value}")]
        if len(chosen) > 1:
            raise click.UsageError(f"choose one output mode, not {' and '.join(_flag(m) for m in chosen)}")
        return func(*args, output=chosen[0] if chosen else Mode.TABLE, **kwargs)

    for mode, names, text in reversed(_MODE_FLAGS):
        wrapper = click.option(*names, f"out_{mode.value}", is_flag=True, help=text)(wrapper)
    return wrapper  # type: ignore[return-value]


def _flag(mode: Mode) -> str:
    return next(names[-1] for m, names, _ in _MODE_FLAGS if m is mode)


def stdout_is_tty() -> bool:
    """Whether a person reads stdout (headers and escapes are for people; a pipe gets data only)."""
    return sys.stdout.isatty()


# -- text -------------------------------------------------------------------------------------------------------------

_NAMED_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


def printable(text: str) -> str:
    """`text` safe for a terminal: control characters (newline, escape sequences, bidi overrides) and bytes that
    are not UTF-8 written as `\\n`, `\\xNN` or `\\uNNNN`, so a file name can neither break a table row nor drive the
    terminal. Everything else, backslashes included, is left as it is."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, kept by the file system decoding
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch in _NAMED_ESCAPES:
            out.append(_NAMED_ESCAPES[ch])
        elif ch in _BIDI_CONTROLS or unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp"):
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def name_bytes(text: str) -> bytes:
    """A name's exact bytes (surrogate escapes back to the bytes they stand for)."""
    try:
        return os.fsencode(text)
    except UnicodeEncodeError:  # a lone surrogate that came from elsewhere than the file system
        return text.encode("utf-8", "surrogatepass")


def _tsv_field(text: str) -> bytes:
    escaped = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return name_bytes(escaped)


# -- JSON -------------------------------------------------------------------------------------------------------------


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _replaced(text: str) -> str:
    return name_bytes(text).decode("utf-8", "replace")


def json_safe(value: Any) -> Any:
    """`value` with every string valid UTF-8: a string holding bytes that are not UTF-8 (a file name from an old
    archive) keeps its key with U+FFFD for each bad byte, and its exact bytes go beside it, base64-encoded, under
    the key plus `_b64` (for a list of strings, a list as long with null for the strings that needed nothing).
    `os.fsdecode(base64.b64decode(item["path_b64"]))` gives the name back."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out[key] = json_safe(item)
            if isinstance(item, str) and not _is_utf8(item):
                out[f"{key}_b64"] = base64.b64encode(name_bytes(item)).decode("ascii")
            elif isinstance(item, list) and any(isinstance(s, str) and not _is_utf8(s) for s in item):
                out[f"{key}_b64"] = [
                    base64.b64encode(name_bytes(s)).decode("ascii") if isinstance(s, str) and not _is_utf8(s) else None
                    for s in item
                ]
        return out
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, str):
        return value if _is_utf8(value) else _replaced(value)
    return value


def echo_json(value: Any, *, indent: int | None = 2) -> None:
    """Write `value` as JSON in UTF-8 (see `json_safe`), whatever the locale."""
    text = json.dumps(json_safe(value), ensure_ascii=False, indent=indent)
    click.echo(text.encode("utf-8"))


# -- results ----------------------------------------------------------------------------------------------------------


@dataclass
class Answer:
    """One query's result list, with what the JSON modes say of the query (`details`)."""

    query: str
    results: list[SearchResult]
    details: dict[str, Any] = field(default_factory=dict)
    #: What each score means under the collection's near-duplicate calibration ("p>=0.99 same"), when it has one.
    meanings: list[str | None] = field(default_factory=list)


def result_dict(r: SearchResult, meaning: str | None = None) -> dict[str, Any]:
    row = {
        "rank": r.rank,
        "id": r.id,
        "score": round(float(r.score), SCORE_DECIMALS),
        "path": r.path,
        "width": r.width,
        "height": r.height,
    }
    if meaning:
        row["meaning"] = meaning
    return row


def _meanings(answer: Answer) -> list[str | None]:
    return answer.meanings if len(answer.meanings) == len(answer.results) else [None] * len(answer.results)


def _answer_dict(answer: Answer, collection: str) -> dict[str, Any]:
    return {
        "query": answer.query,
        **answer.details,
        "collection": collection,
        "results": [result_dict(r, m) for r, m in zip(answer.results, _meanings(answer), strict=True)],
    }


def print_answers(mode: Mode, answers: Sequence[Answer], collection: str) -> None:
    """Print the result lists of one command in `mode` (several lists: one per query of `query --each`)."""
    tty = stdout_is_tty()
    if mode is Mode.JSON:
        if len(answers) == 1:
            echo_json(_answer_dict(answers[0], collection))
        else:
            echo_json({"collection": collection, "queries": [_answer_dict(a, collection) for a in answers]})
    elif mode is Mode.JSONL:
        for answer in answers:
            echo_json(_answer_dict(answer, collection), indent=None)
    elif mode in (Mode.PATHS, Mode.NUL):
        end = b"\0" if mode is Mode.NUL else b"\n"
        for answer in answers:
            for r in answer.results:
                path = printable(r.path).encode("utf-8") if tty and mode is Mode.PATHS else name_bytes(r.path)
                click.echo(path + end, nl=False)
    elif mode is Mode.TSV:
        several = len(answers) > 1
        if tty:
            click.echo("\t".join((["query"] if several else []) + ["rank", "score", "id", "path"]))
        for answer in answers:
            lead = _tsv_field(answer.query) + b"\t" if several else b""
            for r in answer.results:
                row = f"{r.rank}\t{r.score:.{SCORE_DECIMALS}f}\t{r.id}\t".encode()
                click.echo(lead + row + _tsv_field(r.path))
    else:
        for i, answer in enumerate(answers):
            if len(answers) > 1:
                click.echo(("\n" if i else "") + f"query {printable(answer.query)}")
            meanings = _meanings(answer)
            width = max((len(m) for m in meanings if m), default=0)
            column = f"{'meaning':<{width}}  " if width else ""
            if tty:
                click.echo(f"{'rank':>4}  {'score':>{SCORE_DECIMALS + 2}}  {column}path")
            for r, m in zip(answer.results, meanings, strict=True):
                said = f"{m or '':<{width}}  " if width else ""
                click.echo(f"{r.rank:>4}  {r.score:.{SCORE_DECIMALS}f}  {said}{printable(r.path)}")
