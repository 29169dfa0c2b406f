"""One pure ASGI middleware for every request: request id, access log line, request metrics.

Pure ASGI (not Starlette's ``BaseHTTPMiddleware``, which costs a task and a
stream per request): it wraps ``send`` to learn the status and add the
``X-Request-ID`` header, sets :data:`~index_builder.ops.logging.REQUEST_ID` for the
log lines written while the request is served, and hands one record per request
(the route template the router leaves in ``scope["route"]``, status, duration...)
to :mod:`index_builder.ops.request_records`, which turns records into metrics and
access lines in batches.
"""

from __future__ import annotations

import random
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from index_builder.ops.logging import REQUEST_ID
from index_builder.ops.request_records import RECORDER, RequestRecorder

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_HEADER_KEY = b"x-request-id"
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
"""An incoming id is kept when it is 1-128 safe characters; else one is generated."""


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's ``X-Request-ID`` when it is valid, else a new random id."""
    for name, value in headers:
        if name == _REQUEST_ID_HEADER_KEY:
            if _VALID_REQUEST_ID.fullmatch(value):
                return value.decode("ascii")
            break
    # a correlation id, not a secret: the fast generator is enough
    return f"{random.getrandbits(128):032x}"


class ObservabilityMiddleware:
    """Request id, one access log line and the request metrics of every HTTP request."""

    def __init__(self, app: ASGIApp, recorder: RequestRecorder = RECORDER) -> None:
        self.app = app
        self.recorder = recorder

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

        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            # the id stays set (the context ends with this request's task), so the
            # error handler's log line outside this middleware names the request
            self._record(scope, 500, started, request_id)
            raise
        self._record(scope, status, started, request_id)
        REQUEST_ID.reset(token)

    def _record(self, scope: Scope, status: int, started: float, request_id: str) -> None:
        ended = time.perf_counter()
        self.recorder.add(
            (
                scope.get("route"),
                scope["method"],
                status,
                ended - started,
                request_id,
                scope.get("client"),
                scope.get("query_string", b""),
                time.time(),
            )
        )
