"""What the routers share: the service and timer of a request, result conversion, the documented error replies."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from server.errors import ApiError
from server.schemas import ErrorBody, Hit, ImageInfo
from server.service import SearchService
from server.timing import StageTimer
from simsearch import ImageRecord, SearchResult

#: int64, the store's key: a larger id can only be a client's mistake.
MAX_ID = 2**63 - 1


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for error codes, all with the `{"error": ...}` body."""
    return {code: {"model": ErrorBody} for code in codes}


def service(request: Request) -> SearchService:
    return request.app.state.service  # type: ignore[no-any-return]


def timer(request: Request) -> StageTimer:
    from server.edge import request_timer

    return request_timer(request.scope)


def check_k(request: Request, k: int, count: int = 1) -> None:
    settings = request.app.state.settings
    if k > settings.max_k:
        raise ApiError(422, f"k is at most {settings.max_k} on this server, got {k}")
    if count > settings.max_batch_request:
        raise ApiError(422, f"at most {settings.max_batch_request} queries per request, got {count}")


def thumbnail_url(request: Request, image_id: int) -> str:
    return f"{request.scope.get('root_path', '')}/images/{image_id}/thumbnail"


def hits(request: Request, results: list[SearchResult]) -> list[Hit]:
    return [
        Hit(
            rank=r.rank,
            id=r.id,
            score=r.score,
            path=r.path,
            width=r.width,
            height=r.height,
            thumbnail_url=thumbnail_url(request, r.id),
        )
        for r in results
    ]


def image_info(request: Request, record: ImageRecord) -> ImageInfo:
    return ImageInfo(
        id=record.id,
        path=record.path,
        width=record.width,
        height=record.height,
        format=record.format,
        size=record.size,
        sha256=record.sha256,
        thumbnail_url=thumbnail_url(request, record.id),
    )
