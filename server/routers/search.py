"""Searches: by an uploaded photo, by several, by stored ids and by vectors."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile

from server.routers.common import MAX_ID, check_k, errors, hits, service, timer
from server.schemas import BatchSearchResponse, IdQuery, SearchResponse, VectorQuery
from server.security import require_read

router = APIRouter(prefix="/search", tags=["search"], dependencies=[Depends(require_read)])

K = Annotated[int, Query(ge=1, description="How many similar images to return.")]
Exclude = Annotated[
    list[Annotated[int, Query(ge=0, le=MAX_ID)]],
    Query(description="Ids to leave out of the results (repeat the parameter)."),
]
_UPLOAD_ERRORS = errors(401, 413, 415, 422, 503)


@router.post("", response_model=SearchResponse, responses=_UPLOAD_ERRORS, summary="Search with an uploaded photo")
def search_upload(
    request: Request,
    image: Annotated[UploadFile, File(description="The query photo (JPEG, PNG, WebP, GIF, BMP or TIFF).")],
    k: K = 10,
    exclude_ids: Exclude = [],  # noqa: B006 - FastAPI copies defaults per request
) -> SearchResponse:
    check_k(request, k)
    clock = timer(request)
    rows = service(request).search_images([image.file.read()], k, exclude_ids, clock)
    return SearchResponse(results=hits(request, rows[0]), k=k, timings_ms=clock.milliseconds())


@router.post(
    "/batch", response_model=BatchSearchResponse, responses=_UPLOAD_ERRORS, summary="Search with several photos"
)
def search_uploads(
    request: Request,
    images: Annotated[list[UploadFile], File(description="Query photos, one result list each.")],
    k: K = 10,
    exclude_ids: Exclude = [],  # noqa: B006
) -> BatchSearchResponse:
    check_k(request, k, len(images))
    clock = timer(request)
    rows = service(request).search_images([f.file.read() for f in images], k, exclude_ids, clock)
    return BatchSearchResponse(results=[hits(request, r) for r in rows], k=k, timings_ms=clock.milliseconds())


@router.post(
    "/ids", response_model=BatchSearchResponse, responses=errors(401, 404, 422), summary="Search from stored images"
)
def search_ids(request: Request, query: IdQuery) -> BatchSearchResponse:
    check_k(request, query.k, len(query.ids))
    clock = timer(request)
    rows = service(request).search_ids(query.ids, query.k, query.exclude_self, query.exclude_ids, clock)
    return BatchSearchResponse(results=[hits(request, r) for r in rows], k=query.k, timings_ms=clock.milliseconds())


@router.post("/vectors", response_model=BatchSearchResponse, responses=errors(401, 422), summary="Search with vectors")
def search_vectors(request: Request, query: VectorQuery) -> BatchSearchResponse:
    check_k(request, query.k, len(query.vectors))
    clock = timer(request)
    rows = service(request).search_vectors(query.vectors, query.k, query.exclude_ids, clock)
    return BatchSearchResponse(results=[hits(request, r) for r in rows], k=query.k, timings_ms=clock.milliseconds())
