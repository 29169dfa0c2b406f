"""Results belong to a definition version: replacing or removing a definition removes
its results and cached answers at once, and a build of the old rules that is still
running is discarded at its commit, saying why."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import index_builder.services.builds as builds
from index_builder.api.app import create_app
from index_builder.engine.definitions import parse_definition
from index_builder.errors import ConflictError
from index_builder.services.builds import BuildResult, IndexBuilder
from index_builder.services.catalog import add_definition, remove_definition
from index_builder.storage.duckdb.store import DuckDBStore

from api_helpers import make_settings
from redis_server import RedisServer

RULES = {"id": "versioned", "name": "v", "top_n": 10}
NEW_RULES = {**RULES, "top_n": 12}


def test_a_replaced_definition_is_not_served_from_the_database_or_redis(
    database: Path, redis_server: RedisServer
) -> None:
    redis_server.flush()
    with TestClient(create_app(make_settings(database, redis_server.url))) as client:
        assert client.post("/indices", json=RULES).status_code == 201
        assert client.post("/build-index", json={"index": "versioned"}).status_code == 200
        old = client.get("/index-performance", params={"index": "versioned"})
        assert (
            client.get("/index-performance", params={"index": "versioned"}).headers["x-cache"]
            == "HIT"
        )
        replaced = client.post("/indices?replace=true", json=NEW_RULES)
        assert replaced.status_code == 201 and replaced.json()["build"] is None
        stale = client.get("/index-performance", params={"index": "versioned"})
        assert stale.status_code == 404 and "not built yet" in stale.json()["detail"]
        ready = client.get("/health/ready").json()["components"]["builds"]["indices"]
        assert "versioned" not in ready  # no build of these rules: nothing says up to date
        assert client.post("/build-index", json={"index": "versioned"}).status_code == 200
        new = client.get("/index-performance", params={"index": "versioned"})
        assert new.headers["x-cache"] == "MISS" and new.json() != old.json()
        # a name-only change keeps the results
        renamed = client.post("/indices?replace=true", json={**NEW_RULES, "name": "renamed"})
        assert renamed.json()["build"] is not None


@pytest.mark.parametrize("change", ["replaced", "removed"])
def test_a_build_of_rules_changed_meanwhile_is_discarded_at_commit(
    database: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    with DuckDBStore(database) as store:
        add_definition(store, parse_definition(RULES))
        computing, release = threading.Event(), threading.Event()
        real = builds.compute_index

        def slow(*args: Any, **kwargs: Any) -> Any:
            computing.set()
            release.wait(30)
            return real(*args, **kwargs)

        monkeypatch.setattr(builds, "compute_index", slow)
        results: list[BuildResult] = []
        worker = threading.Thread(
            target=lambda: results.extend(IndexBuilder(store, store.calendar).build(["versioned"]))
        )
        worker.start()
        assert computing.wait(30)
        if change == "replaced":
            add_definition(store, parse_definition(NEW_RULES), replace=True)
        else:
            remove_definition(store, "versioned")
        release.set()
        worker.join(30)
        (result,) = results
        assert result.failed and isinstance(result.error, ConflictError)
        assert f"{'rules were replaced' if change == 'replaced' else 'was removed'} while it" in (
            result.reason or ""
        )
        assert "discarded" in (result.reason or "")
        assert store.build_state("versioned") is None
        left = (
            store.cursor()
            .execute("SELECT count(*) FROM index_levels WHERE index_id = 'versioned'")
            .fetchall()
        )
        assert left == [(0,)]
