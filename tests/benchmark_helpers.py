"""What the benchmark tests share: PNG and record checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.record import ENVIRONMENT_KEYS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_record(out: Path, suite: str) -> dict[str, Any]:
    """The files of one suite run are there and well formed; returns the parsed record."""
    from PIL import Image

    record = json.loads((out / f"{suite}.json").read_text())
    assert record["suite"] == suite
    assert set(ENVIRONMENT_KEYS) <= set(record["environment"]), set(ENVIRONMENT_KEYS) - set(record["environment"])
    env = record["environment"]
    assert env["device"] in ("cpu", "cuda") or env["device"].startswith("cuda:")
    if env["gpu"] is None:
        assert env["device"] == "cpu" and "no GPU" in env["note"]
    assert {"commit", "dirty"} <= set(record["git"])
    assert record["date"] and record["parameters"]["tiny"] is True
    assert record["table"] and all(isinstance(row, dict) for row in record["table"])
    assert record["figures"], "a suite draws at least one PNG"
    for name in record["figures"]:
        path = out / name
        assert path.read_bytes()[:8] == PNG_MAGIC, path
        with Image.open(path) as im:
            im.verify()
    markdown = (out / f"{suite}.md").read_text()
    assert markdown.startswith(f"## {suite}") and "|---|" in markdown
    return record
