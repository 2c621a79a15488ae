"""Liveness, readiness, what the server holds, and its metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from server.errors import ApiError
from server.routers.common import errors, service
from server.schemas import Health, Info
from server.security import require_read

router = APIRouter(tags=["status"])


@router.get("/health/live", response_model=Health, summary="The process answers")
def live() -> Health:
    return Health(status="ok")


@router.get("/health/ready", response_model=Health, responses=errors(503), summary="Ready to search")
def ready(request: Request) -> Health:
    svc = service(request)
    if not svc.ready.is_set():
        raise ApiError(503, svc.load_error or "loading the model")
    return Health(status="ok", detail=f"the model runs on {svc.engine} ({svc.device})")


@router.get("/info", response_model=Info, dependencies=[Depends(require_read)], responses=errors(401))
def info(request: Request) -> Info:
    from simsearch import __version__

    svc = service(request)
    settings = svc.settings
    facts = svc.collection.info()
    return Info(
        images=facts.images,
        model=facts.model,
        dim=facts.dim,
        metric=facts.metric,
        index_factory=facts.index_factory,
        search_params=facts.search_params,
        device=svc.device,
        engine=svc.engine,
        ready=svc.ready.is_set(),
        max_batch=settings.max_batch,
        max_k=settings.max_k,
        max_request_mb=settings.max_request_mb,
        max_pixels=settings.max_pixels,
        writes=settings.admin_token is not None,
        add_by_path=settings.allow_root is not None,
        auth=settings.token is not None,
        version=__version__,
    )


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(require_read)],
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}, **errors(401)},
)
def metrics(request: Request) -> Response:
    registry = request.app.state.metrics
    return Response(registry.render(), media_type=registry.content_type)
