"""Every Prometheus metric of the service (prefix ``index_builder_``), in one place.

Other modules import the metric objects from here and increment them. Metrics
work across processes: when ``INDEX_BUILDER_METRICS_DIR`` (or the standard
``PROMETHEUS_MULTIPROC_DIR``) is in the environment before this module is
imported, prometheus_client's multiprocess mode is switched on (each process
writes its values to files in that folder, ``GET /metrics`` sums them) and every
gauge declares how processes combine (``multiprocess_mode``).

Metrics read from the database at scrape time (ingestion, data age, builds) and
the Redis state are not here: see :mod:`index_builder.ops.collectors`.
"""

from __future__ import annotations

import os
from pathlib import Path

_METRICS_DIR_ENV = "INDEX_BUILDER_METRICS_DIR"
_PROMETHEUS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _enable_multiprocess_from_env() -> str | None:
    """Set ``PROMETHEUS_MULTIPROC_DIR`` from ``INDEX_BUILDER_METRICS_DIR`` (creating the
    folder) before any metric exists; returns the folder, or None (one process)."""
    folder = os.environ.get(_PROMETHEUS_DIR_ENV) or os.environ.get(_METRICS_DIR_ENV)
    if not folder:
        return None
    Path(folder).mkdir(parents=True, exist_ok=True)
    os.environ[_PROMETHEUS_DIR_ENV] = folder
    return folder


MULTIPROCESS_DIR = _enable_multiprocess_from_env()
"""The shared metrics folder of this process (None: single-process metrics)."""

# prometheus_client picks its value class when first imported: imported after the
# environment is set above, and refreshed in case another module imported it first.
from prometheus_client import (  # noqa: E402
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    values,
)

values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
# no *_created series: the same output in both modes
disable_created_metrics()  # type: ignore[no-untyped-call]

PREFIX = "index_builder_"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Request latency buckets (seconds): cached reads take about a millisecond."""

JOB_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
"""Build and export duration buckets (seconds)."""

# --------------------------------------------------------------------------- HTTP
HTTP_REQUESTS = Counter(
    "index_builder_http_requests_total",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "index_builder_http_request_duration_seconds",
    "HTTP request duration (until the response is sent), by route template and method.",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)

# --------------------------------------------------------------------------- cache
CACHE_REQUESTS = Counter(
    "index_builder_cache_requests_total",
    "Response cache lookups: hit, miss, or error (Redis unavailable).",
    ["result"],
)

# --------------------------------------------------------------------------- protection
RATE_LIMITED = Counter(
    "index_builder_rate_limited_total",
    "Requests refused with 429, by budget (reads, builds, exports).",
    ["category"],
)
RATE_LIMITER_DEGRADED = Gauge(
    "index_builder_rate_limiter_degraded",
    "1 while a process limits locally because Redis is down.",
    multiprocess_mode="livemax",
)
AUTH_FAILURES = Counter(
    "index_builder_auth_failures_total",
    "Refused API keys: missing, invalid, forbidden (lacking the scope), or throttled (429: "
    "the client address has spent its failed-key budget).",
    ["reason"],
)
AUTH_BLOCKS = Counter(
    "index_builder_auth_blocks_total",
    "Client addresses that spent their failed-key budget (one per address and window).",
)

# --------------------------------------------------------------------------- builds, exports
BUILD_DURATION = Histogram(
    "index_builder_build_duration_seconds",
    "Duration of index builds run by the API (successful or not).",
    ["index"],
    buckets=JOB_BUCKETS,
)
BUILD_FAILURES = Counter(
    "index_builder_build_failures_total", "Index builds that failed.", ["index"]
)
EXPORT_DURATION = Histogram(
    "index_builder_export_duration_seconds",
    "Duration of writing an export file (successful or not).",
    ["format"],
    buckets=JOB_BUCKETS,
)
EXPORT_FAILURES = Counter("index_builder_export_failures_total", "Exports that failed.", ["format"])

# --------------------------------------------------------------------------- providers
PROVIDER_ERRORS = Counter(
    "index_builder_provider_errors_total", "Errors from market data providers.", ["provider"]
)
PROVIDER_RETRIES = Counter(
    "index_builder_provider_retries_total",
    "Retries of transient provider errors (each retry counts), by provider and error reason.",
    ["provider", "reason"],
)
PROVIDER_RETRIES_EXHAUSTED = Counter(
    "index_builder_provider_retries_exhausted_total",
    "Provider calls given up with a transient error after the last allowed attempt.",
    ["provider", "reason"],
)
CIRCUIT_STATE = Gauge(
    "index_builder_circuit_state",
    "Circuit breaker state per provider: 0 closed, 1 half-open, 2 open.",
    ["provider"],
    multiprocess_mode="livemax",
)

# --------------------------------------------------------------------------- daily schedule
SCHEDULE_STEP_FAILURES = Counter(
    "index_builder_schedule_step_failures_total",
    "Failed attempts of a daily-cycle step (each retry counts).",
    ["step"],
)
SCHEDULE_LAST_SUCCESS = Gauge(
    "index_builder_schedule_last_success_timestamp_seconds",
    "When the daily cycle last finished successfully (Unix time; 0: never in this process).",
    multiprocess_mode="max",
)

# --------------------------------------------------------------------------- flags
FEATURE_FLAG = Gauge(
    "index_builder_feature_flag",
    "Boolean feature flags in force (1 on, 0 off).",
    ["flag"],
    multiprocess_mode="livemostrecent",
)

# --------------------------------------------------------------------------- shadow storage
# The shadow_storage flag (storage/shadow.py, docs/operations.md): every write goes to the
# primary store and then to the shadow; a sample of the reads is repeated on the shadow.
SHADOW_COMPARISONS = Counter(
    "index_builder_shadow_comparisons_total",
    "Reads repeated on the shadow store and writes replayed there whose results were "
    "compared with the primary's, by store operation.",
    ["operation"],
)
SHADOW_MISMATCHES = Counter(
    "index_builder_shadow_mismatches_total",
    "Comparisons where the shadow store answered differently from the primary, by store "
    "operation (each one logged with its arguments; the shadow is then diverged).",
    ["operation"],
)
SHADOW_WRITE_FAILURES = Counter(
    "index_builder_shadow_write_failures_total",
    "Writes that succeeded on the primary store and failed on the shadow (the request "
    "still succeeded; the shadow is then diverged), by store operation.",
    ["operation"],
)
SHADOW_READ_FAILURES = Counter(
    "index_builder_shadow_read_failures_total",
    "Sampled reads the shadow store could not answer (storage unavailable), by store "
    "operation: not compared, not a mismatch.",
    ["operation"],
)
SHADOW_DIVERGED = Gauge(
    "index_builder_shadow_diverged",
    "1 while the shadow store is diverged (a write failed or differed there, a comparison "
    "mismatched, or it was not a copy of the primary at start): it is neither written nor "
    "compared until re-synced with 'index-builder migrate-storage' and a restart; 0 while "
    "it is in step. Absent without the shadow_storage flag.",
    multiprocess_mode="livemax",
)

# --------------------------------------------------------------------------- scrape-time
# Gauges computed from the database and the cache when /metrics is read
# (ops/collectors.py); listed here so every metric name of the service is in
# this module.
INGEST_ROWS = PREFIX + "ingest_rows"
"""{outcome="accepted|rejected", reason}: rows of the last finished ingestion run."""
LAST_INGEST_SUCCESS = PREFIX + "last_ingest_success"
"""1 when the last finished ingestion run succeeded, else 0 (failed, or partial)."""
LAST_INGEST_STATUS = PREFIX + "last_ingest_status"
"""{status="succeeded|partial|failed"}: 1 for the last finished run's status, 0 for the others."""
LAST_INGEST_TIMESTAMP = PREFIX + "last_ingest_timestamp_seconds"
"""When the last finished ingestion run ended (Unix time)."""
DATA_AGE = PREFIX + "data_age_seconds"
"""Seconds since the close of the last trading day stored."""
DATA_STALE = PREFIX + "data_stale"
"""1 when the last trading day stored is older than the latest session that should be in."""
LAST_BUILD_SUCCESS = PREFIX + "last_build_success"
"""{index}: 1 when the index's last build succeeded, 0 when it failed."""
BUILD_DATA_WAITING = PREFIX + "build_data_waiting"
"""{index}: 1 when market data newer than the index's build waits for the next build."""
REDIS_UP = PREFIX + "redis_up"
"""1 while the response cache's Redis answers, 0 while it is down (absent: not configured)."""

SCRAPE_TIME_METRICS = (
    INGEST_ROWS,
    LAST_INGEST_SUCCESS,
    LAST_INGEST_STATUS,
    LAST_INGEST_TIMESTAMP,
    DATA_AGE,
    DATA_STALE,
    LAST_BUILD_SUCCESS,
    BUILD_DATA_WAITING,
    REDIS_UP,
)


def multiprocess_enabled() -> bool:
    """True when values are shared through files (``PROMETHEUS_MULTIPROC_DIR``)."""
    return MULTIPROCESS_DIR is not None
