-- Queries of the Iceberg backend's scratch writes (storage/iceberg/scratch.py): an
-- ingestion or a rollback runs in a scratch DuckDB database holding the stored rows
-- it reads, loaded from the lake's bar files (views lake_prices, lake_price_versions),
-- and the months it changed are written back as Parquet data files (COPY: DuckDB
-- writes them in parallel, within its memory limit; $field_ids: the Iceberg field id
-- of every column written; a month partition's folder is date_month=YYYY-MM).

-- name: lake_ingest_window
-- The first date an ingestion can write: its rows' (valid, or to be valued) first date.
SELECT min(date) FROM stg_prices_checked
WHERE reason IS NULL OR reason = 'missing_market_cap';

-- name: lake_preload_ingest
-- The stored rows an ingestion reads (queries/ingest.sql): every row of the input's
-- symbols from its first date on (comparison, merge, re-derived shares), and, for the
-- symbols whose shares are inferred (rows to value, stored inferred rows), the rows
-- giving a split or a count since the count in force on that first date (the shares
-- rule reads them back to that count).
CREATE OR REPLACE TEMP TABLE lake_input_symbols AS
SELECT DISTINCT symbol FROM stg_prices_checked;

INSERT INTO prices BY NAME
SELECT l.* FROM lake_prices l
SEMI JOIN lake_input_symbols s ON s.symbol = l.symbol
WHERE l.date >= $first;

INSERT INTO prices BY NAME
WITH dependent AS (
    SELECT symbol FROM stg_prices_checked WHERE reason = 'missing_market_cap'
    UNION
    SELECT symbol FROM prices WHERE shares_inferred
),
since AS (
    SELECT d.symbol, max(h.effective_date) AS since
    FROM dependent d
    JOIN shares_history h ON h.symbol = d.symbol AND h.effective_date <= $first
    GROUP BY d.symbol
)
SELECT l.* FROM lake_prices l
JOIN since s ON s.symbol = l.symbol AND l.date >= s.since AND l.date < $first
WHERE l.split_ratio IS NOT NULL
   OR (l.shares_outstanding IS NOT NULL AND NOT l.shares_inferred);

DROP TABLE lake_input_symbols;

-- name: lake_preload_rollback
-- The stored rows a rollback to run $target reads (queries/rollback.sql): the current
-- rows written after it and the versions replaced after it.
INSERT INTO prices BY NAME
SELECT * FROM lake_prices WHERE run_id > $target;

INSERT INTO price_versions BY NAME
SELECT * FROM lake_price_versions WHERE superseded_by_run_id > $target;

-- name: lake_insert_replacements
-- The scratch store's part of insert_prices (ingest.sql): the accepted rows that
-- replace a stored row. The others, new keys, go straight to data files
-- (lake_stage_new_prices).
INSERT INTO prices
    (date, symbol, close, adj_close, volume, shares_outstanding, market_cap, dividend,
     split_ratio, run_id, known_at, source, fetched_at, basis, shares_inferred)
SELECT a.date, a.symbol, a.close, a.adj_close, a.volume, a.shares_outstanding, a.market_cap,
       a.dividend, a.split_ratio, $run_id, a.known_at, a.source, a.fetched_at, a.basis,
       a.shares_inferred
FROM stg_prices_accepted a
SEMI JOIN stg_prices_matched m ON m._row = a._row AND m.changed;

-- name: lake_new_rows
-- The accepted rows of keys with no stored row (the rest of insert_prices), as the
-- prices table would hold them.
SET VARIABLE lake_run_id = $run_id;
CREATE OR REPLACE TEMP VIEW lake_new_rows AS
SELECT a.date, a.symbol, a.close, a.adj_close, a.volume, a.shares_outstanding,
       a.market_cap, a.dividend, a.split_ratio,
       CAST(getvariable('lake_run_id') AS BIGINT) AS run_id, a.known_at, a.source,
       a.fetched_at, a.basis, a.shares_inferred
FROM stg_prices_accepted a
ANTI JOIN stg_prices_matched m ON m._row = a._row;

-- name: lake_staged_row_groups
-- Whether the staged input (stage_prices) is laid out by date: its row groups, and
-- the months they span together (a row group spanning three months counts three).
SELECT count(*) AS row_groups,
       coalesce(sum(datediff('month', TRY_CAST(stats_min AS DATE),
                             TRY_CAST(stats_max AS DATE)) + 1), 0) AS month_spans
FROM parquet_metadata(getvariable('stg_prices_file'))
WHERE path_in_schema = 'date';

-- name: lake_new_rows_stream
-- The new rows in the staged input's order, with their month (since 1970-01): an
-- input laid out by date streams month after month, and each month's rows are
-- written to its own data file as they come (storage/iceberg/scratch.py).
SELECT *, (year(date) - 1970) * 12 + month(date) - 1 AS month_ordinal FROM lake_new_rows;

-- name: lake_stage_new_prices_partitioned
-- The new rows of an input not laid out by date (e.g. symbol by symbol), whose stream
-- would interleave every month: written by DuckDB in one partitioned pass, one folder
-- per month ($folder/date_month=YYYY-MM, names from $pattern). Returns the files.
COPY (SELECT *, strftime(date, '%Y-%m') AS date_month FROM lake_new_rows)
TO $folder (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, PARTITION_BY (date_month),
            FILENAME_PATTERN $pattern, FIELD_IDS $field_ids, RETURN_FILES true, APPEND);

-- name: lake_drop_new_rows
DROP VIEW lake_new_rows;
RESET VARIABLE lake_run_id;

-- name: lake_new_prices_files
-- The new rows staged by lake_stage_new_prices ($files: not empty).
SET VARIABLE lake_new_files = $files;
CREATE OR REPLACE TEMP VIEW lake_new_prices AS
SELECT * FROM read_parquet(getvariable('lake_new_files'), hive_partitioning = false);

-- name: lake_new_prices_none
CREATE OR REPLACE TEMP VIEW lake_new_prices AS SELECT * FROM prices WHERE false;

-- name: lake_touched_keys
-- The bars a write (run $run_id) changed: rows it wrote, rows it replaced or removed
-- (not the new keys staged in files: they replace nothing).
CREATE OR REPLACE TEMP TABLE lake_touched AS
SELECT date, symbol FROM prices WHERE run_id = $run_id
UNION
SELECT date, symbol FROM price_versions WHERE superseded_by_run_id = $run_id;

-- name: lake_touched_months
SELECT CAST(date_trunc('month', date) AS DATE) AS month, count(*) AS touched
FROM lake_touched GROUP BY ALL ORDER BY month;

-- name: lake_copy_month_prices
-- The new content of the months [$first, $last), sorted, to the file $path: the
-- lake's rows but the touched ones, the current rows this write left for the touched
-- keys, and the new keys staged in files (lake_new_prices).
COPY (
    SELECT * FROM (
        SELECT l.* FROM lake_prices l
        ANTI JOIN lake_touched t ON t.date = l.date AND t.symbol = l.symbol
        WHERE l.date >= $first AND l.date < $last
        UNION ALL BY NAME
        SELECT p.* FROM prices p
        WHERE p.run_id = $run_id AND p.date >= $first AND p.date < $last
        UNION ALL BY NAME
        SELECT n.* FROM lake_new_prices n
        WHERE n.date >= $first AND n.date < $last
    )
    ORDER BY date, symbol
) TO $path (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, FIELD_IDS $field_ids,
          RETURN_FILES true);

-- name: lake_count_new_price_versions
SELECT count(*) FROM price_versions WHERE superseded_by_run_id = $run_id;

-- name: lake_copy_new_price_versions
-- The versions run $run_id moved to the history, one folder per month.
COPY (
    SELECT *, strftime(date, '%Y-%m') AS date_month
    FROM price_versions WHERE superseded_by_run_id = $run_id
    ORDER BY date, symbol
) TO $folder (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, PARTITION_BY (date_month),
              FILENAME_PATTERN $pattern, FIELD_IDS $field_ids, RETURN_FILES true, APPEND);

-- name: lake_count_new_quarantine
SELECT count(*) FROM quarantine;

-- name: lake_copy_new_quarantine
-- Every quarantined row of the write (a scratch store starts without any).
COPY (SELECT * FROM quarantine ORDER BY run_id, row_number)
TO $path (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, FIELD_IDS $field_ids,
          RETURN_FILES true);
