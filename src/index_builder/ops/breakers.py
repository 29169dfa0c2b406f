"""Circuit breakers of the market data providers, and the registry readiness reports.

A breaker registers itself under its provider's name; readiness calls its
``health()`` and an open breaker makes the service ``degraded``. Its state is
also the gauge ``index_builder_circuit_state{provider}`` (0 closed, 1 half-open,
2 open), which the breaker sets when it changes state (see :func:`publish_state`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Literal, Protocol

from index_builder.ops.metrics import CIRCUIT_STATE, PROVIDER_ERRORS

log = logging.getLogger("index_builder.providers")

CircuitState = Literal["closed", "half-open", "open"]
STATE_VALUES: dict[str, int] = {"closed": 0, "half-open": 1, "open": 2}


class Breaker(Protocol):
    """What readiness needs from a circuit breaker."""

    @property
    def state(self) -> CircuitState:
        """``closed``, ``half-open`` or ``open``."""
        ...

    def health(self) -> dict[str, object]:
        """``{"status": "ok" | "degraded" | "down", ...}``."""
        ...


BREAKERS: dict[str, Breaker] = {}
"""Breakers by provider name (empty until providers with breakers exist)."""


def publish_state(provider: str, state: CircuitState) -> None:
    """Set ``index_builder_circuit_state{provider}`` to the state's number."""
    CIRCUIT_STATE.labels(provider=provider).set(STATE_VALUES[state])


def breakers_health() -> dict[str, object]:
    """Every registered breaker's health; ``degraded`` when any is not ``ok``."""
    details = {name: breaker.health() for name, breaker in sorted(BREAKERS.items())}
    # an open circuit makes the service degraded, never unready by itself
    degraded = any(item.get("status") != "ok" for item in details.values())
    return {"status": "degraded" if degraded else "ok", "breakers": details}


class CircuitBreaker:
    """A circuit breaker for one provider (closed -> open -> half-open -> closed).

    * closed: calls go through; it opens after ``threshold`` consecutive failures,
      or when the last ``window`` calls (all of them made) failed at ``ratio`` or more;
    * open: calls are refused until ``cooldown`` seconds have passed, then
    * half-open: one probe call goes through; success closes, failure re-opens.

    ``clock`` is injectable (monotonic seconds) so tests drive time. Every
    transition is logged on ``index_builder.providers`` and published as
    ``index_builder_circuit_state{provider}``; failures count in
    ``index_builder_provider_errors_total{provider}``.
    """

    def __init__(
        self,
        provider: str,
        *,
        threshold: int = 5,
        ratio: float = 0.5,
        window: int = 20,
        cooldown: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider
        self.threshold = threshold
        self.ratio = ratio
        self.window = window
        self.cooldown = cooldown
        self._clock = clock
        self._state: CircuitState = "closed"
        self._consecutive = 0
        self._recent: deque[bool] = deque(maxlen=window)  # True: failure
        self._opened_at = 0.0
        self._probing = False
        self._lock = threading.Lock()
        publish_state(provider, "closed")

    @property
    def state(self) -> CircuitState:
        """The state now (an open circuit past its cool-down reads ``half-open``)."""
        with self._lock:
            self._cool_down()
            return self._state

    def allow(self) -> bool:
        """Whether a call may go through now (half-open: one probe at a time)."""
        with self._lock:
            self._cool_down()
            if self._state == "closed":
                return True
            if self._state == "half-open" and not self._probing:
                self._probing = True
                return True
            return False

    def record_success(self) -> None:
        """A call succeeded: a probe closes the circuit."""
        with self._lock:
            self._consecutive = 0
            self._recent.append(False)
            self._probing = False
            if self._state != "closed":
                self._recent.clear()
                self._move("closed", "probe succeeded")

    def record_failure(self) -> None:
        """A call failed: counts towards opening; a failed probe re-opens."""
        PROVIDER_ERRORS.labels(provider=self.provider).inc()
        with self._lock:
            self._consecutive += 1
            self._recent.append(True)
            self._probing = False
            if self._state == "half-open":
                self._open("probe failed")
            elif self._state == "closed":
                if self._consecutive >= self.threshold:
                    self._open(f"{self._consecutive} consecutive failures")
                elif len(self._recent) == self.window:
                    failed = sum(self._recent) / self.window
                    if failed >= self.ratio:
                        self._open(f"failure ratio {failed:.2f} over {self.window} calls")

    def retry_in(self) -> float:
        """Seconds until an open circuit lets a probe through (0 otherwise)."""
        with self._lock:
            if self._state != "open":
                return 0.0
            return max(0.0, self._opened_at + self.cooldown - self._clock())

    def health(self) -> dict[str, object]:
        """``ok`` when closed, else ``degraded`` with the state and the retry delay."""
        state = self.state
        detail: dict[str, object] = {
            "status": "ok" if state == "closed" else "degraded",
            "state": state,
            "consecutive_failures": self._consecutive,
        }
        if state == "open":
            detail["retry_in_seconds"] = round(self.retry_in(), 3)
        return detail

    def _open(self, why: str) -> None:
        self._opened_at = self._clock()
        self._move("open", why)

    def _cool_down(self) -> None:
        if self._state == "open" and self._clock() - self._opened_at >= self.cooldown:
            self._move("half-open", "cool-down over")

    def _move(self, state: CircuitState, why: str) -> None:
        previous, self._state = self._state, state
        if state == "closed":
            self._consecutive = 0
        publish_state(self.provider, state)
        log.warning(
            "circuit %s -> %s for %s: %s",
            previous,
            state,
            self.provider,
            why,
            extra={"provider": self.provider, "from_state": previous, "to_state": state},
        )


def register_breaker(breaker: CircuitBreaker) -> CircuitBreaker:
    """Register ``breaker`` under its provider (readiness and metrics see it)."""
    BREAKERS[breaker.provider] = breaker
    return breaker
