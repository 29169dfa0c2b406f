"""The registry of circuit breakers that readiness reports (providers add theirs later).

A breaker registers itself under its provider's name; readiness calls its
``health()`` and an open breaker makes the service ``degraded``. Its state is
also the gauge ``index_builder_circuit_state{provider}`` (0 closed, 1 half-open,
2 open), which the breaker sets when it changes state (see :func:`publish_state`).
"""

from __future__ import annotations

from typing import Literal, Protocol

from index_builder.ops.metrics import CIRCUIT_STATE

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
