"""Retries of provider calls (tenacity): what is retried, how long it waits, and that
every retry and every give-up is logged and counted, never with an API key."""

from __future__ import annotations

import datetime as dt
import json
import logging
import random

import httpx
import pytest

from index_builder.errors import ProviderError
from index_builder.ops.metrics import PROVIDER_RETRIES, PROVIDER_RETRIES_EXHAUSTED
from index_builder.providers.resilience import RetryPolicy

from provider_fakes import FakeClock, Handler, fixture, json_response, make

START, END = dt.date(2024, 1, 2), dt.date(2024, 1, 8)
LOGGER = "index_builder.providers"
KEYS = ("poly-secret-key", "tiingo-secret-key")


def _retries(provider: str, reason: str) -> float:
    return float(PROVIDER_RETRIES.labels(provider=provider, reason=reason)._value.get())


def _exhausted(provider: str, reason: str) -> float:
    return float(PROVIDER_RETRIES_EXHAUSTED.labels(provider=provider, reason=reason)._value.get())


def _lines(caplog: pytest.LogCaptureFixture, prefix: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.getMessage().startswith(prefix)]


def _sequence(*responses: httpx.Response) -> Handler:
    calls = iter(responses)
    return lambda request: next(calls)


def test_a_503_then_200_is_retried_once_and_logged_with_its_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    before = _retries("tiingo", "server_error")
    handler = _sequence(
        httpx.Response(503, text="down"), json_response(fixture("tiingo_prices_acme.json"))
    )
    provider, rec, clock = make("tiingo", handler)
    assert len(provider.fetch_symbol("ACME", START, END).rows) == 5
    assert len(rec.requests) == 2 and len(clock.slept) == 1
    (line,) = _lines(caplog, "provider retry")
    assert line.levelno == logging.WARNING
    wait = clock.slept[0]
    assert 0.5 <= wait <= 1.0  # base 1 s, equal jitter
    assert line.getMessage() == (
        f"provider retry: provider=tiingo symbol=ACME attempt=1 max_attempts=4 "
        f"wait={wait:.3f} reason=server_error error='tiingo: HTTP 503 for ACME'"
    )
    fields = line.__dict__
    assert (fields["provider"], fields["symbol"], fields["attempt"]) == ("tiingo", "ACME", 1)
    assert fields["wait_seconds"] == wait and fields["reason"] == "server_error"
    assert fields["error"] == "tiingo: HTTP 503 for ACME"
    assert _retries("tiingo", "server_error") - before == 1
    assert not _lines(caplog, "provider retries exhausted")
    assert provider.breaker.state == "closed" and provider.breaker._consecutive == 0


def test_a_429_waits_its_retry_after(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    before = _retries("polygon", "rate_limited")
    handler = _sequence(
        httpx.Response(429, headers={"Retry-After": "12"}),
        json_response(fixture("polygon_aggs_acme.json")),
    )
    provider, _, clock = make("polygon", handler)
    provider.get_json("/v2/aggs/ticker/ACME/range/1/day/2024-01-02/2024-01-08", symbol="ACME")
    assert clock.slept == [12.0]
    (line,) = _lines(caplog, "provider retry")
    assert line.__dict__["wait_seconds"] == 12.0 and "wait=12.000" in line.getMessage()
    assert _retries("polygon", "rate_limited") - before == 1


def test_a_short_retry_after_does_not_shorten_the_backoff() -> None:
    policy = RetryPolicy(retries=3, base=4.0, maximum=60.0, sleep=lambda s: None)
    errors = iter([_transient(retry_after=0.5), _transient(retry_after=0.5)])

    def flaky() -> str:
        error = next(errors, None)
        if error is not None:
            raise error
        return "ok"

    assert policy.call(flaky) == "ok"
    assert 2.0 <= policy.delays[0] <= 4.0 and 4.0 <= policy.delays[1] <= 8.0


@pytest.mark.parametrize(("status", "reason"), [(404, "unknown_symbol"), (401, "unauthorized")])
def test_permanent_errors_are_not_retried(
    status: int, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    retries = _retries("tiingo", reason)
    exhausted = _exhausted("tiingo", reason)
    provider, rec, clock = make("tiingo", lambda r: httpx.Response(status, json={"detail": "no"}))
    with pytest.raises(ProviderError) as info:
        provider.fetch_symbol("ACME", START, END)
    assert info.value.reason == reason and len(rec.requests) == 1 and clock.slept == []
    assert not _lines(caplog, "provider retr")
    assert _retries("tiingo", reason) == retries and _exhausted("tiingo", reason) == exhausted


def test_give_up_after_the_last_attempt_is_logged_and_counted_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    retries = _retries("yahoo", "server_error")
    exhausted = _exhausted("yahoo", "server_error")
    provider, rec, clock = make("yahoo", lambda r: httpx.Response(502), provider_retries=2)
    with pytest.raises(ProviderError) as info:
        provider.fetch_symbol("ACME", START, END)
    assert info.value.reason == "server_error" and info.value.transient
    assert len(rec.requests) == 3 and len(clock.slept) == 2
    assert [r.__dict__["attempt"] for r in _lines(caplog, "provider retry:")] == [1, 2]
    (gave_up,) = _lines(caplog, "provider retries exhausted")
    assert gave_up.getMessage() == (
        "provider retries exhausted: provider=yahoo symbol=ACME attempts=3 "
        "reason=server_error error='yahoo: HTTP 502 for ACME'"
    )
    assert _retries("yahoo", "server_error") - retries == 2
    assert _exhausted("yahoo", "server_error") - exhausted == 1
    # the breaker sees one failed call, not one per attempt
    assert provider.breaker.state == "closed" and provider.breaker._consecutive == 1


def test_metric_labels_follow_the_provider_and_the_reason() -> None:
    before = {
        (p, r): _retries(p, r)
        for p in ("tiingo", "polygon")
        for r in ("timeout", "connection_error", "server_error")
    }

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    provider, _, _ = make("tiingo", handler, provider_retries=1)
    with pytest.raises(ProviderError):
        provider.fetch_symbol("ACME", START, END)
    after = {key: _retries(*key) - value for key, value in before.items()}
    assert after == {key: (1.0 if key == ("tiingo", "timeout") else 0.0) for key in before}
    assert _exhausted("tiingo", "timeout") >= 1


def test_no_key_in_any_log_line_even_when_the_server_echoes_headers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)

    def echo(status: int) -> Handler:
        def handler(request: httpx.Request) -> httpx.Response:
            headers = dict(request.headers)
            assert headers["authorization"].endswith("-secret-key")  # it is sent
            body = json.dumps({"error": "echo", "headers": headers, "url": str(request.url)})
            return httpx.Response(status, text=body, headers={"X-Echo-Auth": str(headers)})

        return handler

    def failing_connection(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"reset {request.headers['authorization']}", request=request)

    errors: list[ProviderError] = []
    for kind in ("polygon", "tiingo"):
        for handler in (echo(503), echo(429), echo(404), echo(400), failing_connection):
            provider, _, _ = make(kind, handler)
            with pytest.raises(ProviderError) as info:
                provider.fetch_symbol("ACME", START, END)
            errors.append(info.value)
    assert _lines(caplog, "provider retry:") and _lines(caplog, "provider retries exhausted")
    texts = [caplog.text]
    texts += [json.dumps(r.__dict__, default=str) for r in caplog.records]
    texts += [f"{e.message} {e.snippet}" for e in errors]
    assert all(key not in text for key in KEYS for text in texts)
    # the echoed 404 body is quarantine evidence, with the key masked
    assert any(e.snippet and "Bearer ***" in e.snippet for e in errors)


def test_retry_lines_are_redacted_by_the_policy(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    secret = "s3cr3t"
    policy = RetryPolicy(retries=1, sleep=lambda s: None, redact=lambda t: t.replace(secret, "*"))
    with pytest.raises(ProviderError):
        policy.call(lambda: _raise(_transient(message=f"x: HTTP 503 {secret}", symbol=secret)))
    records = _lines(caplog, "provider retr")
    assert len(records) == 2
    assert all(secret not in r.getMessage() for r in records)
    assert all(secret not in str(r.__dict__.get("error")) for r in records)


def test_backoff_is_exponential_with_equal_jitter_capped_at_the_maximum() -> None:
    clock = FakeClock()
    policy = RetryPolicy(retries=6, base=0.5, maximum=4.0, sleep=clock.sleep, rng=random.Random(7))
    with pytest.raises(ProviderError):
        policy.call(lambda: _raise(_transient()))
    reference = random.Random(7)
    expected = []
    for attempt in range(1, 7):
        backoff = min(4.0, 0.5 * 2 ** (attempt - 1))
        expected.append(backoff / 2 + reference.uniform(0, backoff / 2))
    assert clock.slept == expected == policy.delays


def test_errors_that_are_not_provider_errors_are_not_retried() -> None:
    clock = FakeClock()
    policy = RetryPolicy(retries=3, sleep=clock.sleep)
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("bug")

    with pytest.raises(ValueError, match="bug"):
        policy.call(broken)
    assert calls == [1] and clock.slept == []


def test_exhausted_retries_open_the_breaker_once_per_call_not_per_attempt() -> None:
    provider, rec, _ = make("tiingo", lambda r: httpx.Response(500))  # threshold 3, retries 3
    for calls in range(1, 4):
        assert provider.breaker.state == "closed"
        with pytest.raises(ProviderError):
            provider.fetch_symbol("ACME", START, END)
        assert len(rec.requests) == 4 * calls
    assert provider.breaker.state == "open"


def _transient(
    *, retry_after: float | None = None, message: str = "x: HTTP 503", symbol: str | None = None
) -> ProviderError:
    return ProviderError(
        message,
        provider="x",
        reason="server_error",
        symbol=symbol,
        transient=True,
        retry_after=retry_after,
    )


def _raise(error: Exception) -> None:
    raise error
