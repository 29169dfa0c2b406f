-- Reads of the readiness checks and the scrape-time metrics (cheap: no full scans
-- beyond one column's min/max).

-- name: health_ping
SELECT max(version) FROM schema_migrations;

-- name: last_trading_day
SELECT max(date) FROM prices;

-- name: last_ingest_run
-- The newest run ($finished: the newest that is not running any more).
SELECT run_id, provider, status, started_at, finished_at, rows_read, rows_accepted,
       rows_rejected, message
FROM ingest_runs
WHERE NOT $finished OR status <> 'running'
ORDER BY run_id DESC LIMIT 1;

-- name: current_build_states
-- Current results only: no build as of a moment or as of a version.
SELECT index_id, version, definition_hash, base_date, built_through, data_run_id,
       built_at, duration_ms, warnings, as_of, as_of_version, engine
FROM index_builds WHERE as_of IS NULL AND as_of_version IS NULL
ORDER BY index_id;
