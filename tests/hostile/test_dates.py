"""Hostile dates: malformed, impossible, far past and far future dates, inverted and
open windows, and as-of moments in the future or garbage. Each is a 422 naming the
field and, where a range matters, the range; nothing is silently cut, and no table
changes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from index_builder.api.problems import PROBLEM_MEDIA_TYPE

READS = ("/index-performance", "/composition-changes")


def _problem(response: Any, field: str) -> str:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body: dict[str, Any] = response.json()
    assert body["type"].endswith(":invalid-input") and body.get("field") == field, body
    return str(body["detail"])


@pytest.mark.parametrize(
    "value", ["2023-02-30", "2023-13-01", "02/03/2023", "yesterday", "2023-01-01T25:00", "9" * 40]
)
@pytest.mark.parametrize("route", READS)
def test_malformed_dates_name_the_field(
    client: TestClient, intact: Callable[[], None], route: str, value: str
) -> None:
    _problem(client.get(route, params={"start_date": value}), "start_date")
    _problem(client.get(route, params={"end_date": value}), "end_date")


@pytest.mark.parametrize("route", READS)
def test_windows_outside_the_built_range_are_refused_with_the_range(
    client: TestClient, intact: Callable[[], None], route: str
) -> None:
    built = client.get("/indices/ew100").json()["build"]
    base, last = built["base_date"], built["built_through"]
    detail = _problem(client.get(route, params={"end_date": "9999-12-31"}), "end_date")
    assert "9999-12-31" in detail and f"{base}..{last}" in detail
    detail = _problem(client.get(route, params={"end_date": "2000-01-03"}), "end_date")
    assert "before the base date" in detail and f"{base}..{last}" in detail
    detail = _problem(client.get(route, params={"start_date": "0001-01-01"}), "start_date")
    assert "0001-01-01" in detail  # too long a window, or before the base date
    _problem(client.get(route, params={"start_date": last, "end_date": base}), "end_date")


def test_builds_refuse_end_dates_outside_the_data(
    client: TestClient, intact: Callable[[], None]
) -> None:
    detail = _problem(client.post("/build-index", json={"end_date": "9999-12-31"}), "end_date")
    assert "after the last trading day of the data" in detail
    detail = _problem(client.post("/build-index", json={"end_date": "1990-01-02"}), "end_date")
    assert "before the base date" in detail


def test_as_of_moments_in_the_future_or_malformed_are_refused(
    client: TestClient, intact: Callable[[], None]
) -> None:
    for route in READS:
        _problem(client.get(route, params={"as_of": "2999-01-01"}), "as_of")
        _problem(client.get(route, params={"as_of": "not-a-moment"}), "as_of")
    _problem(client.post("/build-index", json={"as_of": "2999-01-01"}), "as_of")
    _problem(client.post("/build-index", json={"as_of": "x" * 10_000}), "as_of")


def test_a_composition_date_outside_the_built_range(
    client: TestClient, intact: Callable[[], None]
) -> None:
    _problem(client.get("/index-composition", params={"date": "1900-01-01"}), "date")
    response = client.get("/index-composition", params={"date": "9999-12-31"})
    assert response.status_code == 404  # after the built range: nothing built then, says how
    assert "nothing on or after 9999-12-31" in response.json()["detail"]
