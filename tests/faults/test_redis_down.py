"""Redis killed while the server answers cached reads: every answer stays 200 and
identical (from the database), readiness says Redis is down (degraded, still ready),
nothing is written, and Redis is used again once it is back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from integrity import changed_tables, file_fingerprint
from redis_server import RedisServer


def test_reads_survive_redis_dying_and_coming_back(
    database: Path, serve: Callable[..., object], redis_server: RedisServer
) -> None:
    before = file_fingerprint(database)
    redis_server.flush()
    server = serve(
        database, INDEX_BUILDER_REDIS_URL=redis_server.url, INDEX_BUILDER_REDIS_RETRY_SECONDS="0.2"
    )
    paths = ("/index-performance", "/index-composition", "/composition-changes")
    first = {p: server.get(p) for p in paths}  # type: ignore[attr-defined]
    assert all(r.status_code == 200 for r in first.values())
    cached = server.get(paths[0])  # type: ignore[attr-defined]
    assert cached.headers["x-cache"] == "HIT"
    redis_server.stop()
    try:
        for _ in range(3):
            for path in paths:
                answer = server.get(path)  # type: ignore[attr-defined]
                assert answer.status_code == 200 and answer.content == first[path].content
        ready = server.get("/health/ready")  # type: ignore[attr-defined]
        assert ready.status_code == 200
        assert ready.json()["components"]["redis"]["status"] == "degraded"
    finally:
        redis_server.start()
    server.stop()  # type: ignore[attr-defined]
    assert changed_tables(before, file_fingerprint(database)) == []
