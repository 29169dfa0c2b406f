"""``GET /metrics``: the Prometheus exposition of this process or of every process.

In multiprocess mode (see :mod:`index_builder.ops.metrics`) the counters,
histograms and gauges are summed over every process writing to the shared
folder (``MultiProcessCollector``); otherwise they are this process's. Gauges
that describe the data (ingestion, freshness, builds) are read from the
database at scrape time by :class:`StoreCollector`, and ``index_builder_redis_up``
from the response cache after a ping, so they are right whichever process
ingested or built.

The endpoint is open (no API key) and outside every rate limit: scrapers poll it.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool

from index_builder.api.deps import Services
from index_builder.ops import metrics as m
from index_builder.ops.flags import FlagStore
from index_builder.ops.health import store_state
from index_builder.ops.request_records import flush_request_records
from index_builder.ops.state import StoreState, last_build_success

router = APIRouter(tags=["operations"])


class _Default(Collector):
    """This process's metrics (the default registry), for a per-scrape registry."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


class StoreCollector(Collector):
    """Gauges of one reading of the database and of the cache's Redis state."""

    def __init__(self, state: StoreState | None, redis_status: str) -> None:
        self.state = state
        self.redis_status = redis_status

    def collect(self) -> Iterator[Metric]:
        if self.redis_status != "disabled":
            up = GaugeMetricFamily(
                m.REDIS_UP, "1 while the response cache's Redis answers, else 0."
            )
            up.add_metric([], 1.0 if self.redis_status == "up" else 0.0)
            yield up
        state = self.state
        if state is None:
            return
        yield from self._ingestion(state)
        freshness = state.freshness
        stale = GaugeMetricFamily(
            m.DATA_STALE, "1 when the latest closed exchange session is not in the data."
        )
        stale.add_metric([], 1.0 if freshness.stale else 0.0)
        yield stale
        if freshness.age_seconds is not None:
            age = GaugeMetricFamily(
                m.DATA_AGE, "Seconds since the close of the last trading day stored."
            )
            age.add_metric([], freshness.age_seconds)
            yield age
        builds = GaugeMetricFamily(
            m.LAST_BUILD_SUCCESS,
            "1 when the index's last build succeeded, 0 when it failed.",
            labels=["index"],
        )
        for index_id, ok in sorted(last_build_success(state).items()):
            builds.add_metric([index_id], float(ok))
        yield builds
        waiting = GaugeMetricFamily(
            m.BUILD_DATA_WAITING,
            "1 when market data newer than the index's build waits for the next build.",
            labels=["index"],
        )
        for build in sorted(state.builds, key=lambda b: b.index_id):
            waiting.add_metric([build.index_id], float(build.index_id in state.waiting))
        yield waiting

    def _ingestion(self, state: StoreState) -> Iterator[Metric]:
        run = state.last_finished_run
        if run is None:
            return
        rows = GaugeMetricFamily(
            m.INGEST_ROWS,
            "Rows of the last finished ingestion run: accepted, or rejected by reason.",
            labels=["outcome", "reason"],
        )
        rows.add_metric(["accepted", "none"], float(run["rows_accepted"] or 0))
        for reason, count in sorted(state.rejections.items()):
            rows.add_metric(["rejected", reason], float(count))
        yield rows
        success = GaugeMetricFamily(
            m.LAST_INGEST_SUCCESS,
            "1 when the last finished ingestion run succeeded, else 0 (failed, or partial).",
        )
        success.add_metric([], 1.0 if run["status"] == "succeeded" else 0.0)
        yield success
        status = GaugeMetricFamily(
            m.LAST_INGEST_STATUS,
            "The last finished ingestion run's status: 1 for it, 0 for the others.",
            labels=["status"],
        )
        for name in RUN_OUTCOMES:
            status.add_metric([name], 1.0 if run["status"] == name else 0.0)
        yield status
        finished = run["finished_at"] or run["started_at"]
        if finished is not None:
            stamp = GaugeMetricFamily(
                m.LAST_INGEST_TIMESTAMP, "When the last finished ingestion run ended (Unix time)."
            )
            # stored timestamps are naive UTC
            stamp.add_metric([], finished.replace(tzinfo=dt.UTC).timestamp())
            yield stamp


RUN_OUTCOMES = ("succeeded", "partial", "failed")
"""How a finished ingestion run ends (``partial``: some symbols could not be fetched)."""


def render(state: StoreState | None, redis_status: str) -> bytes:
    """The exposition text of every metric."""
    registry = CollectorRegistry(auto_describe=False)
    if m.multiprocess_enabled():
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Default())
    registry.register(StoreCollector(state, redis_status))
    return generate_latest(registry)


def publish_flags(flags: FlagStore | None) -> None:
    """Set ``index_builder_feature_flag{flag}`` from the boolean flags in force (the
    flags file can change at any time, so this runs at every scrape)."""
    if flags is None:
        return
    for name, value in flags.current.model_dump().items():
        if isinstance(value, bool):
            m.FEATURE_FLAG.labels(flag=name).set(1.0 if value else 0.0)


def mark_process_dead() -> None:
    """Drop this process's live gauges from the shared folder (on shutdown)."""
    if m.multiprocess_enabled():
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


@router.get(
    "/metrics",
    summary="Prometheus metrics (open, not rate limited)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(request: Request) -> Response:
    """The Prometheus text format: requests, latency, cache, rate limits, builds,
    exports, ingestion, data age, Redis and circuit breakers (summed over every
    process in multiprocess mode)."""
    services: Services = request.app.state.services
    flush_request_records()  # this process's requests so far, not up to 50 ms ago
    try:
        state: StoreState | None = await store_state(services)
    except Exception:  # storage down: the process's own metrics still answer
        state = None
    await services.cache.ping()
    publish_flags(services.flags)
    body = await run_in_threadpool(render, state, services.cache.status)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
