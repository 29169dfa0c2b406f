-- Reads and writes of the index engine.

-- name: trading_days
-- Trading days: distinct dates with at least one valid row (only valid rows are stored).
SELECT DISTINCT date FROM prices ORDER BY date;

-- name: trading_days_between
SELECT DISTINCT date FROM prices WHERE date BETWEEN $start AND $end ORDER BY date;

-- name: panel_securities
-- dividends_from: the first (valid) row that gives a dividend value, 0 included: the
-- security's total return comes from dividends from that day on (METHODOLOGY part 2)
SELECT s.symbol, s.name, s.sector, s.exchange, s.type, s.company_id, d.dividends_from
FROM securities s
LEFT JOIN (SELECT symbol, min(date) AS dividends_from FROM prices
           WHERE dividend IS NOT NULL GROUP BY symbol) d USING (symbol)
ORDER BY s.symbol;

-- name: panel_bars
-- Long form of the panel: one row per valid bar in the window, with its cell in
-- the (trading day x security) matrix: row * $n_columns + column.
SELECT CAST(d.row_index AS BIGINT) * $n_columns + s.column_index AS cell,
       p.close, coalesce(p.adj_close, 'NaN'::DOUBLE) AS adj_close, p.market_cap
FROM prices p
JOIN panel_days d ON d.date = p.date
JOIN panel_columns s ON s.symbol = p.symbol
WHERE p.date BETWEEN $start AND $end;

-- name: panel_actions
-- The few bars that carry a dividend or a split, in panel cells.
SELECT CAST(d.row_index AS BIGINT) * $n_columns + s.column_index AS cell,
       coalesce(p.dividend, 'NaN'::DOUBLE) AS dividend,
       coalesce(p.split_ratio, 'NaN'::DOUBLE) AS split_ratio
FROM prices p
JOIN panel_days d ON d.date = p.date
JOIN panel_columns s ON s.symbol = p.symbol
WHERE p.date BETWEEN $start AND $end
  AND (p.dividend IS NOT NULL OR p.split_ratio IS NOT NULL);

-- name: panel_volumes
-- Volumes of the share classes of companies with more than one class (they pick
-- the class that represents the company with rank_by: company).
SELECT CAST(d.row_index AS BIGINT) * $n_columns + s.column_index AS cell,
       coalesce(p.volume, 0) AS volume
FROM prices p
JOIN panel_days d ON d.date = p.date
JOIN panel_columns s ON s.symbol = p.symbol
WHERE p.date BETWEEN $start AND $end
  AND p.symbol IN (
      SELECT symbol FROM securities WHERE company_id IN (
          SELECT company_id FROM securities WHERE company_id IS NOT NULL
          GROUP BY company_id HAVING count(*) > 1));

-- name: interrupt_orphan_runs
-- Runs left 'running' by a process that is gone (see DuckDBStore._interrupt_orphan_runs).
UPDATE ingest_runs
SET status = 'interrupted', finished_at = $now,
    message = 'interrupted: the process that ran it (' || coalesce(owner, 'unknown')
              || ') stopped before it finished; nothing of it was stored'
WHERE status = 'running' AND owner IS DISTINCT FROM $owner
RETURNING run_id, owner;

-- name: latest_run_id
-- The newest ingestion run whose rows a build can see: a succeeded run, or a provider
-- batch that ended 'partial' (it committed what it fetched). A failed run wrote nothing.
-- A rollback is itself such a run (it rewrites the rows it restores), so a run it undid
-- (rolled_back_by) needs no exclusion: the rollback's run is newer.
SELECT coalesce(max(run_id), 0) FROM ingest_runs WHERE status IN ('succeeded', 'partial');

-- name: record_version
-- A version of the store's content, written in the transaction of the change it
-- records; data_run_id: the newest run whose data are in force after the change.
INSERT INTO versions (version_id, kind, created_at, data_run_id, run_id, index_id,
                      build_version, rows, detail)
SELECT nextval('version_ids'), $kind, $created_at,
       (SELECT coalesce(max(run_id), 0) FROM ingest_runs
        WHERE status IN ('succeeded', 'partial')),
       $run_id, $index_id, $build_version, $rows, $detail
RETURNING version_id;

-- name: record_run_version
-- The version of an ingestion run that ended succeeded or partial (once per run: a
-- provider batch is recorded when its ingestion ends, not again when its outcome is set).
INSERT INTO versions (version_id, kind, created_at, data_run_id, run_id, rows, detail)
SELECT nextval('version_ids'), 'ingest', $created_at,
       (SELECT coalesce(max(run_id), 0) FROM ingest_runs
        WHERE status IN ('succeeded', 'partial')),
       r.run_id, r.rows_accepted,
       CAST(json_object('provider', r.provider, 'status', r.status,
                        'inserted', r.rows_inserted, 'updated', r.rows_updated,
                        'unchanged', r.rows_unchanged, 'rejected', r.rows_rejected,
                        'min_date', r.min_date, 'max_date', r.max_date) AS VARCHAR)
FROM ingest_runs r
WHERE r.run_id = $run_id AND r.status IN ('succeeded', 'partial')
  AND NOT EXISTS (SELECT 1 FROM versions v WHERE v.kind = 'ingest' AND v.run_id = $run_id)
RETURNING version_id;

-- name: list_versions
-- Newest first; $kind NULL: every kind.
SELECT version_id, kind, created_at, data_run_id, run_id, index_id, build_version, rows,
       detail, snapshots
FROM versions WHERE $kind IS NULL OR kind = $kind
ORDER BY version_id DESC LIMIT $limit;

-- name: version_by_id
SELECT version_id, kind, created_at, data_run_id, run_id, index_id, build_version, rows,
       detail, snapshots
FROM versions WHERE version_id = $version_id;

-- name: first_changed_date
-- The earliest trading day whose inputs changed after ingestion run $run_id: a price
-- row written later (new, corrected, or re-derived), or any bar of a security whose
-- attributes changed (securities carry no dates: a new sector, type or company
-- applies to the security's whole history). A first dividend value changes only
-- the days from its own date on (METHODOLOGY part 2), which the first part covers.
-- A row replaced or withdrawn later (a rollback leaves a key that did not exist at its
-- target with no current row) shows as a version superseded by a later run.
SELECT min(date) FROM (
    SELECT min(date) AS date FROM prices WHERE run_id > $run_id
    UNION ALL
    SELECT min(date) FROM price_versions WHERE superseded_by_run_id > $run_id
    UNION ALL
    SELECT min(p.date) FROM prices p JOIN securities s USING (symbol) WHERE s.run_id > $run_id
);

-- name: build_state
SELECT index_id, version, definition_hash, base_date, built_through, data_run_id,
       built_at, duration_ms, warnings, as_of, as_of_version, engine
FROM index_builds WHERE index_id = $index_id;

-- name: last_rebalance_before
SELECT max(date) FROM index_levels
WHERE index_id = $index_id AND is_rebalance AND date < $day;

-- name: last_rebalance_on_or_before
SELECT max(date) FROM index_levels
WHERE index_id = $index_id AND is_rebalance AND date <= $day;

-- name: reference_date_on
-- The reference date of the selection that took effect on $day (a rebalance row).
SELECT coalesce(reference_date, date) FROM index_levels
WHERE index_id = $index_id AND date = $day AND is_rebalance;

-- name: announcements
SELECT reference_date, effective_date, sessions_ahead, symbol, name, sector, rank, weight,
       market_cap
FROM index_announcements WHERE index_id = $index_id
ORDER BY reference_date, rank, symbol;

-- name: level_on
SELECT level FROM index_levels WHERE index_id = $index_id AND date = $day;

-- name: variant_levels_on
SELECT level_price, level_total, level_net_total
FROM index_levels WHERE index_id = $index_id AND date = $day;

-- name: spells_from
-- Spells in force on or after $day.
SELECT symbol, valid_from, valid_to FROM index_spells
WHERE index_id = $index_id AND (valid_to IS NULL OR valid_to >= $day)
ORDER BY symbol, valid_from;

-- name: spells_overlapping
SELECT symbol, valid_from, valid_to FROM index_spells
WHERE index_id = $index_id AND valid_from <= $end AND (valid_to IS NULL OR valid_to >= $start)
ORDER BY symbol, valid_from;

-- name: count_spells
SELECT count(*) FROM index_spells WHERE index_id = $index_id;

-- name: delete_results_from
-- What a build that writes from a day on replaces: the levels of that day and later,
-- and the spells still in force after the close of the last day it keeps, which the
-- build gives back spliced with its own (services/builds.py).
DELETE FROM index_levels WHERE index_id = $index_id AND date >= $day;
DELETE FROM index_spells
WHERE index_id = $index_id AND (valid_to IS NULL OR valid_to >= $kept_through);

-- name: delete_results
-- The results stored under one key (an index id, or one '<index id>@<as of>').
DELETE FROM index_levels WHERE index_id = $index_id;
DELETE FROM index_spells WHERE index_id = $index_id;
DELETE FROM index_announcements WHERE index_id = $index_id;
DELETE FROM index_builds WHERE index_id = $index_id;

-- name: insert_levels
INSERT INTO index_levels
SELECT $index_id, date, level, daily_return, is_rebalance, turnover, n_constituents,
       level_price, level_total, level_net_total, reference_date
FROM new_levels;

-- name: replace_announcements
DELETE FROM index_announcements WHERE index_id = $index_id;
INSERT INTO index_announcements
SELECT $index_id, reference_date, effective_date, sessions_ahead, symbol, name, sector, rank,
       weight, market_cap
FROM new_announcements;

-- name: insert_spells
INSERT INTO index_spells SELECT $index_id, symbol, valid_from, valid_to FROM new_spells;

-- name: next_build_version
UPDATE build_version_counter SET value = value + 1 RETURNING value;

-- name: upsert_build_state
INSERT OR REPLACE INTO index_builds
    (index_id, version, definition_hash, base_date, built_through, data_run_id, built_at,
     duration_ms, warnings, as_of, as_of_version, engine)
VALUES ($index_id, $version, $definition_hash, $base_date, $built_through, $data_run_id,
        now()::TIMESTAMP, $duration_ms, $warnings, $as_of, $as_of_version, $engine);

-- name: read_levels
SELECT date, level, daily_return, is_rebalance, turnover, n_constituents,
       level_price, level_total, level_net_total
FROM index_levels
WHERE index_id = $index_id AND date BETWEEN $start AND $end
ORDER BY date;

-- name: built_days
SELECT date FROM index_levels WHERE index_id = $index_id ORDER BY date;

-- name: last_built_day_on_or_before
SELECT max(date) FROM index_levels WHERE index_id = $index_id AND date <= $day;

-- name: list_definitions
SELECT index_id, definition, builtin FROM index_definitions ORDER BY builtin DESC, index_id;

-- name: claim_definition
-- The definition a build is about to store results for, its row written (unchanged)
-- so that a concurrent replace or removal conflicts with the build's transaction.
UPDATE index_definitions SET updated_at = updated_at WHERE index_id = $index_id
RETURNING definition;

-- name: get_definition
SELECT definition, builtin FROM index_definitions WHERE index_id = $index_id;

-- name: upsert_definition
INSERT INTO index_definitions (index_id, definition, builtin, created_at, updated_at)
VALUES ($index_id, $definition, $builtin, now()::TIMESTAMP, now()::TIMESTAMP)
ON CONFLICT (index_id) DO UPDATE SET
    definition = excluded.definition, builtin = excluded.builtin, updated_at = excluded.updated_at;

-- name: pinned_base_date
SELECT pinned_base_date FROM index_definitions WHERE index_id = $index_id;

-- name: pin_base_date
-- The first build of a definition without a base date fixes it (never moved later).
UPDATE index_definitions SET pinned_base_date = $base_date
WHERE index_id = $index_id AND pinned_base_date IS NULL;

-- name: delete_definition
DELETE FROM index_definitions WHERE index_id = $index_id;
