"""The outermost layer of every request: the size limit announced by Content-Length, stage timings in a
`Server-Timing` header, request metrics, and a JSON 500 for anything unexpected."""

from __future__ import annotations

import logging
import time

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import error_response
from server.metrics import Metrics
from server.timing import StageTimer

log = logging.getLogger(__name__)


def request_timer(scope: Scope) -> StageTimer:
    """The timer `EdgeMiddleware` put on this request (a fresh one outside it, e.g. in a unit test)."""
    state = scope.setdefault("state", {})
    timer = state.get("timer")
    if timer is None:
        timer = state["timer"] = StageTimer()
    return timer  # type: ignore[no-any-return]


class BodyTooLarge(HTTPException):
    """Raised while a body is read: FastAPI lets an HTTPException from its body parsing through, to the JSON
    error handler (any other exception there would become a 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body too large: the limit is {limit / (1024 * 1024):g} MB")


class EdgeMiddleware:
    """Pure ASGI (no response buffering). A body announced larger than `max_body` is refused before it is read; one
    that streams past it (no Content-Length, or a false one) is cut off where it passes the limit."""

    def __init__(self, app: ASGIApp, *, max_body: int, metrics: Metrics) -> None:
        self.app = app
        self.max_body = max_body
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        timer = request_timer(scope)
        status = 500
        started = False

        async def send_timed(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                MutableHeaders(scope=message).append("Server-Timing", timer.header())
            await send(message)

        try:
            refusal = self._refusal(Headers(scope=scope).get("content-length"))
            if refusal is not None:
                await refusal(scope, receive, send_timed)
                return
            await self.app(scope, self._limited(receive), send_timed)
        except BodyTooLarge as exc:
            if started:
                raise
            await error_response(413, exc.detail)(scope, receive, send_timed)
        except Exception:
            log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            await error_response(500, "internal error; see the server log")(scope, receive, send_timed)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe_request(scope.get("method", ""), route, status, time.perf_counter() - timer.started)
            self.metrics.observe_stages(timer.seconds)

    def _limited(self, receive: Receive) -> Receive:
        seen = 0

        async def receive_limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        return receive_limited

    def _refusal(self, length: str | None) -> ASGIApp | None:
        if length is None:
            return None
        if not length.isdigit():
            return error_response(400, "bad Content-Length header")
        if int(length) > self.max_body:
            return error_response(413, BodyTooLarge(self.max_body).detail)
        return None
