"""What the command-line tests share: running a command in process (click's CliRunner) or in a child process whose
stdout is a pipe, and the checks of a success and of a one-line error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner, Result
from conftest import REPO

from cli.main import main


def run(*args: str | Path | int | float, env: dict[str, str] | None = None, input: bytes | None = None) -> Result:  # noqa: A002
    return CliRunner().invoke(main, [str(a) for a in args], env=env, input=input)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result


def one_line_error(result: Result, exit_code: int = 1) -> str:
    """The error a user sees: one line on stderr, no traceback, the given exit status."""
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error"), result.stderr
    return lines[0]


def cli(*args: str | Path | int, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """The command line in a child process, its stdout a pipe (not a TTY)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "cli.main", *(str(a) for a in args)]
    return subprocess.run(command, input=stdin, capture_output=True, env=env, timeout=300, check=False)
