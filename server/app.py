"""`create_app(settings)`: the FastAPI application of one server, with everything it holds on `app.state`."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from server.edge import EdgeMiddleware
from server.errors import install_error_handlers
from server.metrics import Metrics
from server.routers import images, page, search, status
from server.service import SearchService
from server.settings import Settings

log = logging.getLogger(__name__)

DESCRIPTION = """Image-similarity search over one simsearch collection.

Search with a photo (`POST /search`), several (`POST /search/batch`), a stored image (`GET /images/{id}/similar`,
`POST /search/ids`) or vectors (`POST /search/vectors`). Every response carries its stage timings in a
`Server-Timing` header; every error is `{"error": "..."}`. With a token, send `Authorization: Bearer TOKEN`;
adds and deletes need the admin token."""


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app; nothing is opened until it starts (its lifespan): the collection first, then, in the background,
    the model, so that `/health/live` answers at once and `/health/ready` once the model is warm."""
    settings = settings or Settings()
    settings.check()
    metrics = Metrics()
    service = SearchService(settings)

    def on_batch(images: int, seconds: float) -> None:
        metrics.batch_images.observe(images)
        metrics.forward_seconds.observe(seconds)

    service.on_batch = on_batch

    def load() -> None:
        service.load()
        metrics.ready.set(1.0 if service.ready.is_set() else 0.0)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(service.open)
        metrics.track_images(lambda: len(service.col) if service.col is not None else 0)
        loader = threading.Thread(target=load, name="simsearch-load", daemon=True)
        loader.start()
        try:
            yield
        finally:
            await run_in_threadpool(loader.join)
            service.close()

    from simsearch import __version__

    app = FastAPI(
        title="simsearch",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.service = service
    app.state.metrics = metrics
    install_error_handlers(app)
    for module in (search, images, status, page):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=page.STATIC), name="static")
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Server-Timing"],
        )
    app.add_middleware(EdgeMiddleware, max_body=settings.max_request_bytes, metrics=metrics)
    return app
