"""The command line as a whole: help grouped into search and model commands with an example for each, help and a
one-line hint without FAISS installed, and 130 as the exit status of Ctrl-C."""

from __future__ import annotations

import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REPO, SAMPLE_PHOTOS

from cli.main import main

#: Runs the command line with `import faiss` failing, as on an install without the cpu or gpu extra.
WITHOUT_FAISS = "import sys; sys.modules['faiss'] = None; from cli.main import main; main(prog_name='simsearch')"


def _child(*args: str | Path, code: str | None = None, **kwargs: object) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "cli.main"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [*command, *(str(a) for a in args)], capture_output=True, text=True, env=env, timeout=300, check=False, **kwargs
    )  # type: ignore[call-overload]


def test_help_lists_search_and_model_commands_apart() -> None:
    text = CliRunner().invoke(main, ["--help"]).stdout
    search = text.index("Search commands:")
    models = text.index("Model commands:")
    assert search < models
    for name in ("index", "query", "info", "remove", "serve"):
        assert search < text.index(f"\n  {name} ") < models, name
    for name in ("train", "eval", "pretrain", "pack"):
        assert text.index(f"\n  {name} ") > models, name
    assert "Other commands" not in text


@pytest.mark.parametrize("name", sorted(main.commands))
def test_every_command_shows_an_example(name: str) -> None:
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0
    assert re.search(rf"^\s+simsearch {name}\b", result.stdout, re.M), result.stdout


def test_without_faiss_help_works_and_index_commands_say_which_extra_to_install(tmp_path: Path) -> None:
    assert "Search commands:" in _child("--help", code=WITHOUT_FAISS).stdout
    for name in sorted(main.commands):
        done = _child(name, "--help", code=WITHOUT_FAISS)
        assert done.returncode == 0 and "Usage: simsearch" in done.stdout, (name, done.stderr)

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes((SAMPLE_PHOTOS / "watch" / "image_0001.jpg").read_bytes())
    for args in (("index", photos), ("query", photos / "a.jpg"), ("info",), ("remove", photos / "a.jpg")):
        done = _child(*args, "-c", tmp_path / "col", code=WITHOUT_FAISS)
        assert done.returncode == 1, (args, done.stderr)
        assert done.stderr.strip() == (
            "Error: this command needs FAISS, which is not installed: pip install 'simsearch[cpu]' "
            "(or 'simsearch[gpu]' for NVIDIA GPUs)"
        ), args
    assert not (tmp_path / "col").exists()


def test_ctrl_c_exits_130(tmp_path: Path) -> None:
    """A query reading standard input that never ends, interrupted as a terminal's Ctrl-C does."""
    if not Path("/proc/self/syscall").exists() or platform.machine() != "x86_64":
        pytest.skip("needs Linux /proc on x86-64 (read is syscall 0) to see when the child waits on its input")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "query", "-", "-c", tmp_path / "col", "--json"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        # as in a terminal: a runner started in the background may hand its children SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 120
        while not Path(f"/proc/{child.pid}/syscall").read_text().startswith("0 0x0 "):  # read(0, ...)
            assert child.poll() is None and time.monotonic() < deadline, "the child never read its input"
            time.sleep(0.05)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
        if child.stdin:
            child.stdin.close()
    assert child.returncode == 130, err
    assert out == b"" and b"Traceback" not in err and b"Aborted" not in err
