"""Structured logs with structlog: JSON lines in production, readable text on a terminal.

:func:`configure_logging` installs one handler on the root logger whose
formatter is structlog's ``ProcessorFormatter``: records of the standard
library's ``logging`` (every ``logging.getLogger(...)`` of the project, uvicorn's)
and of structlog loggers come out alike, with a UTC timestamp, the level, the
logger name and the context bound with :mod:`structlog.contextvars` (the request
id of the request being served).
"""

from __future__ import annotations

import asyncio
import atexit
import datetime as dt
import logging
import sys
import threading
import time
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import Processor

from index_builder.settings import Settings

_HANDLER_MARK = "_index_builder_handler"
ACCESS_LOGGER = "index_builder.access"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler writing to the *current* ``sys.stderr`` (or a fixed stream).

    Test runners and the CLI's test harness swap ``sys.stderr``; a handler that
    kept the stream it was created with would write to a closed one.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self._fixed = stream

    @property
    def stream(self) -> TextIO:
        return self._fixed if self._fixed is not None else sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        """Ignored: the stream is resolved when writing."""


def _orjson_dumps(value: Any, default: Any = None, **_: Any) -> str:
    return orjson.dumps(value, default=default).decode()


def resolve_format(setting: str, stream: TextIO | None = None) -> str:
    """``json`` or ``console``: ``auto`` is console on a terminal, else json."""
    if setting != "auto":
        return setting
    target = stream if stream is not None else sys.stderr
    isatty = getattr(target, "isatty", None)
    return "console" if callable(isatty) and isatty() else "json"


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def configure_logging(
    settings: Settings, *, stream: TextIO | None = None, log_format: str | None = None
) -> str:
    """Route every log record through structlog; returns the format used.

    ``log_format`` overrides ``settings.log_format`` (``json``, ``console`` or
    ``auto``); ``stream`` (default: the current ``sys.stderr``) is where lines go.
    Calling it again replaces the handler it installed before.
    """
    chosen = resolve_format(log_format or settings.log_format, stream)
    renderer: Processor
    final: list[Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if chosen == "json":
        final.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_colors(stream))
    final.append(renderer)
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=final, foreign_pre_chain=_shared_processors()
    )
    handler = _StderrHandler(stream)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)

    flush_access_log()
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    configure_structlog()
    global _json_handler
    _json_handler = handler if chosen == "json" else None
    return chosen


def configure_structlog() -> None:
    """Make structlog loggers hand their events to the standard library's ``logging``
    (done on import too, so structlog calls follow whatever handler is installed)."""
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def reset_logging() -> None:
    """Remove the handler :func:`configure_logging` installed (tests)."""
    flush_access_log()
    global _json_handler
    _json_handler = None
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()


def _colors(stream: TextIO | None) -> bool:
    target = stream if stream is not None else sys.stderr
    isatty = getattr(target, "isatty", None)
    return bool(callable(isatty) and isatty())


def get_logger(name: str) -> Any:
    """A structlog logger (a stdlib logger underneath, so it follows the setup above)."""
    return structlog.stdlib.get_logger(name)


_json_handler: _StderrHandler | None = None
"""The handler of :func:`configure_logging` when it writes JSON (the access fast path)."""

_access_stdlib = logging.getLogger(ACCESS_LOGGER)
_access_structlog = structlog.stdlib.get_logger(ACCESS_LOGGER)
_LEVEL_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.ERROR: "error"}


def log_access(level: int, fields: dict[str, Any], context: dict[str, Any] | None = None) -> None:
    """Log one access line (event ``request``) at ``level``, with the bound context.

    ``context``: the request's bound context when the caller knows it (the request
    middleware passes the request id it bound), which spares copying every context
    variable of the task on the hot path.

    In JSON mode the line is rendered here with orjson (the same keys as every
    other line: event, logger, level, timestamp and the bound context) and
    written in batches by :data:`ACCESS_BUFFER`, at a fraction of the cost of the
    general path: this runs once per request, on the hot path of cached reads.
    Otherwise (console, or logging not configured) it goes through structlog.
    """
    if not _access_stdlib.isEnabledFor(level):
        return
    handler = _json_handler
    if handler is None or level < handler.level:
        _access_structlog.log(level, "request", **fields)
        return
    line = {
        "event": "request",
        **fields,
        **(structlog.contextvars.get_contextvars() if context is None else context),
        "logger": ACCESS_LOGGER,
        "level": _LEVEL_NAMES.get(level) or logging.getLevelName(level).lower(),
        "timestamp": _utc_timestamp(),
    }
    ACCESS_BUFFER.add(orjson.dumps(line, default=str) + b"\n", urgent=level >= logging.WARNING)


_second_prefix: tuple[int, str] = (-1, "")


def _utc_timestamp() -> str:
    """Now in UTC as ISO 8601 with microseconds and ``Z`` (the same text as
    ``datetime.isoformat``), formatting the date and time once per second."""
    global _second_prefix
    now = time.time()
    second = int(now)
    if _second_prefix[0] != second:
        stamp = dt.datetime.fromtimestamp(second, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second_prefix = (second, stamp)
    return f"{_second_prefix[1]}.{int((now - second) * 1e6):06d}Z"


class AccessBuffer:
    """Access lines waiting to be written: one write per batch instead of per request.

    Lines are written when :attr:`max_lines` are waiting, :attr:`delay` seconds
    after the first one (a timer on the running event loop), at once for
    warnings and errors, outside an event loop, and by :func:`flush_access_log`
    (on shutdown and at exit).
    """

    def __init__(self, max_lines: int = 256, delay: float = 0.05) -> None:
        self.max_lines = max_lines
        self.delay = delay
        self._lines: list[bytes] = []
        self._lock = threading.Lock()
        self._scheduled = False

    def add(self, line: bytes, *, urgent: bool = False) -> None:
        """Queue one rendered line."""
        with self._lock:
            self._lines.append(line)
            full = urgent or len(self._lines) >= self.max_lines
            schedule = not full and not self._scheduled
            if schedule:
                self._scheduled = True
        if full:
            self.flush()
        elif schedule:
            try:
                asyncio.get_running_loop().call_later(self.delay, self.flush)
            except RuntimeError:  # no event loop here: write now
                self.flush()

    def flush(self) -> None:
        """Write every waiting line to the JSON handler's stream."""
        with self._lock:
            lines, self._lines = self._lines, []
            self._scheduled = False
        handler = _json_handler
        if not lines or handler is None:
            return
        text = b"".join(lines).decode()
        handler.acquire()
        try:
            handler.stream.write(text)
            handler.stream.flush()
        except Exception:  # a closed or broken stream must not fail a request
            pass
        finally:
            handler.release()


ACCESS_BUFFER = AccessBuffer()


def flush_access_log() -> None:
    """Write the access lines still waiting (shutdown, exit, tests)."""
    ACCESS_BUFFER.flush()


atexit.register(flush_access_log)


configure_structlog()
