"""`simsearch serve` as a real process on a free loopback port: it starts, becomes ready, answers a search over HTTP
and stops cleanly on SIGINT; it refuses unsafe or impossible starts with a one-line error."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import copy_collection
from serving import QUERIES, READ_TOKEN, env, free_port, multipart, request, serve_command, server_process

pytest.importorskip("uvicorn")


def test_a_real_server_process_searches_over_http_and_stops_cleanly(sample_collection: Path, tmp_path: Path) -> None:
    col = copy_collection(sample_collection, tmp_path / "col")
    with server_process(col, "--token", READ_TOKEN) as (base, proc):
        body, content_type = multipart("image", "q.jpg", (QUERIES / "sunflower_0042.jpg").read_bytes())
        auth = {"Authorization": f"Bearer {READ_TOKEN}"}
        status, headers, found = request(f"{base}/search?k=3", body, {"Content-Type": content_type, **auth})
        assert status == 200
        assert [Path(h["path"]).parent.name for h in found["results"]] == ["sunflower"] * 3
        assert "forward;dur=" in headers["server-timing"]
        assert request(f"{base}/search?k=3", body, {"Content-Type": content_type})[0] == 401
        assert request(f"{base}/info", headers=auth)[2]["images"] == 48
    assert proc.returncode == 0, proc.output
    assert f"serving {col} on {base}/" in proc.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "0.0.0.0"], "without a read token"),
        (["--token", "short"], "too short"),
        (["--token", READ_TOKEN, "--admin-token", READ_TOKEN], "must differ"),
    ],
)
def test_unsafe_starts_are_refused_with_one_line(sample_collection: Path, args: list[str], message: str) -> None:
    result = subprocess.run(
        serve_command("-c", str(sample_collection), "--port", str(free_port()), *args),
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr


def test_serving_a_folder_without_a_collection_says_how_to_build_one(tmp_path: Path) -> None:
    result = subprocess.run(
        serve_command("-c", str(tmp_path), "--port", str(free_port())), env=env(), capture_output=True, text=True
    )
    assert result.returncode == 1 and "simsearch index" in result.stderr
