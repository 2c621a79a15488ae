"""simsearch's HTTP service: `create_app(Settings(...))` gives a FastAPI app over one collection.

It imports the library; the library never imports it. `simsearch serve` runs it with uvicorn.
"""

from __future__ import annotations

from server.app import create_app
from server.settings import Settings, SettingsError

__all__ = ["Settings", "SettingsError", "create_app"]
