"""Feature flags through the real app: GET /admin/flags, reload without restart, gates."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from index_builder.api.app import create_app

from api_helpers import make_settings


@pytest.fixture
def flags_file(tmp_path: Path) -> Path:
    return tmp_path / "flags.yaml"


@pytest.fixture
def flagged(database: Path, flags_file: Path) -> Iterator[TestClient]:
    settings = make_settings(
        database, None, flags_file=flags_file, flags_reload_seconds=0, async_build_days=1
    )
    with TestClient(create_app(settings)) as client:
        yield client


def test_flags_are_listed_and_follow_the_file_without_a_restart(
    flagged: TestClient, flags_file: Path
) -> None:
    body = flagged.get("/admin/flags").json()
    assert body["status"] == "ok" and body["file"] == str(flags_file)
    by_name = {f["name"]: f for f in body["flags"]}
    assert by_name["async_builds"] == {
        "name": "async_builds",
        "value": True,
        "default": True,
        "type": "bool",
        "source": "default",
        "description": by_name["async_builds"]["description"],
    }
    # async allowed: a build larger than async_build_days (1) answers 202
    assert flagged.post("/build-index", json={"index": "ew-sector-energy"}).status_code == 202
    flags_file.write_text("async_builds: false\n")
    refused = flagged.post("/build-index", json={"index": "ew100", "async": True})
    assert refused.status_code == 409 and refused.json()["field"] == "async_builds"
    # large builds now run in the request
    done = flagged.post("/build-index", json={"index": "ew-sector-utilities", "end_date": None})
    assert done.status_code == 200 and done.json()["index"] == "ew-sector-utilities"
    by_name = {f["name"]: f for f in flagged.get("/admin/flags").json()["flags"]}
    assert by_name["async_builds"]["value"] is False
    assert by_name["async_builds"]["source"] == "file"


def test_a_broken_flags_file_is_reported_and_keeps_the_last_good_flags(
    flagged: TestClient, flags_file: Path
) -> None:
    flags_file.write_text("methodology_part2: false\n")
    assert flagged.post("/admin/flags/reload").json()["status"] == "ok"
    definition = {"id": "lagged", "name": "Lagged", "top_n": 10, "effective_lag": 1}
    refused = flagged.post("/indices", json=definition)
    assert refused.status_code == 409 and "methodology_part2" in refused.json()["detail"]
    assert flagged.post("/build-index", json={"index": "ew100-buffer"}).status_code == 409
    flags_file.write_text("methodology_part2: [not, a, bool]\n")
    body = flagged.post("/admin/flags/reload").json()
    assert body["status"] == "degraded" and "methodology_part2" in body["error"]
    assert flagged.post("/indices", json=definition).status_code == 409  # still off
    flags_file.write_text("methodology_part2: true\nweighting_sqrt_market_cap: true\n")
    assert flagged.post("/indices", json=definition).status_code == 201
    sqrt = {"id": "sqrt20", "name": "Sqrt", "top_n": 20, "weighting": "sqrt_market_cap"}
    assert flagged.post("/indices", json=sqrt).status_code == 201
    assert flagged.post("/build-index", json={"index": "sqrt20"}).status_code in (200, 202)
