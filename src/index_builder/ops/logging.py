"""Structured logs with structlog: JSON lines in production, readable text on a terminal.

:func:`configure_logging` installs one handler on the root logger whose
formatter is structlog's ``ProcessorFormatter``: records of the standard
library's ``logging`` (every ``logging.getLogger(...)`` of the project, uvicorn's)
and of structlog loggers come out alike, with a UTC timestamp, the level, the
logger name, the context bound with :mod:`structlog.contextvars`, and the id of
the request being served (:data:`REQUEST_ID`, set by the request middleware).
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from contextvars import ContextVar
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor

from index_builder.settings import Settings

REQUEST_ID: ContextVar[str | None] = ContextVar("index_builder_request_id", default=None)
"""The id of the request this task serves (one context variable set per request: a
fraction of the cost of binding it with :mod:`structlog.contextvars`)."""

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


def add_request_id(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """A structlog processor: the current :data:`REQUEST_ID`, unless the event has one."""
    request_id = REQUEST_ID.get()
    if request_id is not None:
        event_dict.setdefault("request_id", request_id)
    return event_dict


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        add_request_id,
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

    _flush_pending_access_lines()
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
    _flush_pending_access_lines()
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


def write_access_lines(entries: list[tuple[int, dict[str, Any], float]]) -> None:
    """Log a batch of access lines (event ``request``): (level, fields, Unix time) each.

    In JSON mode the lines are rendered here with orjson (the same keys as every
    other line: event, logger, level, timestamp, and the request id among the
    fields) and written in one go, at a fraction of the cost of the general path
    (the batches come from :mod:`index_builder.ops.request_records`). Otherwise
    (console, or logging not configured) each goes through structlog.
    """
    handler = _json_handler
    rendered: list[bytes] = []
    for level, fields, when in entries:
        if not _access_stdlib.isEnabledFor(level):
            continue
        if handler is None or level < handler.level:
            _access_structlog.log(level, "request", **fields)
            continue
        line = {
            "event": "request",
            **fields,
            "logger": ACCESS_LOGGER,
            "level": _LEVEL_NAMES.get(level) or logging.getLevelName(level).lower(),
            "timestamp": utc_timestamp(when),
        }
        rendered.append(orjson.dumps(line, default=str, option=orjson.OPT_APPEND_NEWLINE))
    if rendered and handler is not None:
        _write(handler, b"".join(rendered).decode())


def _write(handler: _StderrHandler, text: str) -> None:
    """Write rendered lines to the handler's stream (never failing the caller)."""
    handler.acquire()
    try:
        handler.stream.write(text)
        handler.stream.flush()
    except Exception:  # a closed or broken stream must not fail a request
        pass
    finally:
        handler.release()


_second_prefix: tuple[int, str] = (-1, "")


def utc_timestamp(now: float) -> str:
    """Unix time ``now`` in UTC as ISO 8601 with microseconds and ``Z`` (the same
    text as ``datetime.isoformat``), formatting the date and time once per second."""
    global _second_prefix
    second = int(now)
    if _second_prefix[0] != second:
        stamp = dt.datetime.fromtimestamp(second, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second_prefix = (second, stamp)
    return f"{_second_prefix[1]}.{int((now - second) * 1e6):06d}Z"


def _flush_pending_access_lines() -> None:
    """Write the access lines still waiting to the handler in place (before it changes)."""
    # imported here: request_records renders its lines with this module
    from index_builder.ops.request_records import flush_request_records

    flush_request_records()


configure_structlog()
