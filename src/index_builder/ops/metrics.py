"""Prometheus metrics (prefix ``index_builder_``), defined once per process.

Only the metrics of the protection part (rate limits, API keys) are here; the
observability part owns the full set with the same names.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

RATE_LIMITED = Counter(
    "index_builder_rate_limited_total",
    "Requests refused with 429 by the rate limiter, by budget.",
    ["category"],
)
RATE_LIMITER_DEGRADED = Gauge(
    "index_builder_rate_limiter_degraded",
    "1 while the rate limiter counts in process memory because Redis is down.",
    multiprocess_mode="livemax",
)
AUTH_FAILURES = Counter(
    "index_builder_auth_failures_total",
    "Requests refused for their API key, by reason (missing, invalid, forbidden).",
    ["reason"],
)
