"""The HTTP server of ``index-builder serve``: uvicorn, configured from the settings.

* **Forwarding headers.** uvicorn rewrites the client address (and scheme) from
  ``X-Forwarded-For`` / ``X-Forwarded-Proto`` only when the peer is one of
  ``INDEX_BUILDER_TRUSTED_PROXIES``; with none listed (the default) it never
  reads them (uvicorn's own default trusts ``127.0.0.1``, or
  ``FORWARDED_ALLOW_IPS``, which is ignored here). The rate limits, auth logs
  and access lines all see that one address.
* **Slow clients.** uvicorn has no timeout for a request's head, so a client that
  sends its headers a byte at a time keeps its connection (and its place in
  ``limit_concurrency``) forever. :class:`HeadGuard` (mixed into uvicorn's
  HTTP protocol) closes a connection whose request line and headers are not
  complete ``INDEX_BUILDER_SERVER_HEADER_TIMEOUT_SECONDS`` after it opened or
  after the first byte of its next request (``408`` when part of a request
  came), and answers ``431`` to a head larger than
  ``INDEX_BUILDER_SERVER_MAX_HEADER_BYTES`` (also h11's largest incomplete
  event). Idle keep-alive connections close after
  ``INDEX_BUILDER_SERVER_KEEP_ALIVE_SECONDS``; beyond
  ``INDEX_BUILDER_SERVER_LIMIT_CONCURRENCY`` connections or requests in
  progress a new request answers ``503``; ``INDEX_BUILDER_SERVER_BACKLOG`` is the
  listen queue; ``INDEX_BUILDER_SERVER_SHUTDOWN_TIMEOUT_SECONDS`` bounds a
  graceful shutdown. One event loop serves every connection, so slow ones cost
  memory and a file descriptor each, not a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import sys
from collections.abc import Iterator
from typing import Any, cast

import orjson
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from index_builder.api.problems import PROBLEM_BASE, PROBLEM_MEDIA_TYPE
from index_builder.settings import Settings

STARTUP_FAILURE = 3
"""Exit code when the server could not start (uvicorn's)."""
WORKER_HEALTHCHECK_SECONDS = 20
"""``serve --workers N``: how long a process may not answer its supervisor before it
is taken for hung and replaced."""


class ServerConfig(uvicorn.Config):
    """uvicorn's configuration plus the limits of :class:`HeadGuard`."""

    def __init__(
        self, app: Any, *, header_timeout: float, max_header_bytes: int, **kwargs: Any
    ) -> None:
        super().__init__(app, **kwargs)
        self.header_timeout = header_timeout
        self.max_header_bytes = max_header_bytes


def _raw_response(status: int, title: str, code: str, detail: str) -> bytes:
    """A complete ``Connection: close`` problem+json response, for a connection the
    server drops before any request reached the app."""
    body = orjson.dumps(
        {"type": PROBLEM_BASE + code, "title": title, "status": status, "detail": detail}
    )
    head = (
        f"HTTP/1.1 {status} {title}\r\ncontent-type: {PROBLEM_MEDIA_TYPE}\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


TIMEOUT_RESPONSE = _raw_response(
    408,
    "Request Timeout",
    "request-timeout",
    "the request line and headers did not arrive in time",
)
TOO_LARGE_RESPONSE = _raw_response(
    431,
    "Request Header Fields Too Large",
    "headers-too-large",
    "the request line and headers are too large",
)


class HeadGuard:
    """The time and size limits of one connection's request heads.

    Waiting for a head means: no request of the connection is in progress (its
    protocol's ``cycle`` is none, or answered with its body fully received). The timer runs from the
    connection's start, and again from the first byte that arrives while
    waiting; it stops when a head is complete (a new ``cycle``).
    """

    __slots__ = ("_bytes", "_timer", "max_bytes", "protocol", "timeout", "transport")

    def __init__(self, protocol: Any, transport: asyncio.Transport, config: ServerConfig) -> None:
        self.protocol = protocol
        self.transport = transport
        self.timeout = config.header_timeout
        self.max_bytes = config.max_header_bytes
        self._bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._arm()

    def _waiting(self) -> bool:
        cycle = self.protocol.cycle  # a request's body still coming is not a head
        return cycle is None or bool(cycle.response_complete and not cycle.more_body)

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.timeout, self._expired)

    def stop(self) -> None:
        """Cancel the timer (a head arrived, or the connection is gone)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def received(self, data: bytes, head_complete: bool) -> None:
        """After the protocol handled ``data``: stop at a complete head, else count."""
        if head_complete:
            self.stop()
            self._bytes = 0
        elif self._waiting() and not self.transport.is_closing():
            self._bytes += len(data)
            if self._bytes > self.max_bytes:
                self._drop(TOO_LARGE_RESPONSE)
            else:
                self._arm()

    def _expired(self) -> None:
        self._timer = None
        if self._waiting() and not self.transport.is_closing():
            self._drop(TIMEOUT_RESPONSE if self._bytes else b"")

    def _drop(self, response: bytes) -> None:
        self.stop()
        if response:
            self.transport.write(response)
        self.transport.close()


class _Guarded:
    """Adds a :class:`HeadGuard` to one of uvicorn's HTTP protocols (mixed in first)."""

    guard: HeadGuard | None = None
    cycle: Any
    config: Any

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        assert isinstance(self.config, ServerConfig)
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one
        self.guard = HeadGuard(self, cast(asyncio.Transport, transport), self.config)

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        super().data_received(data)  # type: ignore[misc]
        if self.guard is not None:
            self.guard.received(data, self.cycle is not cycle)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.guard is not None:
            self.guard.stop()
        super().connection_lost(exc)  # type: ignore[misc]


class GuardedH11Protocol(_Guarded, H11Protocol):
    """uvicorn's h11 protocol with a :class:`HeadGuard`."""


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - uvicorn[standard] brings httptools
    GuardedHttpToolsProtocol: type[asyncio.Protocol] | None = None
else:

    class _GuardedHttpTools(_Guarded, HttpToolsProtocol):
        """uvicorn's httptools protocol with a :class:`HeadGuard`."""

    _GuardedHttpTools.__name__ = _GuardedHttpTools.__qualname__ = "GuardedHttpToolsProtocol"
    GuardedHttpToolsProtocol = _GuardedHttpTools  # module level: worker processes unpickle it


def _guarded_httptools() -> type[asyncio.Protocol] | None:
    """uvicorn's httptools protocol with a :class:`HeadGuard` (None without httptools)."""
    return GuardedHttpToolsProtocol


@functools.cache
def http_protocol() -> type[asyncio.Protocol]:
    """The guarded protocol uvicorn's ``auto`` would pick: httptools, else h11."""
    return _guarded_httptools() or GuardedH11Protocol


def trusted_proxies(settings: Settings) -> list[str]:
    """``INDEX_BUILDER_TRUSTED_PROXIES`` as uvicorn's ``forwarded_allow_ips``
    (networks normalised: uvicorn takes ``10.0.0.1/8`` for a literal name)."""
    entries = (e.strip() for e in settings.trusted_proxies.split(","))
    return [
        str(ipaddress.ip_network(e, strict=False)) if "/" in e else str(ipaddress.ip_address(e))
        for e in entries
        if e
    ]


def server_config(settings: Settings, app: Any, *, log_level: str | None = None) -> ServerConfig:
    """The uvicorn configuration of ``app`` under ``settings``."""
    proxies = trusted_proxies(settings)
    return ServerConfig(
        app,
        host=settings.api_host,
        port=settings.api_port,
        http=http_protocol(),
        log_level=log_level or settings.log_level.lower(),
        log_config=None,  # uvicorn's records go through our structured logging
        access_log=False,  # the ops middleware logs one line per request instead
        proxy_headers=bool(proxies),  # never from an untrusted peer, loopback included
        forwarded_allow_ips=proxies,
        timeout_keep_alive=settings.server_keep_alive_seconds,
        limit_concurrency=settings.server_limit_concurrency or None,
        backlog=settings.server_backlog,
        timeout_graceful_shutdown=settings.server_shutdown_timeout_seconds,
        h11_max_incomplete_event_size=settings.server_max_header_bytes,
        header_timeout=settings.server_header_timeout_seconds,
        max_header_bytes=settings.server_max_header_bytes,
    )


def workers_problem(settings: Settings, workers: int) -> str | None:
    """Why ``workers`` processes cannot serve under ``settings`` (one line naming the
    way to scale), or None."""
    from index_builder.services.queue import queue_mode

    if workers <= 1:
        return None
    if settings.storage == "duckdb":
        return (
            f"--workers {workers}: the duckdb file is served by one process only; serve "
            "with --workers 1, or scale out with INDEX_BUILDER_STORAGE=iceberg (any number "
            "of processes and machines) and INDEX_BUILDER_REDIS_URL"
        )
    if queue_mode(settings) != "redis":
        return (
            f"--workers {workers}: several processes share their jobs through Redis: set "
            "INDEX_BUILDER_REDIS_URL (and INDEX_BUILDER_JOB_QUEUE=auto or redis) and run "
            "'index-builder worker'"
        )
    if settings.scheduler_enabled:
        return (
            f"--workers {workers}: INDEX_BUILDER_SCHEDULER_ENABLED would run the daily cycle "
            "in every process: run 'index-builder scheduler' once instead"
        )
    return None


def worker_app(settings: Settings) -> Any:
    """The app of one worker process of ``serve --workers N`` (uvicorn's factory: it
    runs in the new process, which sets up its own logging first)."""
    from index_builder.api.app import create_app
    from index_builder.ops.logging import configure_logging

    configure_logging(settings)
    return create_app(settings)


def run_server(settings: Settings, *, log_level: str | None = None, workers: int = 1) -> None:
    """Serve the API of ``settings`` until Ctrl-C or SIGTERM (exit code 3 when the
    server cannot start, e.g. the port is taken).

    ``workers`` > 1: uvicorn's supervisor binds the socket once and starts that many
    processes on it (each its own app over the shared store; one that dies is
    replaced). Check :func:`workers_problem` first."""
    if workers > 1:
        _run_workers(settings, log_level=log_level, workers=workers)
        return
    from index_builder.api.app import create_app  # after the metrics environment is set

    server = uvicorn.Server(server_config(settings, create_app(settings), log_level=log_level))
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn handles the signal itself
        server.run()
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)


@contextlib.contextmanager
def _children_skip_main() -> Iterator[None]:
    """New processes (multiprocessing's spawn) do not run this process's main module
    again (the whole CLI): they import only what the server needs, so they start (and
    answer their supervisor) sooner."""
    main = sys.modules.get("__main__")
    saved = {k: getattr(main, k) for k in ("__spec__", "__file__") if hasattr(main, k)}
    try:
        if main is not None:
            main.__spec__ = None
            if hasattr(main, "__file__"):
                del main.__file__
        yield
    finally:
        for key, value in saved.items():
            setattr(main, key, value)


def _run_workers(settings: Settings, *, log_level: str | None, workers: int) -> None:
    from uvicorn.supervisors import Multiprocess

    config = server_config(settings, functools.partial(worker_app, settings), log_level=log_level)
    config.factory = True
    config.workers = workers
    # a new process imports the whole service before it answers the supervisor's pings:
    # uvicorn's 5 s would take a slow start for a hang (a process that exits is seen at once)
    config.timeout_worker_healthcheck = WORKER_HEALTHCHECK_SECONDS
    try:
        sock = config.bind_socket()
    except SystemExit:  # uvicorn logged why (the port is taken)
        raise SystemExit(STARTUP_FAILURE) from None
    supervisor = Multiprocess(config, sockets=[sock])
    with contextlib.suppress(KeyboardInterrupt), _children_skip_main():
        supervisor.run()
    sock.close()
    if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes):
        raise SystemExit(STARTUP_FAILURE)
