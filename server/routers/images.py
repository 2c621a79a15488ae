"""Stored images: metadata, preview, vector, similar images; adding by upload (or by path under --allow-root) and
deleting, through the collection's own crash-safe writes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Path, Query, Request, Response, UploadFile

from server.routers.common import MAX_ID, check_k, errors, hits, image_info, service, timer
from server.schemas import Added, ImageInfo, PathToAdd, Removed, SearchResponse, Vector
from server.security import require_admin, require_read

router = APIRouter(prefix="/images", tags=["images"])

ImageIdPath = Annotated[int, Path(ge=0, le=MAX_ID, description="The image's id in the collection.")]
_READ = [Depends(require_read)]
_WRITE = [Depends(require_admin)]


@router.get("/{image_id}", response_model=ImageInfo, dependencies=_READ, responses=errors(401, 404))
def get_image(request: Request, image_id: ImageIdPath) -> ImageInfo:
    return image_info(request, service(request).record(image_id))


@router.get(
    "/{image_id}/thumbnail",
    response_class=Response,
    dependencies=_READ,
    responses={200: {"content": {"image/jpeg": {}}, "description": "The stored JPEG preview."}, **errors(401, 404)},
)
def get_thumbnail(request: Request, image_id: ImageIdPath) -> Response:
    data = service(request).thumbnail(image_id)
    # An id is never reused and its preview never changes: caches may keep it.
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400, immutable"})


@router.get("/{image_id}/vector", response_model=Vector, dependencies=_READ, responses=errors(401, 404))
def get_vector(request: Request, image_id: ImageIdPath) -> Vector:
    return Vector(id=image_id, vector=service(request).vector(image_id).tolist())


@router.get(
    "/{image_id}/similar",
    response_model=SearchResponse,
    dependencies=_READ,
    responses=errors(401, 404, 422),
    summary="Search from a stored image",
)
def similar(
    request: Request,
    image_id: ImageIdPath,
    k: Annotated[int, Query(ge=1)] = 10,
    exclude_self: Annotated[bool, Query(description="Leave the image itself out.")] = True,
    exclude_ids: Annotated[list[Annotated[int, Query(ge=0, le=MAX_ID)]], Query()] = [],  # noqa: B006
) -> SearchResponse:
    check_k(request, k)
    clock = timer(request)
    rows = service(request).search_ids([image_id], k, exclude_self, exclude_ids, clock)
    return SearchResponse(results=hits(request, rows[0]), k=k, timings_ms=clock.milliseconds())


@router.post(
    "",
    response_model=Added,
    status_code=201,
    dependencies=_WRITE,
    responses=errors(401, 403, 409, 413, 415, 422),
    summary="Add an uploaded photo",
)
def add_upload(
    request: Request,
    response: Response,
    image: Annotated[UploadFile, File(description="The photo to add; kept on the server, named by its content.")],
) -> Added:
    clock = timer(request)
    outcome = service(request).add_upload(image.file.read(), clock)
    if not outcome.created:
        response.status_code = 200
    return Added(image=image_info(request, outcome.record), created=outcome.created, timings_ms=clock.milliseconds())


@router.post(
    "/by-path",
    response_model=Added,
    status_code=201,
    dependencies=_WRITE,
    responses=errors(401, 403, 404, 409, 413, 415, 422),
    summary="Add a file under the server's --allow-root folder",
)
def add_path(request: Request, response: Response, body: PathToAdd) -> Added:
    clock = timer(request)
    outcome = service(request).add_path(body.path, clock)
    if not outcome.created:
        response.status_code = 200
    return Added(image=image_info(request, outcome.record), created=outcome.created, timings_ms=clock.milliseconds())


@router.delete("/{image_id}", response_model=Removed, dependencies=_WRITE, responses=errors(401, 403, 404, 409))
def delete_image(request: Request, image_id: ImageIdPath) -> Removed:
    return Removed(removed=image_info(request, service(request).remove(image_id)))
