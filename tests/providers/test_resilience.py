"""The circuit breaker's state machine and the rate limiter, on a fake clock."""

from __future__ import annotations

import logging

import httpx
import pytest

from index_builder.errors import ProviderError
from index_builder.ops.breakers import BREAKERS, CircuitBreaker, breakers_health
from index_builder.ops.metrics import CIRCUIT_STATE, PROVIDER_ERRORS
from index_builder.providers.resilience import RateLimiter

from provider_fakes import FakeClock, fixture, json_response, make


def _gauge(provider: str) -> float:
    return float(CIRCUIT_STATE.labels(provider=provider)._value.get())


def test_breaker_opens_after_k_consecutive_failures_and_probes_after_cool_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="index_builder.providers")
    clock = FakeClock()
    breaker = CircuitBreaker("vendor-x", threshold=3, cooldown=30, clock=clock)
    errors_before = PROVIDER_ERRORS.labels(provider="vendor-x")._value.get()
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_success()  # a success resets the consecutive count
    for _ in range(3):
        breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    assert _gauge("vendor-x") == 2
    assert PROVIDER_ERRORS.labels(provider="vendor-x")._value.get() - errors_before == 5
    clock.now += 29.9
    assert breaker.state == "open"
    clock.now += 0.1
    assert breaker.state == "half-open" and _gauge("vendor-x") == 1
    assert breaker.allow()  # one probe
    assert not breaker.allow()  # ... at a time
    breaker.record_failure()  # the probe fails: open again, for another cool-down
    assert breaker.state == "open"
    clock.now += 30
    assert breaker.allow()
    breaker.record_success()  # the probe succeeds: closed
    assert breaker.state == "closed" and _gauge("vendor-x") == 0
    moves = [r.getMessage() for r in caplog.records if "circuit" in r.getMessage()]
    assert [m.split(" for ")[0] for m in moves] == [
        "circuit closed -> open",
        "circuit open -> half-open",
        "circuit half-open -> open",
        "circuit open -> half-open",
        "circuit half-open -> closed",
    ]


def test_breaker_opens_on_a_failure_ratio_over_the_window() -> None:
    breaker = CircuitBreaker("vendor-y", threshold=100, ratio=0.5, window=10, clock=FakeClock())
    for i in range(9):
        (breaker.record_failure if i % 2 else breaker.record_success)()
    assert breaker.state == "closed"  # 4 of 9: the window is not full yet
    breaker.record_failure()  # 5 of 10
    assert breaker.state == "open"


def test_open_breaker_degrades_readiness() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("vendor-z", threshold=1, cooldown=10, clock=clock)
    BREAKERS["vendor-z"] = breaker
    assert breakers_health()["status"] == "ok"
    breaker.record_failure()
    health = breakers_health()
    assert health["status"] == "degraded"
    assert health["breakers"]["vendor-z"]["state"] == "open"  # type: ignore[index]


def test_provider_stops_calling_while_its_circuit_is_open() -> None:
    provider, rec, clock = make("tiingo", lambda r: httpx.Response(500), provider_retries=0)
    for _ in range(3):
        with pytest.raises(ProviderError, match="HTTP 500"):
            provider.fetch_symbol("ACME", *_window())
    assert provider.breaker.state == "open" and len(rec.requests) == 3
    with pytest.raises(ProviderError) as info:
        provider.fetch_symbol("ACME", *_window())
    assert info.value.reason == "circuit_open" and len(rec.requests) == 3
    assert BREAKERS["tiingo"] is provider.breaker  # readiness sees it
    # after the cool-down one probe goes through; it succeeds and closes the circuit
    rec.handler = lambda r: json_response(fixture("tiingo_prices_acme.json"))
    clock.now += 30
    assert len(provider.fetch_symbol("ACME", *_window()).rows) == 5
    assert provider.breaker.state == "closed"


def test_unknown_symbols_do_not_open_the_circuit() -> None:
    provider, _, _ = make("tiingo", lambda r: httpx.Response(404, json={"detail": "not found"}))
    for _ in range(5):
        with pytest.raises(ProviderError):
            provider.fetch_symbol("NOPE", *_window())
    assert provider.breaker.state == "closed"


def test_rate_limiter_spaces_calls_to_the_published_limit() -> None:
    clock = FakeClock()
    limiter = RateLimiter(5, clock=clock, sleep=clock.sleep)  # Polygon's free plan
    start = clock.now
    for _ in range(6):
        limiter.acquire()
    # the first call is free, then one every 12 s
    assert clock.now - start == pytest.approx(60.0)
    assert clock.slept == pytest.approx([12.0] * 5)


def test_rate_limiter_allows_a_burst_then_the_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(60, burst=3, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        limiter.acquire()
    assert clock.slept == []
    limiter.acquire()
    assert clock.slept == pytest.approx([1.0])


def test_provider_requests_go_through_the_rate_limiter() -> None:
    provider, rec, clock = make(
        "tiingo",
        lambda r: json_response(fixture("tiingo_prices_acme.json")),
        tiingo_rate_limit_per_minute=30,
    )
    for _ in range(3):
        provider.fetch_symbol("ACME", *_window())
    assert len(rec.requests) == 3 and clock.slept == pytest.approx([2.0, 2.0])


def _window() -> tuple[object, object]:
    import datetime as dt

    return dt.date(2024, 1, 2), dt.date(2024, 1, 8)
