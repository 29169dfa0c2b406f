"""Resilience of provider calls: retries with backoff (tenacity) and a client-side rate limiter.

Only transient errors are retried (429 honouring ``Retry-After``, 5xx, timeouts,
connection resets: :attr:`ProviderError.transient`); a 4xx that will not change
is raised at once. Delays grow exponentially with "equal jitter" (half fixed,
half random) up to a maximum; a longer ``Retry-After`` wins. Sleep, clock and
randomness are injectable, so tests never wait.

Every retry is a warning of the logger ``index_builder.providers`` and a count
in ``index_builder_provider_retries_total{provider, reason}``; a transient error
still there after the last allowed attempt is logged once more ("retries exhausted") and
counted in ``index_builder_provider_retries_exhausted_total{provider, reason}``.
The lines carry the error's message (built by the providers from fixed text and
the symbol, never a URL, a header or a payload), passed through ``redact``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_base, wait_exponential

from index_builder.errors import ProviderError
from index_builder.ops.metrics import PROVIDER_RETRIES, PROVIDER_RETRIES_EXHAUSTED

T = TypeVar("T")
Sleep = Callable[[float], None]
Clock = Callable[[], float]

log = logging.getLogger("index_builder.providers")


def _no_redaction(text: str) -> str:
    return text


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` is worth retrying (a transient :class:`ProviderError`)."""
    return isinstance(error, ProviderError) and error.transient


def _failure(state: RetryCallState) -> ProviderError:
    """The transient error the attempt in ``state`` failed with."""
    error = state.outcome.exception() if state.outcome is not None else None
    assert isinstance(error, ProviderError)  # only those are retried (``is_transient``)
    return error


class EqualJitterWait(wait_base):
    """``min(maximum, base * 2 ** (attempt - 1))``: half of it fixed, half at random."""

    def __init__(self, base: float, maximum: float, rng: random.Random) -> None:
        self.backoff = wait_exponential(multiplier=base, max=maximum, exp_base=2)
        self.rng = rng

    def __call__(self, retry_state: RetryCallState) -> float:
        backoff = float(self.backoff(retry_state))
        return float(backoff / 2 + self.rng.uniform(0, backoff / 2))


class RetryAfterWait(wait_base):
    """The error's ``Retry-After`` (seconds) when longer than ``fallback``'s wait."""

    def __init__(self, fallback: wait_base) -> None:
        self.fallback = fallback

    def __call__(self, retry_state: RetryCallState) -> float:
        wait = float(self.fallback(retry_state))
        retry_after = _failure(retry_state).retry_after
        return wait if retry_after is None else max(float(retry_after), wait)


@dataclass
class RetryPolicy:
    """Retry a call on transient :class:`ProviderError` s, with exponential backoff."""

    retries: int = 4
    base: float = 0.5
    maximum: float = 30.0
    sleep: Sleep = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    redact: Callable[[str], str] = _no_redaction
    """Applied to every error message logged (the provider removes its credentials)."""
    delays: list[float] = field(default_factory=list)
    """Every delay slept (for tests and logs)."""

    def _wait(self) -> wait_base:
        return RetryAfterWait(EqualJitterWait(self.base, self.maximum, self.rng))

    def retrying(self) -> Retrying:
        """The tenacity controller of one call (a new one per call: thread-safe)."""
        return Retrying(
            sleep=self.sleep,
            stop=stop_after_attempt(self.retries + 1),
            wait=self._wait(),
            retry=retry_if_exception(is_transient),
            before_sleep=self._before_sleep,
            retry_error_callback=self._give_up,
        )

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()``, retried up to ``retries`` times on transient errors."""
        result: T = self.retrying()(fn)
        return result

    def _fields(self, error: ProviderError) -> dict[str, object]:
        """The fields every retry line carries (message and symbol redacted)."""
        return {
            "provider": error.provider,
            "symbol": None if error.symbol is None else self.redact(error.symbol),
            "reason": error.reason,
            "error": self.redact(str(error)),
        }

    def _before_sleep(self, state: RetryCallState) -> None:
        error = _failure(state)
        wait = float(state.upcoming_sleep)
        self.delays.append(wait)
        PROVIDER_RETRIES.labels(provider=error.provider, reason=error.reason).inc()
        fields = self._fields(error)
        log.warning(
            "provider retry: provider=%s symbol=%s attempt=%d max_attempts=%d wait=%.3f "
            "reason=%s error=%r",
            fields["provider"],
            fields["symbol"] or "-",
            state.attempt_number,
            self.retries + 1,
            wait,
            fields["reason"],
            fields["error"],
            extra={
                **fields,
                "attempt": state.attempt_number,
                "max_attempts": self.retries + 1,
                "wait_seconds": wait,
            },
        )

    def _give_up(self, state: RetryCallState) -> NoReturn:
        """After the last allowed attempt: log and count once, raise the last error."""
        error = _failure(state)
        PROVIDER_RETRIES_EXHAUSTED.labels(provider=error.provider, reason=error.reason).inc()
        fields = self._fields(error)
        log.warning(
            "provider retries exhausted: provider=%s symbol=%s attempts=%d reason=%s error=%r",
            fields["provider"],
            fields["symbol"] or "-",
            state.attempt_number,
            fields["reason"],
            fields["error"],
            extra={**fields, "attempts": state.attempt_number},
        )
        raise error


class RateLimiter:
    """A token bucket: at most ``per_minute`` calls a minute, bursts up to ``burst``.

    :meth:`acquire` blocks (with the injectable ``sleep``) until a token is free.
    """

    def __init__(
        self,
        per_minute: float,
        *,
        burst: int = 1,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.rate = per_minute / 60.0  # tokens per second
        self.burst = float(max(1, burst))
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._last = clock()
        self._lock = threading.Lock()
        self.waited = 0.0
        """Total seconds slept waiting for tokens."""

    def acquire(self) -> None:
        """Take one token, waiting for it when the bucket is empty."""
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= 1 - 1e-9:  # float error must not spin
                    self._tokens = max(0.0, self._tokens - 1)
                    return
                wait = (1 - self._tokens) / self.rate
            self.waited += wait
            self._sleep(wait)
