"""What the request middleware learns of each request, turned into request metrics and
access lines in batches.

Per request, :class:`~index_builder.ops.middleware.RequestMiddleware` only
appends one :data:`Record` to :data:`RECORDER`. A batch is processed when
:attr:`RequestRecorder.max_records` are waiting, :attr:`RequestRecorder.delay`
seconds after the first one (a timer on the running event loop), at once for a
``5xx``, before every ``GET /metrics`` of the process, on shutdown and at exit.
Processing a batch updates the request counter and the latency histogram once per
label set and renders the access lines in one go: per request, that costs a
fraction of updating the multiprocess metric files and rendering a line while
the request is served, on the hot path of cached reads (``docs/benchmarks.md``).
The price: a process's request metrics and access lines lag its requests by at
most :attr:`RequestRecorder.delay` (50 ms).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
from bisect import bisect_left
from typing import Any
from urllib.parse import unquote_plus

from index_builder.ops.logging import write_access_lines
from index_builder.ops.metrics import HTTP_DURATION, HTTP_REQUESTS, LATENCY_BUCKETS

log = logging.getLogger("index_builder.ops.request_records")

UNMATCHED = "unmatched"
"""The route label of requests no route matched (label values stay bounded)."""
QUIET_ROUTES = frozenset({"/health/live", "/health/ready", "/metrics"})
"""Probe and scrape routes: their access lines are logged at DEBUG, not INFO."""

Record = tuple[Any, str, int, float, str, Any, bytes, float]
"""One request: (the matched route or None, method, status, duration in seconds,
request id, ``scope["client"]``, query string, when it ended as Unix time)."""


def index_from_query(query_string: bytes) -> str | None:
    """The ``index`` query parameter, when there is one (cheap: no body is read)."""
    if b"index=" not in query_string:
        return None
    for part in query_string.split(b"&"):
        if part.startswith(b"index="):
            value = part[6:106].decode("latin-1")
            return unquote_plus(value) if "%" in value or "+" in value else value
    return None


def route_label(route: Any) -> str:
    """The route template of a matched route (``scope["route"]``), else ``unmatched``."""
    return getattr(route, "path", None) or UNMATCHED


class RequestRecorder:
    """Request records waiting to become metrics and access lines."""

    def __init__(self, max_records: int = 256, delay: float = 0.05) -> None:
        self.max_records = max_records
        self.delay = delay
        self._records: list[Record] = []
        self._lock = threading.Lock()
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def add(self, record: Record) -> None:
        """Queue one request's record (a ``5xx`` is processed at once)."""
        with self._lock:
            self._records.append(record)
            full = record[2] >= 500 or len(self._records) >= self.max_records
        if full:
            self.flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop here: process now
            self.flush()
            return
        if self._timer_loop is not loop:
            self._timer_loop = loop
            loop.call_later(self.delay, self.flush)

    def flush(self) -> None:
        """Process every waiting record: metrics first, then the access lines."""
        with self._lock:
            records, self._records = self._records, []
            self._timer_loop = None
        if not records:
            return
        try:
            self._count(records)
        except Exception:  # metrics must never fail a request nor cost its access line
            log.exception("request metrics of %d requests were not recorded", len(records))
        write_access_lines([_access_entry(record) for record in records])

    def _count(self, records: list[Record]) -> None:
        """Add the batch to the request counter and the latency histogram."""
        batch: dict[tuple[str, str, int], list[float]] = {}
        buckets = len(LATENCY_BUCKETS) + 1  # the last is +Inf
        for route, method, status, duration, *_ in records:
            key = (route_label(route), method, status)
            tally = batch.get(key)
            if tally is None:
                tally = batch[key] = [0.0] * (2 + buckets)
            tally[0] += 1
            tally[1] += duration
            tally[2 + bisect_left(LATENCY_BUCKETS, duration)] += 1
        for key, tally in batch.items():
            counter, histogram = self._children(key)
            counter.inc(tally[0])
            add_observations(histogram, tally[1], tally[2:])

    def _children(self, key: tuple[str, str, int]) -> tuple[Any, Any]:
        """The (counter, histogram) children of one label set, looked up once."""
        series = self._series.get(key)
        if series is None:
            route, method, status = key
            series = self._series[key] = (
                HTTP_REQUESTS.labels(route=route, method=method, status=str(status)),
                HTTP_DURATION.labels(route=route, method=method),
            )
        return series


def add_observations(histogram: Any, total: float, bucket_counts: list[float]) -> None:
    """What ``histogram.observe`` does for each of a batch of observations, once per
    bucket: add ``total`` to the sum and each count to its bucket (counts per bucket,
    not cumulative, as ``observe`` keeps them).

    prometheus_client has no public call for this; it uses the child's ``_sum`` and
    ``_buckets`` values, the ones ``observe`` updates (a test compares both ways).
    """
    histogram._sum.inc(total)
    for value, count in zip(histogram._buckets, bucket_counts, strict=True):
        if count:
            value.inc(count)


def _access_entry(record: Record) -> tuple[int, dict[str, Any], float]:
    """(level, fields, time) of one record's access line."""
    route_obj, method, status, duration, request_id, client, query, ended = record
    route = route_label(route_obj)
    fields: dict[str, Any] = {
        "method": method,
        "route": route,
        "status": status,
        "duration_ms": round(duration * 1000, 3),
        "client": client[0] if client else None,
    }
    index = index_from_query(query)
    if index is not None:
        fields["index"] = index
    fields["request_id"] = request_id
    if status >= 500:
        level = logging.ERROR
    elif route in QUIET_ROUTES:
        level = logging.DEBUG
    else:
        level = logging.INFO
    return level, fields, ended


RECORDER = RequestRecorder()
"""The process's recorder (the middleware's, flushed by ``GET /metrics`` and on shutdown)."""


def flush_request_records() -> None:
    """Process the waiting records now (before a scrape, on shutdown, at exit, in tests)."""
    RECORDER.flush()


atexit.register(flush_request_records)
