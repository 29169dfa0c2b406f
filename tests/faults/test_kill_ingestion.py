"""kill -9 of an ingestion in the middle of its transaction: nothing of it is stored,
the next process that opens the database marks the run ``interrupted``, ``runs``
shows it, readiness reports it until a later run succeeds, and every table but the
run's own row is exactly as before."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from fastapi.testclient import TestClient

from index_builder.api.app import create_app
from index_builder.ingest.job import run_ingestion
from index_builder.services.catalog import ensure_builtins
from index_builder.storage.duckdb.store import DuckDBStore
from serve_process import SOURCE

from api_helpers import make_settings
from cli_runner import run
from integrity import changed_tables, file_fingerprint

# A process that ingests a stream whose second batch never comes: it is inside the
# ingestion's transaction (its run recorded as running) when it writes the marker.
STALLED = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import pyarrow as pa
    from index_builder.ingest.job import with_row_numbers
    from index_builder.providers.schema import PRICES_SCHEMA, SECURITIES_SCHEMA
    from index_builder.providers.synthetic_market import generate_market
    from index_builder.storage.duckdb.store import DuckDBStore

    database, marker = sys.argv[1], Path(sys.argv[2])
    data = generate_market(seed=3, n_symbols=80, n_days=20)
    prices = with_row_numbers(data.prices, PRICES_SCHEMA)

    def batches():
        yield from prices.to_batches(max_chunksize=200)[:1]
        marker.write_text("in the transaction")
        time.sleep(600)  # killed here

    with DuckDBStore(database) as store:
        reader = pa.RecordBatchReader.from_batches(prices.schema, batches())
        store.ingest(with_row_numbers(data.securities, SECURITIES_SCHEMA), reader,
                     provider="file", params={})
    """
)


def test_a_killed_ingestion_is_marked_interrupted_and_stores_nothing(tmp_path: Path) -> None:
    database = tmp_path / "kill.duckdb"
    with DuckDBStore(database) as store:
        ensure_builtins(store)
        run_ingestion(store, "synthetic", {"symbols": 60, "days": 15})
    before = file_fingerprint(database)
    marker = tmp_path / "marker"
    env = {**os.environ, "PYTHONPATH": SOURCE}
    proc = subprocess.Popen(
        [sys.executable, "-c", STALLED, str(database), str(marker)],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the ingestion never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    code, out, err = run(database, "runs", "--format", "json")
    assert code == 0, err
    runs = json.loads(out)
    killed = runs[0]
    assert killed["status"] == "interrupted", killed
    assert "stopped before it finished" in killed["message"] and "nothing" in killed["message"]
    after = file_fingerprint(database)
    assert changed_tables(before, after) == ["ingest_runs"]  # the killed run's own row only
    assert after["ingest_runs"][0] == before["ingest_runs"][0] + 1

    with TestClient(create_app(make_settings(database, None))) as client:
        ingestion = client.get("/health/ready").json()["components"]["ingestion"]
        assert ingestion["status"] == "degraded" and "interrupted" in ingestion["detail"]
    with DuckDBStore(database) as store:
        run_ingestion(store, "synthetic", {"symbols": 60, "days": 16})
    with TestClient(create_app(make_settings(database, None))) as client:
        ingestion = client.get("/health/ready").json()["components"]["ingestion"]
        assert ingestion["status"] == "ok", ingestion
