"""One pure ASGI layer for every request: Host allow-list, request id, read timeout,
body limit, ``RateLimit-*`` headers, and the request's record (access line, metrics).

One layer, not four: each ASGI layer that wraps ``send`` costs a call and a closure
per message, and every concern here needs the response's start. In order:

1. **Host** (``INDEX_BUILDER_ALLOWED_HOSTS`` names hosts): another Host is answered
   ``400`` problem+json (code ``invalid-host``) before anything else, without a
   request id or a record (:mod:`index_builder.ops.hosts`).
2. **Request id**: the client's ``X-Request-ID`` when valid, else a new one; set in
   :data:`~index_builder.ops.logging.REQUEST_ID` for the log lines written while the
   request is served, in ``scope["state"]`` for the error handlers, and returned.
3. **GET and HEAD**: the read timeout (``504`` problem+json when the response has not
   started in time: :mod:`index_builder.ops.request_limits`). **Other methods**: the
   body limit (``413``, from ``Content-Length`` before anything is read, and counted
   while a body without one streams).
4. The response start gets the request id and, when the rate limit counted the
   request, its ``RateLimit-*`` headers (:func:`~index_builder.ops.ratelimit.
   add_rate_limit_headers`).
5. One record per request (the route template the router, or the fast read path,
   leaves in ``scope["route"]``, status, duration...) is handed to
   :mod:`index_builder.ops.request_records`, which turns records into metrics and
   access lines in batches.

With ``INDEX_BUILDER_REQUEST_MIDDLEWARE=false`` (overhead measurements only) steps 2
and 5 are skipped.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Iterable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from index_builder.api.problems import problem_response
from index_builder.ops.hosts import host_name
from index_builder.ops.logging import REQUEST_ID
from index_builder.ops.ratelimit import STATE_KEY, add_rate_limit_headers
from index_builder.ops.request_records import RECORDER, RequestRecorder

log = logging.getLogger("index_builder.ops.limits")

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_HEADER_KEY = b"x-request-id"
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
"""An incoming id is kept when it is 1-128 safe characters; else one is generated."""
TIMED_METHODS = frozenset({"GET", "HEAD"})


def request_id_from(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The client's ``X-Request-ID`` when it is valid, else a new random id."""
    for name, value in headers:
        if name == _REQUEST_ID_HEADER_KEY:
            if _VALID_REQUEST_ID.fullmatch(value):
                return value.decode("ascii")
            break
    # a correlation id, not a secret: the fast generator is enough
    return f"{random.getrandbits(128):032x}"


class _Flight:
    """A GET in flight: its deadline, whether its response started, its 504 if any."""

    __slots__ = ("answer", "deadline", "receive", "request_id", "scope", "send", "started", "state")

    def __init__(
        self,
        deadline: float,
        scope: Scope,
        receive: Receive,
        send: Send,
        state: dict[str, Any],
        request_id: bytes | None,
    ) -> None:
        self.deadline = deadline
        self.scope = scope
        self.receive = receive
        self.send = send
        self.state = state
        self.request_id = request_id
        self.started = False
        self.answer: asyncio.Task[None] | None = None


class RequestMiddleware:
    """The request layer of the API (see the module): installed once, outermost.

    The read timeout costs a set insertion per GET, not a timer or a task (those
    cost a noticeable share of a cached read): one watchdog task per process,
    running while GETs are in flight, wakes every tenth of the timeout (1 ms to
    1 s) and answers ``504`` for each GET past its deadline whose response has not
    started; whatever the route sends later is dropped. The route itself cannot be
    interrupted (its database work runs in a worker thread): it finishes, its
    answer is cached, and only then does this call return, so the server still
    knows about the work when it shuts down gracefully.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        timeout_seconds: float,
        observe: bool = True,
        allowed_hosts: Iterable[str] | None = None,
        recorder: RequestRecorder = RECORDER,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.timeout_seconds = timeout_seconds
        self.observe = observe
        self.recorder = recorder
        self._tick = min(max(timeout_seconds / 10, 0.001), 1.0)
        self._in_flight: set[_Flight] = set()
        self._watchdog: asyncio.Task[None] | None = None
        self._hosts: tuple[frozenset[str], tuple[str, ...]] | None = None
        if allowed_hosts is not None:
            patterns = [a.strip().lower().strip("[]") for a in allowed_hosts if a.strip()]
            self._hosts = (
                frozenset(p for p in patterns if not p.startswith("*")),
                tuple(p[1:] for p in patterns if p.startswith("*.")),
            )

    # ------------------------------------------------------------------ the request
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan; the API has no WebSocket routes
            await self.app(scope, receive, send)
            return
        if self._hosts is not None and not self.allows_host(scope):
            response = problem_response(
                400,
                "invalid-host",
                "the Host header does not name this server (INDEX_BUILDER_ALLOWED_HOSTS)",
                instance=scope.get("path"),
            )
            await response(scope, receive, send)
            return
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        if not self.observe:
            await self._serve(scope, receive, send, state, None)
            return
        started = time.perf_counter()
        request_id = request_id_from(scope["headers"])
        state["request_id"] = request_id  # for error handlers
        token = REQUEST_ID.set(request_id)
        try:
            status = await self._serve(scope, receive, send, state, request_id.encode("ascii"))
        except BaseException:
            # the id stays set (the context ends with this request's task), so the
            # error handler's log line outside this middleware names the request
            self._record(scope, 500, started, request_id)
            raise
        self._record(scope, status, started, request_id)
        REQUEST_ID.reset(token)

    def allows_host(self, scope: Scope) -> bool:
        """True when the request's Host names an allowed host (or none are configured)."""
        if self._hosts is None:
            return True
        raw = b""
        for name, value in scope["headers"]:
            if name == b"host":
                raw = value
                break
        host = host_name(raw.decode("latin-1"))
        names, suffixes = self._hosts
        return host in names or (bool(host) and host.endswith(suffixes))

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

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        state: dict[str, Any],
        request_id: bytes | None,
    ) -> int:
        """Serve one request; its status (``504`` when the timeout answered it)."""
        if scope["method"] in TIMED_METHODS:
            return await self._timed(scope, receive, send, state, request_id)
        return await self._bounded(scope, receive, send, state, request_id)

    # ------------------------------------------------------------------ GET and HEAD
    async def _timed(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        state: dict[str, Any],
        request_id: bytes | None,
    ) -> int:
        loop = asyncio.get_running_loop()
        flight = _Flight(
            loop.time() + self.timeout_seconds, scope, receive, send, state, request_id
        )
        self._in_flight.add(flight)
        if self._watchdog is None:
            self._watchdog = loop.create_task(self._watch())
        status = 500

        async def timed_send(message: Message) -> None:
            nonlocal status
            if flight.answer is not None:
                return  # the client already has its 504
            if message["type"] == "http.response.start":
                flight.started = True
                status = message["status"]
                headers = message.get("headers")
                headers = [*headers] if headers is not None else []
                if request_id is not None:
                    headers.append((_REQUEST_ID_HEADER_KEY, request_id))
                quota = state.get(STATE_KEY)
                if quota is not None:
                    headers += quota.header_items()
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        except Exception:
            if flight.answer is None:
                raise
            log.exception("a request answered 504 (timeout) failed afterwards")
        finally:
            self._in_flight.discard(flight)
            if flight.answer is not None:
                await flight.answer
        return 504 if flight.answer is not None else status

    async def _watch(self) -> None:
        """Answer the GETs past their deadline; stop when none is in flight."""
        loop = asyncio.get_running_loop()
        try:
            while self._in_flight:
                await asyncio.sleep(self._tick)
                now = loop.time()
                for flight in list(self._in_flight):
                    if not flight.started and flight.answer is None and now >= flight.deadline:
                        flight.answer = loop.create_task(self._answer_timeout(flight))
        finally:
            self._watchdog = None

    async def _answer_timeout(self, flight: _Flight) -> None:
        scope = flight.scope
        log.warning(
            "request timeout: %s %s not answered within %.3g s; answered 504, the work goes on",
            scope["method"],
            scope["path"],
            self.timeout_seconds,
        )
        response = problem_response(
            504,
            "timeout",
            f"no answer within {self.timeout_seconds:g} s "
            "(INDEX_BUILDER_REQUEST_TIMEOUT_SECONDS); the work goes on and cached reads "
            "keep its answer: retry shortly",
            instance=scope["path"],
        )

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                if flight.request_id is not None:
                    message["headers"] = [
                        *message.get("headers", ()),
                        (_REQUEST_ID_HEADER_KEY, flight.request_id),
                    ]
                add_rate_limit_headers(message, flight.state)
            await flight.send(message)

        await response(scope, flight.receive, send_with_headers)

    # ------------------------------------------------------------------ other methods
    def _too_large(self) -> str:
        return (
            f"the request body is larger than {self.max_body_bytes} bytes "
            "(INDEX_BUILDER_MAX_BODY_BYTES)"
        )

    async def _bounded(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        state: dict[str, Any],
        request_id: bytes | None,
    ) -> int:
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if request_id is not None:
                    message["headers"] = [
                        *message.get("headers", ()),
                        (_REQUEST_ID_HEADER_KEY, request_id),
                    ]
                add_rate_limit_headers(message, state)
            await send(message)

        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > self.max_body_bytes:
                    response = problem_response(
                        413, "content-too-large", self._too_large(), instance=scope["path"]
                    )
                    await response(scope, receive, send_with_headers)
                    return status
                break
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # raised inside the route: FastAPI re-raises HTTPException, and the
                    # problem handler answers 413 (code content-too-large)
                    raise HTTPException(413, self._too_large())
            return message

        await self.app(scope, counted_receive, send_with_headers)
        return status
