"""Helpers of the server tests: an app over a private copy of the sample collection, run in-process with FastAPI's
TestClient until its model is ready, and encoded images that are bad in one way each."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
from conftest import REPO, SAMPLES
from PIL import Image

QUERIES = SAMPLES / "queries"
READ_TOKEN = "read-token-0123"
ADMIN_TOKEN = "admin-token-4567"


def settings_for(collection: Path, **overrides):
    from server import Settings

    base = Settings(collection=collection, device="cpu", warm_batch_sizes=(1,))
    return replace(base, **overrides)


def wait_ready(client, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/health/ready").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"the server was not ready within {timeout} s")


@contextmanager
def serving(collection: Path, *, ready: bool = True, **overrides) -> Iterator:
    """A TestClient over `collection` (started, and ready unless `ready=False`)."""
    from fastapi.testclient import TestClient

    from server import create_app

    app = create_app(settings_for(collection, **overrides))
    with TestClient(app, raise_server_exceptions=False) as client:
        if ready:
            wait_ready(client)
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def encoded(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def noise_image(size: tuple[int, int] = (96, 64), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header announces `width` x `height` pixels (the pixel data of a tiny image follows): refused
    from its header alone."""
    data = bytearray(encoded(Image.new("RGB", (4, 4))))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    import zlib

    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17 : ihdr + 21] = crc.to_bytes(4, "big")
    return bytes(data)


# ------------------------------------------------------------------------------------ a real `simsearch serve` process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli.main", "serve", *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "SIMSEARCH_TOKEN": "", "SIMSEARCH_ADMIN_TOKEN": ""}


def request(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict, dict]:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def multipart(name: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def wait_until_ready(proc: subprocess.Popen, base: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else "the server exited"
        try:
            if request(f"{base}/health/ready")[0] == 200:
                return
        except (urllib.error.URLError, ConnectionError):
            pass
        assert time.monotonic() < deadline, "not ready in time"
        time.sleep(0.2)


@contextmanager
def server_process(collection: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """`simsearch serve` over `collection` on a free loopback port, ready; stopped with SIGINT on exit.

    Yields the base URL and the process (its output is captured: read it after the block).
    """
    import signal

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = serve_command("-c", str(collection), "--port", str(port), "--device", "cpu", *args)
    proc = subprocess.Popen(command, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_ready(proc, base)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        proc.output = proc.communicate(timeout=60)[0]  # type: ignore[attr-defined]
