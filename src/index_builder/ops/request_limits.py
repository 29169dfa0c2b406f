"""Request limits: body size, window length, page size and a time limit on reads.

* ``INDEX_BUILDER_MAX_BODY_BYTES``: a larger ``Content-Length`` is answered
  ``413`` before the body is read; a body without one (chunked) is counted
  while it streams and refused with ``413`` once it passes the limit.
* ``INDEX_BUILDER_MAX_WINDOW_DAYS``: a window that names its ``start_date``
  spans at most this many calendar days (to ``end_date``, or to today without
  one); ``422`` with the field. The default window (from the base date) is
  bounded by the data and not limited.
* ``INDEX_BUILDER_MAX_PAGE_SIZE``: the default and largest ``limit`` of
  GET /index-composition; larger is ``422`` (field ``limit``).
* ``INDEX_BUILDER_REQUEST_TIMEOUT_SECONDS``: a GET whose response has not
  started within this time is answered ``504`` problem+json (code
  ``timeout``). The work is not abandoned (a database query in a worker thread
  cannot be interrupted): it finishes after the 504 and a cached read stores
  its answer, so a retry is fast. Builds and exports (POST) are not
  limited; large builds answer ``202`` with a job anyway.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from index_builder.api.problems import problem_response
from index_builder.errors import InvalidInputError
from index_builder.ops.ratelimit import STATE_KEY, add_rate_limit_headers

log = logging.getLogger("index_builder.ops.limits")

TIMED_METHODS = frozenset({"GET", "HEAD"})


def check_window(start: dt.date | None, end: dt.date | None, max_days: int) -> None:
    """Refuse a window longer than ``max_days`` calendar days (when it names its start)."""
    if start is None:
        return
    last = end if end is not None else dt.datetime.now(dt.UTC).date()
    days = (last - start).days + 1
    if days > max_days:
        raise InvalidInputError(
            f"the window {start} to {last} spans {days} calendar days; at most {max_days} "
            "are allowed (INDEX_BUILDER_MAX_WINDOW_DAYS): ask for it in parts",
            field="end_date" if end is not None else "start_date",
        )


def page_limit(limit: int | None, max_page_size: int) -> int:
    """The page size to use: ``limit``, or the largest when not given (422 above it)."""
    if limit is None:
        return max_page_size
    if limit > max_page_size:
        raise InvalidInputError(
            f"limit {limit} is above the largest page size, {max_page_size} "
            "(INDEX_BUILDER_MAX_PAGE_SIZE): page with offset",
            field="limit",
        )
    return limit


class _Flight:
    """A GET in flight: its deadline, whether its response started, its 504 if any."""

    __slots__ = ("answer", "deadline", "receive", "scope", "send", "started", "state")

    def __init__(
        self, deadline: float, scope: Scope, receive: Receive, send: Send, state: dict[str, Any]
    ) -> None:
        self.deadline = deadline
        self.scope = scope
        self.receive = receive
        self.send = send
        self.state = state
        self.started = False
        self.answer: asyncio.Task[None] | None = None


class ProtectionMiddleware:
    """One ASGI layer for the protection concerns (one layer costs less than three):

    * every response gets the request's ``RateLimit-*`` headers when the rate
      limit counted it (:func:`~index_builder.ops.ratelimit.add_rate_limit_headers`);
    * GET and HEAD: the timeout (:meth:`_timed`); their bodies are not read;
    * other methods: the body size (``413``), from ``Content-Length`` before
      anything is read, and counted while a body without one streams.

    The timeout costs a set insertion per GET, not a timer or a task (those
    cost a noticeable share of a cached read): one watchdog task per process,
    running while GETs are in flight, wakes every tenth of the timeout (1 ms
    to 1 s) and answers ``504`` for each GET past its deadline whose response
    has not started; whatever the route sends later is dropped. The route
    itself cannot be interrupted (its database work runs in a worker thread):
    it finishes, its answer is cached, and only then does this call return, so
    the server still knows about the work when it shuts down gracefully.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, timeout_seconds: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.timeout_seconds = timeout_seconds
        self._tick = min(max(timeout_seconds / 10, 0.001), 1.0)
        self._in_flight: set[_Flight] = set()
        self._watchdog: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif scope["method"] in TIMED_METHODS:
            await self._timed(scope, receive, send)
        else:
            await self._bounded(scope, receive, send)

    async def _timed(self, scope: Scope, receive: Receive, send: Send) -> None:
        state: dict[str, Any] = scope.setdefault("state", {})
        loop = asyncio.get_running_loop()
        flight = _Flight(loop.time() + self.timeout_seconds, scope, receive, send, state)
        self._in_flight.add(flight)
        if self._watchdog is None:
            self._watchdog = loop.create_task(self._watch())

        async def guarded_send(message: Message) -> None:
            if flight.answer is not None:
                return  # the client already has its 504
            if message["type"] == "http.response.start":
                flight.started = True
                quota = state.get(STATE_KEY)
                if quota is not None:
                    message["headers"] = [*message.get("headers", ()), *quota.header_items()]
            await send(message)

        try:
            await self.app(scope, receive, guarded_send)
        except Exception:
            if flight.answer is None:
                raise
            log.exception("a request answered 504 (timeout) failed afterwards")
        finally:
            self._in_flight.discard(flight)
            if flight.answer is not None:
                await flight.answer

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
                add_rate_limit_headers(message, flight.state)
            await flight.send(message)

        await response(scope, flight.receive, send_with_headers)

    def _too_large(self) -> str:
        return (
            f"the request body is larger than {self.max_body_bytes} bytes "
            "(INDEX_BUILDER_MAX_BODY_BYTES)"
        )

    async def _bounded(self, scope: Scope, receive: Receive, send: Send) -> None:
        state: dict[str, Any] = scope.setdefault("state", {})
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > self.max_body_bytes:
                    response = problem_response(
                        413, "content-too-large", self._too_large(), instance=scope["path"]
                    )
                    await response(scope, receive, send)
                    return
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

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                add_rate_limit_headers(message, state)
            await send(message)

        await self.app(scope, counted_receive, send_with_headers)
