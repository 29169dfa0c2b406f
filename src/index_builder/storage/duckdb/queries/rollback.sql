-- Rollback of the market data to the state right after a version (DuckDBStore.rollback_data).
--
-- $target_run (T): the version's data_run_id; $run_id (N): the rollback's own ingestion
-- run; $now: its moment (naive UTC). Every statement runs in one transaction.
--
-- Row level and reversible, the point-in-time history kept:
-- * prices / securities: every current row written after T moves to the history table
--   (superseded at $now by N), and for every key touched after T the version in force
--   at T (run_id <= T, superseded by a run after T) becomes the current row again, as
--   a new version (run N, known at $now: reads as of a moment before now still see
--   what was in force then). A key that did not exist at T ends with no current row.
--   Versions are never deleted. Afterwards the touched keys are the keys of the
--   versions superseded by N and of the current rows written by N.
-- * shares_history: the rows written after T move to shares_withdrawn; withdrawn rows
--   of runs up to T that a rollback after T withdrew come back unchanged.
-- * ingest_runs: runs after T are marked rolled back by N; runs up to T that a
--   rollback after T had undone are not any more.
--
-- Only these rows of prices and price_versions are read: current rows with
-- run_id > T and versions with superseded_by_run_id > T (a lake backend runs these
-- statements over a scratch database holding only them and the small tables).

-- name: rollback_price_counts
-- (rows withdrawn, rows restored, first date, last date) of the prices touched after T.
SELECT (SELECT count(*) FROM prices WHERE run_id > $target_run),
       (SELECT count(*) FROM price_versions
        WHERE run_id <= $target_run AND superseded_by_run_id > $target_run),
       min(date), max(date)
FROM (
    SELECT date FROM prices WHERE run_id > $target_run
    UNION ALL
    SELECT date FROM price_versions
    WHERE run_id <= $target_run AND superseded_by_run_id > $target_run
);

-- name: rollback_other_counts
-- (securities withdrawn, securities restored, shares withdrawn, shares restored).
SELECT (SELECT count(*) FROM securities WHERE run_id > $target_run),
       (SELECT count(*) FROM security_versions
        WHERE run_id <= $target_run AND superseded_by_run_id > $target_run),
       (SELECT count(*) FROM shares_history WHERE run_id > $target_run),
       (SELECT count(*) FROM shares_withdrawn
        WHERE run_id <= $target_run AND withdrawn_by_run_id > $target_run);

-- name: next_ingest_run_id
SELECT nextval('ingest_run_ids');

-- name: rollback_start_run
INSERT INTO ingest_runs (run_id, provider, params, status, started_at, known_at, owner)
VALUES ($run_id, 'rollback', $params, 'running', $now, $now, $owner);

-- name: rollback_prices
-- The versions in force at T are read before anything moves (afterwards every moved
-- row has a run_id > T, so the order does not matter; it is kept for clarity).
CREATE OR REPLACE TEMP TABLE rollback_restored_prices AS
SELECT date, symbol, close, adj_close, volume, shares_outstanding, market_cap, dividend,
       split_ratio, source, fetched_at, basis, shares_inferred
FROM price_versions
WHERE run_id <= $target_run AND superseded_by_run_id > $target_run;

INSERT INTO price_versions
    (date, symbol, close, adj_close, volume, shares_outstanding, market_cap, dividend,
     split_ratio, run_id, known_at, superseded_at, superseded_by_run_id, source, fetched_at,
     basis, shares_inferred)
SELECT date, symbol, close, adj_close, volume, shares_outstanding, market_cap, dividend,
       split_ratio, run_id, known_at, $now, $run_id, source, fetched_at, basis,
       shares_inferred
FROM prices WHERE run_id > $target_run;

DELETE FROM prices WHERE run_id > $target_run;

INSERT INTO prices
    (date, symbol, close, adj_close, volume, shares_outstanding, market_cap, dividend,
     split_ratio, run_id, known_at, source, fetched_at, basis, shares_inferred)
SELECT date, symbol, close, adj_close, volume, shares_outstanding, market_cap, dividend,
       split_ratio, $run_id, $now, source, fetched_at, basis, shares_inferred
FROM rollback_restored_prices;

DROP TABLE rollback_restored_prices;

-- name: rollback_securities
CREATE OR REPLACE TEMP TABLE rollback_restored_securities AS
SELECT symbol, name, exchange, sector, industry, currency, type, company_id
FROM security_versions
WHERE run_id <= $target_run AND superseded_by_run_id > $target_run;

INSERT INTO security_versions
    (symbol, name, exchange, sector, industry, currency, type, company_id, run_id, known_at,
     superseded_at, superseded_by_run_id)
SELECT symbol, name, exchange, sector, industry, currency, type, company_id, run_id,
       known_at, $now, $run_id
FROM securities WHERE run_id > $target_run;

DELETE FROM securities WHERE run_id > $target_run;

INSERT INTO securities
    (symbol, name, exchange, sector, industry, currency, type, company_id, run_id, known_at)
SELECT symbol, name, exchange, sector, industry, currency, type, company_id, $run_id, $now
FROM rollback_restored_securities;

DROP TABLE rollback_restored_securities;

-- name: rollback_shares
-- Withdrawn first (those rows have run_id > T), then the rows of runs up to T that a
-- rollback after T withdrew come back with their original values, known_at and run.
INSERT INTO shares_withdrawn
    (symbol, effective_date, shares_outstanding, known_at, source, basis, run_id,
     withdrawn_at, withdrawn_by_run_id)
SELECT symbol, effective_date, shares_outstanding, known_at, source, basis, run_id,
       $now, $run_id
FROM shares_history WHERE run_id > $target_run;

DELETE FROM shares_history WHERE run_id > $target_run;

INSERT INTO shares_history
    (symbol, effective_date, shares_outstanding, known_at, source, basis, run_id)
SELECT symbol, effective_date, shares_outstanding, known_at, source, basis, run_id
FROM shares_withdrawn
WHERE run_id <= $target_run AND withdrawn_by_run_id > $target_run;

DELETE FROM shares_withdrawn
WHERE run_id <= $target_run AND withdrawn_by_run_id > $target_run;

-- name: rollback_undo_runs
-- The runs whose data the rollback withdrew (those not already undone by another).
UPDATE ingest_runs SET rolled_back_by = $run_id
WHERE run_id > $target_run AND run_id <> $run_id AND status IN ('succeeded', 'partial')
  AND rolled_back_by IS NULL
RETURNING run_id;

-- name: rollback_redo_runs
-- Runs up to T that a rollback after T had undone: their data are in force again.
UPDATE ingest_runs SET rolled_back_by = NULL
WHERE run_id <= $target_run AND rolled_back_by > $target_run
RETURNING run_id;

-- name: rollback_finish_run
UPDATE ingest_runs
SET status = 'succeeded', finished_at = $now, rows_read = 0, rows_accepted = $restored,
    rows_rejected = 0, duplicates_collapsed = 0, rows_inserted = 0, rows_updated = $restored,
    rows_unchanged = 0, securities_changed = $securities_changed, min_date = $min_date,
    max_date = $max_date, message = $message, rows_current_basis = 0
WHERE run_id = $run_id;
