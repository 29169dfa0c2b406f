"""Resilience of provider calls: retries with backoff and a client-side rate limiter.

Only transient errors are retried (429 honouring ``Retry-After``, 5xx, timeouts,
connection resets: :attr:`ProviderError.transient`); a 4xx that will not change
is raised at once. Delays grow exponentially with "equal jitter" (half fixed,
half random) up to a maximum; a longer ``Retry-After`` wins. Sleep, clock and
randomness are injectable, so tests never wait.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from index_builder.errors import ProviderError

T = TypeVar("T")
Sleep = Callable[[float], None]
Clock = Callable[[], float]


@dataclass
class RetryPolicy:
    """Retry a call on transient :class:`ProviderError` s, with exponential backoff."""

    retries: int = 4
    base: float = 0.5
    maximum: float = 30.0
    sleep: Sleep = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    delays: list[float] = field(default_factory=list)
    """Every delay slept (for tests and logs)."""

    def delay(self, attempt: int, error: ProviderError) -> float:
        """The wait before retry ``attempt`` (1-based) after ``error``."""
        backoff = min(self.maximum, self.base * 2 ** (attempt - 1))
        jittered = float(backoff / 2 + self.rng.uniform(0, backoff / 2))
        if error.retry_after is not None:
            return max(float(error.retry_after), jittered)
        return jittered

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()``, retried up to ``retries`` times on transient errors."""
        attempt = 0
        while True:
            try:
                return fn()
            except ProviderError as exc:
                attempt += 1
                if not exc.transient or attempt > self.retries:
                    raise
                wait = self.delay(attempt, exc)
                self.delays.append(wait)
                self.sleep(wait)


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
