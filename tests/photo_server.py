"""A local HTTP server on loopback for the tests of URL queries: the bundled samples as files, plus a few
misbehaving paths (`/slow` trickles bytes, `/hang` never answers in time, `/endless` sends bytes without a length)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
import time
from collections.abc import Iterator

from conftest import SAMPLES


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        if self.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(40):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)
        elif self.path == "/hang":
            time.sleep(3)
        elif self.path == "/endless":
            self.send_response(200)
            self.end_headers()  # no Content-Length: the body ends when the connection closes
            with contextlib.suppress(OSError):
                for _ in range(64):
                    self.wfile.write(b"\0" * 65536)
        else:
            super().do_GET()


@contextlib.contextmanager
def photo_server() -> Iterator[str]:
    """Serve the samples folder on 127.0.0.1; yields the base URL (no trailing slash)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(SAMPLES)))
    server.daemon_threads = True
    server.block_on_close = False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    """A loopback URL where nothing listens: connecting is refused at once, as offline."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/photo.jpg"
