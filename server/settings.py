"""What a server is started with: one frozen value that `create_app` reads, never module-level state."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

TOKEN_ENV = "SIMSEARCH_TOKEN"
ADMIN_TOKEN_ENV = "SIMSEARCH_ADMIN_TOKEN"
#: Decoding is what a request can make expensive: 40 MP is a large phone photo, ~120 MB as RGB while decoded.
DEFAULT_MAX_PIXELS = 40_000_000


class SettingsError(ValueError):
    """Settings that would make an unsafe or unusable server (the command line turns it into a one-line error)."""


@dataclass(frozen=True)
class Settings:
    """Everything `create_app` needs; the defaults are the safe ones (loopback, no writes, no CORS)."""

    collection: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    #: Read access: without it, reads are open (allowed on a loopback address only).
    token: str | None = None
    #: Write access (add, delete); without it the server refuses every write.
    admin_token: str | None = None
    #: Adding by a path on the server is allowed for files under this folder only; without it, by upload only.
    allow_root: Path | None = None
    cors_origins: tuple[str, ...] = ()
    max_request_mb: float = 20.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    device: str = "auto"
    #: Dynamic batching: concurrent queries share one forward pass of at most this many images...
    max_batch: int = 32
    #: ...waiting at most this long for more to arrive while other queries are still being decoded.
    batch_wait_ms: float = 5.0
    #: Forward passes run at once. None: one per core on a CPU, each on one torch thread (set for the whole process:
    #: a server owns it), one on a GPU. 1 leaves torch's thread count as it is.
    forward_workers: int | None = 1
    max_k: int = 1000
    #: Images of one batch request (POST /search/batch) and ids or vectors of one JSON batch.
    max_batch_request: int = 64
    #: Where uploaded images are kept (named by content); default: the collection's `uploads/` folder.
    upload_dir: Path | None = None
    #: Forward batch sizes run once at start-up, so the first queries pay no kernel set-up.
    warm_batch_sizes: tuple[int, ...] = field(default=(1, 32))

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * 1024 * 1024)

    def check(self) -> None:
        """Refuse settings that would expose the collection or cannot work."""
        for name, value in (("token", self.token), ("admin token", self.admin_token)):
            if value is not None and len(value) < 8:
                raise SettingsError(f"the {name} is too short: use at least 8 characters (e.g. `openssl rand -hex 16`)")
        if self.token is not None and self.token == self.admin_token:
            raise SettingsError("the read token and the admin token must differ")
        if not is_loopback(self.host) and not self.token:
            raise SettingsError(
                f"refusing to listen on {self.host} without a read token: anyone who can reach it could search the "
                f"collection; pass --token (or set {TOKEN_ENV}), or listen on 127.0.0.1"
            )
        if self.max_request_mb <= 0 or self.max_pixels < 1 or self.max_batch < 1 or self.max_k < 1:
            raise SettingsError("size limits must be positive")
        if self.forward_workers is not None and self.forward_workers < 1:
            raise SettingsError("at least one forward worker is needed")
        if self.batch_wait_ms < 0:
            raise SettingsError("the batch wait cannot be negative")
        if self.allow_root is not None and not Path(self.allow_root).is_dir():
            raise SettingsError(f"--allow-root must be an existing folder: {self.allow_root}")


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything
