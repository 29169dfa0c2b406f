"""kill -9 of the server while it builds: after a restart nothing partial is
published (the index is built completely or not at all), the job says
``interrupted`` (or ``succeeded`` when the build had finished), the published
indices are served unchanged, and no other table changed."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import duckdb

from integrity import changed_tables, file_fingerprint

BUILD_TABLES = {
    "index_levels",
    "index_spells",
    "index_builds",
    "index_announcements",
    "index_definitions",  # the new index's pinned base date
    "build_version_counter",
    "api_jobs",
}


def test_a_server_killed_while_building_publishes_nothing_partial(
    database: Path, serve: Callable[..., object]
) -> None:
    server = serve(database)
    published = server.get("/index-performance").json()  # type: ignore[attr-defined]
    definitions = [
        {
            "id": f"kill-{n}",
            "name": "k",
            "top_n": 40,
            "weighting": "capped_market_cap",
            "cap": 0.05,
            "buffer": {"entry_rank": 35, "exit_rank": 45},
            "rank_by": "company",
        }
        for n in range(6)
    ]
    for d in definitions:
        assert server.post("/indices", json=d).status_code == 201  # type: ignore[attr-defined]
    server.stop()  # type: ignore[attr-defined]
    before = file_fingerprint(database)

    server = serve(database)
    accepted = server.post("/builds", json={"indices": [d["id"] for d in definitions]})  # type: ignore[attr-defined]
    assert accepted.status_code == 202, accepted.text
    job = accepted.json()["job_id"]
    deadline = time.monotonic() + 30
    while server.get(f"/jobs/{job}").json()["status"] == "queued":  # type: ignore[attr-defined]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL  # type: ignore[attr-defined]

    after = file_fingerprint(database)
    assert set(changed_tables(before, after)) <= BUILD_TABLES
    con = duckdb.connect(str(database), read_only=True)
    try:
        days = con.execute("SELECT count(DISTINCT date) FROM prices").fetchall()[0][0]
        for d in definitions:
            levels = con.execute(
                "SELECT count(*) FROM index_levels WHERE index_id = ?", [d["id"]]
            ).fetchall()[0][0]
            state = con.execute(
                "SELECT count(*) FROM index_builds WHERE index_id = ?", [d["id"]]
            ).fetchall()[0][0]
            assert (levels, state) in ((0, 0), (days, 1)), (d["id"], levels, state)
    finally:
        con.close()

    server = serve(database)
    status = server.get(f"/jobs/{job}").json()  # type: ignore[attr-defined]
    assert status["status"] in ("interrupted", "succeeded"), status
    if status["status"] == "interrupted":
        assert "stopped" in status["error"]["detail"]
    assert server.get("/index-performance").json() == published  # type: ignore[attr-defined]
    assert server.get("/health/ready").status_code == 200  # type: ignore[attr-defined]
