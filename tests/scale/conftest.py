"""Scale-out fixtures (see fleet.py): a redis-server, one Iceberg lake, two ``serve``
processes and a worker, for the tests of one module."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from serve_process import ServeProcess

from redis_server import RedisServer

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # no __init__.py: put fleet.py on the path for the test module
    sys.path.insert(0, HERE)

from fleet import Fleet, lake_env, make_lake  # noqa: E402


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """A redis-server, the lake, two ``serve`` (a; b with ``--workers 2``: three API
    processes) and one worker."""
    folder = tmp_path_factory.mktemp("fleet")
    redis = RedisServer(folder)
    redis.start()
    make_lake(folder)
    env = lake_env(folder, redis.url)
    a = ServeProcess(folder / "a.log", env)
    b = ServeProcess(folder / "b.log", {**env, "INDEX_BUILDER_API_WORKERS": "2"})
    fleet = Fleet(folder, redis, a, b)
    try:
        fleet.start_worker()
        a.wait_ready(90)
        b.wait_ready(90)
        yield fleet
    finally:  # every process asked to stop first, then each waited for
        for process in [w.proc for w in fleet.workers] + [a.proc, b.proc]:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for worker in fleet.workers:
            worker.stop()
        for server in (a, b):
            server.stop()
        redis.stop()
