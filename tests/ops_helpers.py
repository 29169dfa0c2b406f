"""Helpers shared by the ops tests: fake clocks on the exchange calendar, the app's services."""

from __future__ import annotations

import datetime as dt

from fastapi.testclient import TestClient

from index_builder.api.deps import Services
from index_builder.calendar import get_calendar

GRACE = dt.timedelta(minutes=120)  # the default INDEX_BUILDER_FRESHNESS_GRACE_MINUTES


def after_close(day: dt.date, minutes: float) -> dt.datetime:
    """``minutes`` after the XNYS close of session ``day`` (aware UTC)."""
    close = get_calendar().close_of(day)
    assert close is not None, f"{day} is no session"
    return close + dt.timedelta(minutes=minutes)


def services_of(client: TestClient) -> Services:
    """The running app's services."""
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    return services


def metric_samples(exposition: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text exposition by (name, labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def sample(exposition: str, name: str, **labels: str) -> float:
    """One sample's value (0 when absent)."""
    return metric_samples(exposition).get((name, frozenset(labels.items())), 0.0)
