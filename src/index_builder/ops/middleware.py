"""One pure ASGI middleware for every request: request id, access log line, request metrics.

Pure ASGI (not Starlette's ``BaseHTTPMiddleware``, which costs a task and a
stream per request): it wraps ``send`` to learn the status and add the
``X-Request-ID`` header, and reads the route template the router leaves in the
scope (``scope["route"].path``; ``unmatched`` when no route matched, so label
values stay bounded whatever paths clients try).
"""

from __future__ import annotations

import logging
import random
import re
import time
from typing import Any
from urllib.parse import unquote_plus

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from index_builder.ops.logging import log_access
from index_builder.ops.metrics import HTTP_DURATION, HTTP_REQUESTS

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_HEADER_KEY = b"x-request-id"
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
"""An incoming id is kept when it is 1-128 safe characters; else one is generated."""

UNMATCHED = "unmatched"
QUIET_ROUTES = frozenset({"/health/live", "/health/ready", "/metrics"})
"""Probe and scrape routes: their access lines are logged at DEBUG, not INFO."""


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's ``X-Request-ID`` when it is valid, else a new random id."""
    for name, value in headers:
        if name == _REQUEST_ID_HEADER_KEY:
            if _VALID_REQUEST_ID.fullmatch(value):
                return value.decode("ascii")
            break
    # a correlation id, not a secret: the fast generator is enough
    return f"{random.getrandbits(128):032x}"


def index_from_query(query_string: bytes) -> str | None:
    """The ``index`` query parameter, when there is one (cheap: no body is read)."""
    if b"index=" not in query_string:
        return None
    for part in query_string.split(b"&"):
        if part.startswith(b"index="):
            value = part[6:106].decode("latin-1")
            return unquote_plus(value) if "%" in value or "+" in value else value
    return None


class ObservabilityMiddleware:
    """Request id, one access log line and the request metrics of every HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def _metrics(self, route: str, method: str, status: int) -> tuple[Any, Any]:
        """The (counter, histogram) children of one label set, looked up once."""
        key = (route, method, status)
        series = self._series.get(key)
        if series is None:
            series = (
                HTTP_REQUESTS.labels(route=route, method=method, status=str(status)),
                HTTP_DURATION.labels(route=route, method=method),
            )
            self._series[key] = series
        return series

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_from(scope["headers"])
        header = (_REQUEST_ID_HEADER_KEY, request_id.encode("ascii"))
        scope.setdefault("state", {})["request_id"] = request_id  # for error handlers
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            status = 500
            # the context stays bound (it ends with this request's task), so the
            # error handler's log line outside this middleware names the request
            self._record(scope, status, started, request_id)
            raise
        self._record(scope, status, started, request_id)
        structlog.contextvars.reset_contextvars(**tokens)

    def _record(self, scope: Scope, status: int, started: float, request_id: str) -> None:
        duration = time.perf_counter() - started
        route_obj = scope.get("route")
        route = getattr(route_obj, "path", None) or UNMATCHED
        method = scope["method"]
        counter, histogram = self._metrics(route, method, status)
        counter.inc()
        histogram.observe(duration)
        client = scope.get("client")
        fields = {
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": round(duration * 1000, 3),
            "client": client[0] if client else None,
        }
        index = index_from_query(scope.get("query_string", b""))
        if index is not None:
            fields["index"] = index
        context = {"request_id": request_id}  # what this middleware bound
        if status >= 500:
            log_access(logging.ERROR, fields, context)
        elif route in QUIET_ROUTES:
            log_access(logging.DEBUG, fields, context)
        else:
            log_access(logging.INFO, fields, context)
