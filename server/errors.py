"""The server's edge: every failure becomes `{"error": "one line"}` with the status that says whose fault it is.

The library's domain errors (`simsearch.errors`) are turned into HTTP errors here and nowhere else.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from simsearch.errors import CollectionError, ImageError, ModelError, SimSearchError, UnknownImageError


class ApiError(Exception):
    """An HTTP error raised by the server's own code, with its status and one-line message."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": one_line(message)}, status_code=status, headers=headers)


def one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def image_error_status(exc: ImageError) -> int:
    """413 for too many pixels, 415 for bytes that are no image at all, 422 for a damaged image of a known kind."""
    text = str(exc)
    if "too large" in text:
        return 413
    if "not an image" in text or "empty file" in text:
        return 415
    return 422


def domain_status(exc: SimSearchError) -> int:
    if isinstance(exc, UnknownImageError):
        return 404
    if isinstance(exc, ImageError):
        return image_error_status(exc)
    if isinstance(exc, ModelError):
        return 503
    if isinstance(exc, CollectionError):
        return 409  # the collection cannot do this now (an index still training, another writer busy)
    return 400


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        loc = list(error.get("loc", ()))
        if loc and loc[0] in ("body", "query", "path", "header"):
            loc = loc[1:]  # where the field was sent: the field's own name says enough
        where = ".".join(str(p) for p in loc)
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        return error_response(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, _validation_message(exc))

    @app.exception_handler(SimSearchError)
    async def _domain(request: Request, exc: SimSearchError) -> JSONResponse:
        status = domain_status(exc)
        prefix = "cannot read the image: " if isinstance(exc, ImageError) else ""
        return error_response(status, prefix + str(exc))
