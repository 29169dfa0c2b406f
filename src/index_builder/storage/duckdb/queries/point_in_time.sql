-- Reads of the data as it was: as of a moment $as_of (point in time,
-- docs/methodology.md section 9) and/or as written by ingestion run $run (the data a
-- published build used). Each query is its current-version twin in engine.sql
-- reading the macros prices_at / securities_at (migration v8) instead of the
-- tables; a bound that does not apply is passed as its largest value. A bar counts
-- only when its security is known then too.

-- name: trading_days_as_of
SELECT DISTINCT p.date FROM prices_at($as_of, $run) p
SEMI JOIN securities_at($as_of, $run) s ON s.symbol = p.symbol
ORDER BY p.date;

-- name: trading_days_between_as_of
SELECT DISTINCT p.date FROM prices_at($as_of, $run) p
SEMI JOIN securities_at($as_of, $run) s ON s.symbol = p.symbol
WHERE p.date BETWEEN $start AND $end
ORDER BY p.date;

-- name: panel_securities_as_of
SELECT s.symbol, s.name, s.sector, s.exchange, s.type, s.company_id, d.dividends_from
FROM securities_at($as_of, $run) s
LEFT JOIN (SELECT symbol, min(date) AS dividends_from FROM prices_at($as_of, $run)
           WHERE dividend IS NOT NULL GROUP BY symbol) d USING (symbol)
ORDER BY s.symbol;

-- name: panel_bars_as_of
SELECT CAST(d.row_index AS BIGINT) * $n_columns + s.column_index AS cell,
       p.close, coalesce(p.adj_close, 'NaN'::DOUBLE) AS adj_close, p.market_cap
FROM prices_at($as_of, $run) p
JOIN panel_days d ON d.date = p.date
JOIN panel_columns s ON s.symbol = p.symbol
WHERE p.date BETWEEN $start AND $end;

-- name: panel_actions_as_of
SELECT CAST(d.row_index AS BIGINT) * $n_columns + s.column_index AS cell,
       coalesce(p.dividend, 'NaN'::DOUBLE) AS dividend,
       coalesce(p.split_ratio, 'NaN'::DOUBLE) AS split_ratio
FROM prices_at($as_of, $run) p
JOIN panel_days d ON d.date = p.date
JOIN panel_columns s ON s.symbol = p.symbol
WHERE p.date BETWEEN $start AND $end
  AND (p.dividend IS NOT NULL OR p.split_ratio IS NOT NULL);

-- name: panel_volumes_as_of
SELECT CAST(d.row_index AS BIGINT) * $n_columns + s.column_index AS cell,
       coalesce(p.volume, 0) AS volume
FROM prices_at($as_of, $run) p
JOIN panel_days d ON d.date = p.date
JOIN panel_columns s ON s.symbol = p.symbol
WHERE p.date BETWEEN $start AND $end
  AND p.symbol IN (
      SELECT symbol FROM securities_at($as_of, $run) WHERE company_id IN (
          SELECT company_id FROM securities_at($as_of, $run) WHERE company_id IS NOT NULL
          GROUP BY company_id HAVING count(*) > 1));

-- name: price_versions
-- Every version of one bar, oldest first; the current one has no superseded_at.
SELECT date, symbol, close, adj_close, volume, shares_outstanding, market_cap, dividend,
       split_ratio, known_at, superseded_at, run_id, superseded_by_run_id
FROM price_versions WHERE symbol = $symbol AND date = $day
UNION ALL
SELECT date, symbol, close, adj_close, volume, shares_outstanding, market_cap, dividend,
       split_ratio, known_at, NULL, run_id, NULL
FROM prices WHERE symbol = $symbol AND date = $day
ORDER BY known_at;

-- name: as_of_build_states
-- Builds as of a moment (by moment), then builds as of a version (by version).
SELECT index_id, version, definition_hash, base_date, built_through, data_run_id,
       built_at, duration_ms, warnings, as_of, as_of_version, engine
FROM index_builds WHERE starts_with(index_id, $prefix)
ORDER BY as_of, as_of_version;

-- name: delete_as_of_results
-- Every as-of result of one index: keys '<index id>@<as of>' and '<index id>@v<version>'.
DELETE FROM index_levels WHERE starts_with(index_id, $prefix);
DELETE FROM index_spells WHERE starts_with(index_id, $prefix);
DELETE FROM index_builds WHERE starts_with(index_id, $prefix);
DELETE FROM index_announcements WHERE starts_with(index_id, $prefix);
