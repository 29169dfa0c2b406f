-- Ingestion: parse, validate, de-duplicate and merge one input into the store.
-- Inputs registered by the caller: raw_prices, raw_securities (all columns of the
-- interchange format present, values raw: text or typed, plus _row and the
-- optional known_at). $known_at is the run's start time (UTC): the moment a row
-- became known unless it gives its own (point in time, methodology section 9).

-- name: stage_securities
CREATE OR REPLACE TEMP TABLE stg_securities_parsed AS
SELECT *,
       CASE WHEN symbol IS NULL THEN 'missing_symbol'
            WHEN raw_known_at IS NOT NULL AND given_known_at IS NULL THEN 'unparseable_known_at'
            WHEN given_known_at > $known_at THEN 'future_known_at'
       END AS reason
FROM (
    SELECT
        _row,
        upper(NULLIF(trim(CAST(symbol AS VARCHAR)), '')) AS symbol,
        NULLIF(trim(CAST(name AS VARCHAR)), '')          AS name,
        NULLIF(trim(CAST(exchange AS VARCHAR)), '')      AS exchange,
        NULLIF(trim(CAST(sector AS VARCHAR)), '')        AS sector,
        NULLIF(trim(CAST(industry AS VARCHAR)), '')      AS industry,
        NULLIF(trim(CAST(currency AS VARCHAR)), '')      AS currency,
        NULLIF(trim(CAST(type AS VARCHAR)), '')          AS type,
        NULLIF(trim(CAST(company_id AS VARCHAR)), '')    AS company_id,
        NULLIF(trim(CAST(known_at AS VARCHAR)), '')      AS raw_known_at,
        CAST(TRY_CAST(NULLIF(trim(CAST(known_at AS VARCHAR)), '') AS TIMESTAMPTZ)
             AS TIMESTAMP)                               AS given_known_at
    FROM raw_securities
);

-- One version per symbol: exact copies collapse (known since the earliest copy).
CREATE OR REPLACE TEMP TABLE stg_securities_distinct AS
SELECT symbol, name, exchange, sector, industry, currency, type, company_id,
       min(coalesce(given_known_at, $known_at)) AS known_at,
       min(_row) AS _row, count(*) AS copies
FROM stg_securities_parsed
WHERE reason IS NULL
GROUP BY ALL;

CREATE OR REPLACE TEMP TABLE stg_securities_conflicts AS
SELECT symbol FROM stg_securities_distinct GROUP BY symbol HAVING count(*) > 1;

CREATE OR REPLACE TEMP TABLE stg_securities_rejected AS
SELECT p._row, p.symbol, coalesce(p.reason, 'conflicting_duplicate') AS reason
FROM stg_securities_parsed p
WHERE p.reason IS NOT NULL OR p.symbol IN (SELECT symbol FROM stg_securities_conflicts);

-- action: insert | update | same | stale. A new version must be known later than
-- the stored one; one known at or before it ('stale') is quarantined, so history
-- is never rewritten and every as-of answer stays reproducible.
CREATE OR REPLACE TEMP TABLE stg_securities AS
SELECT d.* EXCLUDE (copies), d.copies - 1 AS collapsed, s.known_at AS stored_known_at,
       CASE WHEN s.symbol IS NULL THEN 'insert'
            WHEN (d.name, d.exchange, d.sector, d.industry, d.currency, d.type, d.company_id)
                 IS NOT DISTINCT FROM
                 (s.name, s.exchange, s.sector, s.industry, s.currency, s.type, s.company_id)
            THEN 'same'
            WHEN s.known_at >= d.known_at THEN 'stale'
            ELSE 'update' END AS action
FROM stg_securities_distinct d
LEFT JOIN securities s USING (symbol)
WHERE d.symbol NOT IN (SELECT symbol FROM stg_securities_conflicts);

-- name: stage_prices
-- One pass over the input stream (it is not copied first): cast every field (a
-- value that is present but does not parse names the field), then check validity
-- (METHODOLOGY "Inputs"): known symbol, exchange session, close and market cap
-- finite and > 0, a known_at not after the run's start. The first failing rule is
-- the reason.
-- The checked rows are staged in a Parquet file (the path is the staging
-- parameter; the caller deletes the file): later steps scan it again and again, in
-- parallel and only the columns they need, and a file the size of the input never
-- has to fit in DuckDB's memory (a temporary table of it would spill and be
-- rewritten on every read). Values come back exactly as written (DOUBLE, DATE,
-- TIMESTAMP, JSON).
-- A column given typed (Parquet: DOUBLE, DATE, TIMESTAMP) needs no parsing:
-- typeof() is a constant when the query is planned, so the macros below reduce to
-- the typed value and their text casts and parse checks are planned away (a value
-- that would take the text path gives the same result either way).
-- The symbols and sessions are looked up with IN: a mark join that builds the
-- small side (a stream has no size for the planner to compare).

-- a raw value given as text or typed, as DOUBLE; "unparsed": present but not a number
CREATE OR REPLACE TEMP MACRO stg_unparsed_double(x) AS
    typeof(x) <> 'DOUBLE' AND TRY_CAST(x AS DOUBLE) IS NULL AND x IS NOT NULL
    AND trim(CAST(x AS VARCHAR)) <> '';

-- a publication time: ISO 8601, naive = UTC, an offset is converted. A TIMESTAMP
-- column is naive UTC already (its text would parse back to the same value).
CREATE OR REPLACE TEMP MACRO stg_typed_time(x) AS
    typeof(x) = 'TIMESTAMP'
    AND TRY_CAST(x AS TIMESTAMP) BETWEEN TIMESTAMP '0001-01-01'
                                     AND TIMESTAMP '9999-12-31 23:59:59.999999';

CREATE OR REPLACE TEMP MACRO stg_time(x) AS
    CASE WHEN stg_typed_time(x) THEN TRY_CAST(x AS TIMESTAMP)
         ELSE CAST(TRY_CAST(NULLIF(trim(CAST(x AS VARCHAR)), '') AS TIMESTAMPTZ) AS TIMESTAMP)
    END;

CREATE OR REPLACE TEMP MACRO stg_unparsed_time(x) AS
    NOT coalesce(stg_typed_time(x), false)
    AND NULLIF(trim(CAST(x AS VARCHAR)), '') IS NOT NULL
    AND TRY_CAST(trim(CAST(x AS VARCHAR)) AS TIMESTAMPTZ) IS NULL;

COPY (
SELECT
    p.* EXCLUDE (given_market_cap, parse_error),
    coalesce(p.given_market_cap, p.close * p.shares_outstanding) AS market_cap,
    CASE
        WHEN p.parse_error IS NOT NULL THEN p.parse_error
        WHEN NOT coalesce(p.symbol IN (
                SELECT symbol FROM stg_securities
                UNION
                SELECT symbol FROM securities
                WHERE symbol NOT IN (SELECT symbol FROM stg_securities_conflicts)
             ), false) THEN 'unknown_symbol'
        WHEN NOT coalesce(p.date IN (SELECT date FROM calendar_sessions), false)
            THEN 'not_a_session'
        WHEN p.close IS NULL OR NOT isfinite(p.close) OR p.close <= 0 THEN 'invalid_close'
        WHEN p.shares_outstanding IS NOT NULL
             AND (NOT isfinite(p.shares_outstanding) OR p.shares_outstanding <= 0)
            THEN 'invalid_shares_outstanding'
        WHEN p.given_market_cap IS NULL AND p.shares_outstanding IS NULL
            THEN 'missing_market_cap'
        WHEN NOT isfinite(coalesce(p.given_market_cap, p.close * p.shares_outstanding))
             OR coalesce(p.given_market_cap, p.close * p.shares_outstanding) <= 0
            THEN 'invalid_market_cap'
        WHEN p.split_ratio IS NOT NULL AND (NOT isfinite(p.split_ratio) OR p.split_ratio <= 0)
            THEN 'invalid_split_ratio'
        WHEN p.dividend IS NOT NULL AND (NOT isfinite(p.dividend) OR p.dividend < 0)
            THEN 'invalid_dividend'
        WHEN p.volume IS NOT NULL AND (NOT isfinite(p.volume) OR p.volume < 0)
            THEN 'invalid_volume'
        WHEN p.given_basis NOT IN ('point_in_time', 'current') THEN 'invalid_basis'
        WHEN p.given_known_at > $known_at THEN 'future_known_at'
    END AS reason
FROM (
    SELECT
        _row, date, symbol, close, adj_close, volume, shares_outstanding, given_market_cap,
        dividend, split_ratio, given_known_at, parse_error, given_source, given_fetched_at,
        given_basis,
        -- the raw text is kept only for rows that do not parse (quarantine evidence)
        CASE WHEN parse_error IS NOT NULL THEN to_json(struct_pack(
                date := CAST(raw_date AS VARCHAR),
                symbol := CAST(raw_symbol AS VARCHAR),
                close := CAST(raw_close AS VARCHAR),
                adj_close := CAST(raw_adj_close AS VARCHAR),
                volume := CAST(raw_volume AS VARCHAR),
                shares_outstanding := CAST(raw_shares_outstanding AS VARCHAR),
                market_cap := CAST(raw_market_cap AS VARCHAR),
                dividend := CAST(raw_dividend AS VARCHAR),
                split_ratio := CAST(raw_split_ratio AS VARCHAR),
                known_at := CAST(raw_known_at AS VARCHAR),
                source := given_source,
                fetched_at := CAST(raw_fetched_at AS VARCHAR),
                basis := given_basis
        )) END AS raw_record
    FROM (
        SELECT
            _row,
            coalesce(TRY_CAST(date AS DATE),
                     TRY_CAST(trim(CAST(date AS VARCHAR)) AS DATE))  AS date,
            upper(NULLIF(trim(CAST(symbol AS VARCHAR)), ''))        AS symbol,
            TRY_CAST(close AS DOUBLE)                               AS close,
            -- an adjusted close that is not finite and > 0 is not used (P falls back to
            -- close, METHODOLOGY "Inputs"): stored as missing, so storage holds no NaN
            -- or infinity; a NaN volume or count is a missing one (pandas writes NaN)
            CASE WHEN isfinite(TRY_CAST(adj_close AS DOUBLE)) AND TRY_CAST(adj_close AS DOUBLE) > 0
                 THEN TRY_CAST(adj_close AS DOUBLE) END             AS adj_close,
            CASE WHEN NOT isnan(TRY_CAST(volume AS DOUBLE))
                 THEN TRY_CAST(volume AS DOUBLE) END                AS volume,
            CASE WHEN NOT isnan(TRY_CAST(shares_outstanding AS DOUBLE))
                 THEN TRY_CAST(shares_outstanding AS DOUBLE) END    AS shares_outstanding,
            TRY_CAST(market_cap AS DOUBLE)                          AS given_market_cap,
            TRY_CAST(dividend AS DOUBLE)                            AS dividend,
            TRY_CAST(split_ratio AS DOUBLE)                         AS split_ratio,
            stg_time(known_at)                                      AS given_known_at,
            NULLIF(trim(CAST(source AS VARCHAR)), '')               AS given_source,
            stg_time(fetched_at)                                    AS given_fetched_at,
            lower(NULLIF(trim(CAST(basis AS VARCHAR)), ''))         AS given_basis,
            CASE
                WHEN coalesce(TRY_CAST(date AS DATE),
                              TRY_CAST(trim(CAST(date AS VARCHAR)) AS DATE)) IS NULL
                    THEN 'unparseable_date'
                WHEN NULLIF(trim(CAST(symbol AS VARCHAR)), '') IS NULL THEN 'missing_symbol'
                WHEN stg_unparsed_double(close) THEN 'unparseable_close'
                WHEN stg_unparsed_double(adj_close) THEN 'unparseable_adj_close'
                WHEN stg_unparsed_double(volume) THEN 'unparseable_volume'
                WHEN stg_unparsed_double(shares_outstanding)
                    THEN 'unparseable_shares_outstanding'
                WHEN stg_unparsed_double(market_cap) THEN 'unparseable_market_cap'
                WHEN stg_unparsed_double(dividend) THEN 'unparseable_dividend'
                WHEN stg_unparsed_double(split_ratio) THEN 'unparseable_split_ratio'
                WHEN stg_unparsed_time(known_at) THEN 'unparseable_known_at'
                WHEN stg_unparsed_time(fetched_at) THEN 'unparseable_fetched_at'
            END AS parse_error,
            date AS raw_date,
            symbol AS raw_symbol,
            close AS raw_close,
            adj_close AS raw_adj_close,
            volume AS raw_volume,
            shares_outstanding AS raw_shares_outstanding,
            market_cap AS raw_market_cap,
            dividend AS raw_dividend,
            split_ratio AS raw_split_ratio,
            known_at AS raw_known_at,
            fetched_at AS raw_fetched_at
        FROM raw_prices
    )
) p
) TO $staging (FORMAT parquet, COMPRESSION uncompressed, DICTIONARY_SIZE_LIMIT 1);

SET VARIABLE stg_prices_file = $staging;
SET VARIABLE stg_known_at = $known_at;
SET VARIABLE stg_provider = $provider;

-- The file keeps the given provenance (missing in most inputs: costs nothing to
-- write); the run's defaults fill it in here.
CREATE OR REPLACE TEMP VIEW stg_prices_staged AS
SELECT
    _row, date, symbol, close, adj_close, volume, shares_outstanding, dividend, split_ratio,
    raw_record, market_cap,
    coalesce(given_known_at, getvariable('stg_known_at')) AS known_at,
    coalesce(given_source, getvariable('stg_provider')) AS source,
    coalesce(given_fetched_at, getvariable('stg_known_at')) AS fetched_at,
    CASE WHEN shares_outstanding IS NOT NULL
         THEN coalesce(given_basis, 'point_in_time') END AS basis,
    false AS shares_inferred,   -- true: shares taken from shares_history (fill_shares)
    reason
FROM read_parquet(getvariable('stg_prices_file'));

-- The rows fill_shares may change (its UPDATE needs a table; usually none), and
-- every checked row: the others as staged, these as filled.
CREATE OR REPLACE TEMP TABLE stg_prices_to_fill AS
SELECT * FROM stg_prices_staged WHERE reason = 'missing_market_cap';

CREATE OR REPLACE TEMP VIEW stg_prices_checked AS
SELECT * FROM stg_prices_staged WHERE reason IS DISTINCT FROM 'missing_market_cap'
UNION ALL
SELECT * FROM stg_prices_to_fill;

-- name: fill_shares
-- A bar with neither market_cap nor shares_outstanding is valued at close x the
-- shares in force ON ITS DATE (METHODOLOGY "Inputs"), never today's count
-- silently: the count in force (the latest on or before the bar's date among the
-- shares_history rows known at the run's start and this input's own valid counts),
-- times the split_ratio of every valid row of the symbol after that count's
-- latest row, this row included. Splits and the rows giving counts are read from
-- the merged data: the stored prices (current versions) with this input's valid
-- rows in place of the stored rows of the same date and symbol. The bar keeps the
-- count's basis and is marked shares_inferred (an inferred row gives no count).
-- Everything is driven by the rows to fill: an input without any (most daily
-- inputs) costs a few empty joins; splits are rare, so the rows giving counts are
-- read only from a symbol's first split on.
CREATE OR REPLACE TEMP TABLE stg_shares_run AS SELECT CAST($known_at AS TIMESTAMP) AS known_at;

-- The rows to fill; ok: no other check fails (only those can become valid).
CREATE OR REPLACE TEMP TABLE stg_fill_targets AS
SELECT _row, symbol, date, close, adj_close, volume, dividend, split_ratio, known_at,
       (split_ratio IS NULL OR (isfinite(split_ratio) AND split_ratio > 0))
       AND (dividend IS NULL OR (isfinite(dividend) AND dividend >= 0))
       AND known_at <= $known_at AS ok
FROM stg_prices_checked WHERE reason = 'missing_market_cap';

-- This input's valid rows of those symbols, and its rows to fill that can become
-- valid (ok), one per key. A key given with different values is quarantined later
-- (conflicting_duplicate), and so is a version not newer than the stored one
-- (stale_version): then the stored row stays. stage_price_keys and compare_prices
-- decide; these are the same tests made before the fill (a row to fill that
-- replaces a stored count counts as stale when it is not newer).
CREATE OR REPLACE TEMP TABLE stg_fill_input AS
WITH candidates AS (
    SELECT k.symbol, k.date, k.known_at, true AS given_row, k.shares_outstanding AS given,
           k.basis, k.split_ratio AS split, k.close, k.adj_close, k.volume, k.dividend,
           k.market_cap
    FROM stg_prices_checked k SEMI JOIN stg_fill_targets t ON t.symbol = k.symbol
    WHERE k.reason IS NULL
    UNION ALL
    SELECT symbol, date, known_at, false, NULL, NULL, split_ratio, close, adj_close, volume,
           dividend, NULL
    FROM stg_fill_targets WHERE ok
),
repeated AS (
    SELECT i.symbol, i.date,
           count(DISTINCT (i.close, i.adj_close, i.volume, i.dividend, i.split)) > 1
           OR count(DISTINCT (i.close, i.adj_close, i.volume, i.given, i.market_cap,
                              i.dividend, i.split)) FILTER (WHERE i.given_row) > 1
               AS conflicting,
           min(i.known_at) AS known_at
    FROM candidates i
    SEMI JOIN (SELECT symbol, date FROM candidates GROUP BY symbol, date
               HAVING count(*) > 1) r ON r.symbol = i.symbol AND r.date = i.date
    GROUP BY i.symbol, i.date
),
one_per_key AS (  -- of a repeated key: a valid copy first, known since the earliest copy
    SELECT i.* FROM candidates i
    ANTI JOIN repeated r ON r.symbol = i.symbol AND r.date = i.date
    UNION ALL
    SELECT i.* REPLACE (r.known_at AS known_at) FROM candidates i
    JOIN repeated r ON r.symbol = i.symbol AND r.date = i.date AND NOT r.conflicting
    QUALIFY row_number() OVER (PARTITION BY i.symbol, i.date ORDER BY i.given_row DESC) = 1
)
SELECT v.* FROM one_per_key v
ANTI JOIN prices p ON p.symbol = v.symbol AND p.date = v.date AND p.known_at >= v.known_at
    AND CASE WHEN v.given_row
             THEN (v.close, v.adj_close, v.volume, v.given, v.market_cap, v.dividend, v.split,
                   v.basis)
                  IS DISTINCT FROM (p.close, p.adj_close, p.volume, p.shares_outstanding,
                                    p.market_cap, p.dividend, p.split_ratio, p.basis)
             ELSE (v.close, v.adj_close, v.volume, v.dividend, v.split)
                  IS DISTINCT FROM (p.close, p.adj_close, p.volume, p.dividend, p.split_ratio)
                  OR (p.shares_outstanding IS NOT NULL AND NOT p.shares_inferred) END;

-- The count in force on each row's date (as-of join): the input's own count wins
-- over a history row of the same date. Rows without one stay missing_market_cap.
CREATE OR REPLACE TEMP TABLE stg_shares_targets AS
WITH counts AS (
    SELECT symbol, effective_date AS date, shares_outstanding AS given, basis FROM (
        SELECT h.*, row_number() OVER (PARTITION BY h.symbol, h.effective_date
                                       ORDER BY h.known_at DESC) AS pick
        FROM shares_history h
        SEMI JOIN stg_fill_targets t ON t.symbol = h.symbol
        ANTI JOIN stg_fill_input v ON v.symbol = h.symbol AND v.date = h.effective_date
            AND v.given IS NOT NULL
        WHERE h.known_at <= $known_at
    ) WHERE pick = 1
    UNION ALL
    SELECT symbol, date, given, basis FROM stg_fill_input WHERE given IS NOT NULL
)
SELECT DISTINCT t.symbol, t.date, c.date AS count_date, c.given, c.basis
FROM stg_fill_targets t
ASOF JOIN counts c ON c.symbol = t.symbol AND t.date >= c.date;

-- The input's rows that replace stored ones: its valid rows and the rows to fill
-- that get a count.
CREATE OR REPLACE TEMP TABLE stg_shares_incoming AS
SELECT v.symbol, v.date, v.given, v.basis, v.split FROM stg_fill_input v
LEFT JOIN stg_shares_targets t ON t.symbol = v.symbol AND t.date = v.date
WHERE v.given_row OR t.symbol IS NOT NULL;

-- The rule over the merged data (stored prices, the incoming rows in place of the
-- stored rows of their date), for the rows in stg_shares_targets (symbol, date,
-- and the count in force: count_date, given, basis); compare_prices uses it again.
-- splits: those of the symbols after their earliest count in force. resets: the
-- rows giving a count from a symbol's first such split on (before it a count row
-- only repeats the count in force: record_shares collapses unchanged counts, and
-- splits are rare, so few stored rows are read). A row's shares: the count of its
-- latest reset on or after its first split (else the count in force), times the
-- splits after that up to its date, multiplied in date order (the same rows always
-- give the same bits).
CREATE OR REPLACE TEMP VIEW stg_shares_derived AS
WITH span AS (
    SELECT symbol, min(count_date) AS since, max(date) AS until
    FROM stg_shares_targets GROUP BY symbol
),
splits AS (
    SELECT p.symbol, p.date, p.split_ratio AS split FROM prices p
    JOIN span s ON s.symbol = p.symbol AND p.date > s.since AND p.date <= s.until
    ANTI JOIN stg_shares_incoming i ON i.symbol = p.symbol AND i.date = p.date
    WHERE p.split_ratio IS NOT NULL
    UNION ALL
    SELECT i.symbol, i.date, i.split FROM stg_shares_incoming i
    JOIN span s ON s.symbol = i.symbol AND i.date > s.since AND i.date <= s.until
    WHERE i.split IS NOT NULL
),
first_split AS (SELECT symbol, min(date) AS since FROM splits GROUP BY symbol),
resets AS (
    SELECT p.symbol, p.date, p.shares_outstanding AS given, p.basis FROM prices p
    JOIN first_split f ON f.symbol = p.symbol AND p.date >= f.since
    ANTI JOIN stg_shares_incoming i ON i.symbol = p.symbol AND i.date = p.date
    WHERE p.shares_outstanding IS NOT NULL AND NOT p.shares_inferred
      AND p.date >= (SELECT min(since) FROM first_split)
    UNION ALL
    SELECT i.symbol, i.date, i.given, i.basis FROM stg_shares_incoming i
    JOIN first_split f ON f.symbol = i.symbol AND i.date >= f.since
    WHERE i.given IS NOT NULL
),
relevant AS (
    SELECT t.symbol, t.date, s.date AS split_date, s.split
    FROM stg_shares_targets t
    JOIN splits s ON s.symbol = t.symbol AND s.date > t.count_date AND s.date <= t.date
),
latest_reset AS (
    SELECT f.symbol, f.date, max(r.date) AS reset_date, arg_max(r.given, r.date) AS given,
           arg_max(r.basis, r.date) AS basis
    FROM (SELECT symbol, date, min(split_date) AS first_split FROM relevant GROUP BY ALL) f
    JOIN resets r ON r.symbol = f.symbol AND r.date >= f.first_split AND r.date < f.date
    GROUP BY f.symbol, f.date
),
factor AS (
    SELECT s.symbol, s.date, product(s.split ORDER BY s.split_date) AS factor
    FROM relevant s
    LEFT JOIN latest_reset l ON l.symbol = s.symbol AND l.date = s.date
    WHERE l.reset_date IS NULL OR s.split_date > l.reset_date
    GROUP BY s.symbol, s.date
)
SELECT t.symbol, t.date,
       coalesce(l.given, t.given) * coalesce(f.factor, 1.0) AS shares_outstanding,
       CASE WHEN l.reset_date IS NULL THEN t.basis ELSE l.basis END AS basis
FROM stg_shares_targets t
LEFT JOIN latest_reset l ON l.symbol = t.symbol AND l.date = t.date
LEFT JOIN factor f ON f.symbol = t.symbol AND f.date = t.date;

CREATE OR REPLACE TEMP TABLE stg_shares_fill AS
SELECT t._row, d.shares_outstanding, d.basis
FROM stg_fill_targets t
JOIN stg_shares_derived d ON d.symbol = t.symbol AND d.date = t.date;

-- The filled rows pass the remaining checks of stage_prices again.
UPDATE stg_prices_to_fill AS k
SET shares_outstanding = f.shares_outstanding,
    market_cap = k.close * f.shares_outstanding,
    basis = f.basis,
    shares_inferred = true,
    reason = CASE
        WHEN NOT isfinite(k.close * f.shares_outstanding) OR k.close * f.shares_outstanding <= 0
            THEN 'invalid_market_cap'
        WHEN k.split_ratio IS NOT NULL AND (NOT isfinite(k.split_ratio) OR k.split_ratio <= 0)
            THEN 'invalid_split_ratio'
        WHEN k.dividend IS NOT NULL AND (NOT isfinite(k.dividend) OR k.dividend < 0)
            THEN 'invalid_dividend'
        WHEN k.volume IS NOT NULL AND (NOT isfinite(k.volume) OR k.volume < 0)
            THEN 'invalid_volume'
        WHEN k.known_at > $known_at THEN 'future_known_at'
    END
FROM stg_shares_fill f
WHERE k._row = f._row;

DROP TABLE stg_shares_fill;
DROP TABLE stg_fill_targets;
DROP TABLE stg_fill_input;

-- name: stage_price_keys
-- Keys given more than once among valid rows. Exact copies collapse into the
-- first row (known since the earliest copy); different values for one (date,
-- symbol) are a conflict and every copy is quarantined.
-- Grouping every row by key is the costly part, and most inputs repeat none: the
-- keys are grouped only for the symbols that may repeat a date. A symbol's rows
-- are counted per block of 512 days and their days set as bits (bitstring_agg):
-- fewer bits than rows means a date given twice (a few thousand small groups
-- instead of one per row).
CREATE OR REPLACE TEMP TABLE stg_prices_repeated AS
WITH days AS (
    SELECT symbol, CAST(date - DATE '1970-01-01' AS BIGINT) AS day
    FROM stg_prices_checked WHERE reason IS NULL
),
suspects AS (
    SELECT DISTINCT symbol FROM (
        SELECT symbol, count(*) AS n,
               bit_count(bitstring_agg(CAST(day & 511 AS INTEGER), 0, 511)) AS distinct_days
        FROM days GROUP BY symbol, day >> 9
    ) WHERE n > distinct_days
),
repeated AS (
    SELECT k.date, k.symbol FROM stg_prices_checked k
    SEMI JOIN suspects s ON s.symbol = k.symbol
    WHERE k.reason IS NULL
    GROUP BY k.date, k.symbol
    HAVING count(*) > 1
)
SELECT k.date, k.symbol, count(*) AS copies, min(k._row) AS first_row,
       min(k.known_at) AS known_at,
       count(DISTINCT (k.close, k.adj_close, k.volume, k.shares_outstanding, k.market_cap,
                       k.dividend, k.split_ratio)) > 1 AS conflicting
FROM stg_prices_checked k
SEMI JOIN repeated r ON r.date = k.date AND r.symbol = k.symbol
WHERE k.reason IS NULL
GROUP BY k.date, k.symbol;

-- Valid rows: not conflicting, one per key (before the comparison with the store).
CREATE OR REPLACE TEMP VIEW stg_prices_valid AS
SELECT k._row, k.date, k.symbol, k.close, k.adj_close, k.volume, k.shares_outstanding,
       k.market_cap, k.dividend, k.split_ratio, coalesce(r.known_at, k.known_at) AS known_at,
       k.source, k.fetched_at, k.basis, k.shares_inferred
FROM stg_prices_checked k
LEFT JOIN stg_prices_repeated r ON r.date = k.date AND r.symbol = k.symbol
WHERE k.reason IS NULL AND (r.date IS NULL OR (NOT r.conflicting AND k._row = r.first_row));

-- name: price_window
-- Dates of the valid rows: bounds the scans of stored prices.
SELECT min(date), max(date) FROM stg_prices_checked WHERE reason IS NULL;

-- name: compare_prices
-- Valid rows with a stored row of their key (none in a new window), and whether
-- their values differ (changed: usually few). A new version must be known later
-- than the stored one; one known at or before it is 'stale' and quarantined, so
-- history is never rewritten (methodology 9.2). The counts (price_action_counts)
-- and the merge (merge_prices) read this comparison again, not the stored rows.
CREATE OR REPLACE TEMP TABLE stg_prices_matched AS
SELECT a._row, a.date, a.symbol, a.known_at, p.known_at AS stored_known_at,
       (a.close, a.adj_close, a.volume, a.shares_outstanding, a.market_cap, a.dividend,
        a.split_ratio, a.basis) IS DISTINCT FROM
       (p.close, p.adj_close, p.volume, p.shares_outstanding, p.market_cap, p.dividend,
        p.split_ratio, p.basis) AS changed
FROM stg_prices_valid a
JOIN prices p ON p.date = a.date AND p.symbol = a.symbol
    AND p.date BETWEEN $min_date AND $max_date;

CREATE OR REPLACE TEMP TABLE stg_prices_changed AS
SELECT _row, date, symbol, known_at, stored_known_at,
       coalesce(stored_known_at >= known_at, false) AS stale
FROM stg_prices_matched WHERE changed;

-- Accepted rows: valid and not stale.
CREATE OR REPLACE TEMP VIEW stg_prices_accepted AS
SELECT v.* FROM stg_prices_valid v
ANTI JOIN (SELECT _row FROM stg_prices_changed WHERE stale) s ON s._row = v._row;

-- Stored rows whose shares were inferred are re-derived when this input changes the
-- rows they depend on: an accepted row of the symbol on an earlier date that gives
-- a count or a split, or that replaces a stored row (which may have given one).
-- Only rows dated after the input's first date are read (a daily input scans the
-- newest row groups). Rows with given counts are never touched; one the rule can
-- no longer value (no count in force) is left as it is.
CREATE OR REPLACE TEMP TABLE stg_rederive_targets AS
WITH inferred AS (
    SELECT date, symbol, close, shares_outstanding, market_cap, basis, known_at
    FROM prices WHERE shares_inferred AND date > $min_date
),
since AS (
    SELECT symbol, min(date) AS since FROM (
        SELECT a.symbol, a.date FROM stg_prices_accepted a
        SEMI JOIN inferred i ON i.symbol = a.symbol
        WHERE (a.shares_outstanding IS NOT NULL AND NOT a.shares_inferred)
           OR a.split_ratio IS NOT NULL
        UNION ALL
        SELECT c.symbol, c.date FROM stg_prices_changed c
        SEMI JOIN inferred i ON i.symbol = c.symbol
        WHERE NOT c.stale
    )
    GROUP BY symbol
)
SELECT i.* FROM inferred i
JOIN since s ON s.symbol = i.symbol AND i.date > s.since
ANTI JOIN stg_prices_accepted a ON a.symbol = i.symbol AND a.date = i.date
WHERE i.known_at < (SELECT known_at FROM stg_shares_run);

-- The rule over the merged data (fill_shares): the count in force among the
-- shares_history rows known at the run's start and the accepted counts, and the
-- accepted rows in place of the stored ones.
CREATE OR REPLACE TEMP TABLE stg_shares_targets AS
WITH incoming_counts AS (
    SELECT a.symbol, a.date, a.shares_outstanding AS given, a.basis
    FROM stg_prices_accepted a SEMI JOIN stg_rederive_targets t ON t.symbol = a.symbol
    WHERE a.shares_outstanding IS NOT NULL AND NOT a.shares_inferred
),
counts AS (
    SELECT symbol, effective_date AS date, shares_outstanding AS given, basis FROM (
        SELECT h.*, row_number() OVER (PARTITION BY h.symbol, h.effective_date
                                       ORDER BY h.known_at DESC) AS pick
        FROM shares_history h
        SEMI JOIN stg_rederive_targets t ON t.symbol = h.symbol
        ANTI JOIN incoming_counts c ON c.symbol = h.symbol AND c.date = h.effective_date
        WHERE h.known_at <= (SELECT known_at FROM stg_shares_run)
    ) WHERE pick = 1
    UNION ALL
    SELECT * FROM incoming_counts
)
SELECT t.symbol, t.date, c.date AS count_date, c.given, c.basis
FROM stg_rederive_targets t
ASOF JOIN counts c ON c.symbol = t.symbol AND t.date >= c.date;

CREATE OR REPLACE TEMP TABLE stg_shares_incoming AS
SELECT a.symbol, a.date, CASE WHEN NOT a.shares_inferred THEN a.shares_outstanding END AS given,
       a.basis, a.split_ratio AS split
FROM stg_prices_accepted a SEMI JOIN stg_shares_targets t ON t.symbol = a.symbol;

-- Re-derived values that differ from the stored ones: new versions (merge_prices).
CREATE OR REPLACE TEMP TABLE stg_shares_rederived AS
SELECT t.date, t.symbol, d.shares_outstanding, t.close * d.shares_outstanding AS market_cap,
       d.basis, r.known_at
FROM stg_rederive_targets t
JOIN stg_shares_derived d ON d.symbol = t.symbol AND d.date = t.date
CROSS JOIN stg_shares_run r
WHERE isfinite(t.close * d.shares_outstanding) AND t.close * d.shares_outstanding > 0
  AND (d.shares_outstanding, t.close * d.shares_outstanding, d.basis)
      IS DISTINCT FROM (t.shares_outstanding, t.market_cap, t.basis);

-- name: quarantine_rejections
INSERT INTO quarantine
SELECT $run_id, 'prices', _row, coalesce(CAST(date AS VARCHAR), raw_record->>'date'),
       coalesce(symbol, raw_record->>'symbol'), reason,
       coalesce(raw_record, to_json(struct_pack(
           date := date, symbol := symbol, close := close, adj_close := adj_close,
           volume := volume, shares_outstanding := shares_outstanding,
           market_cap := market_cap, dividend := dividend, split_ratio := split_ratio,
           known_at := known_at)))
FROM stg_prices_checked
WHERE reason IS NOT NULL
UNION ALL
SELECT $run_id, 'prices', k._row, CAST(k.date AS VARCHAR), k.symbol, 'conflicting_duplicate',
       to_json(struct_pack(
           date := k.date, symbol := k.symbol, close := k.close, adj_close := k.adj_close,
           volume := k.volume, shares_outstanding := k.shares_outstanding,
           market_cap := k.market_cap, dividend := k.dividend, split_ratio := k.split_ratio,
           known_at := k.known_at))
FROM stg_prices_checked k
SEMI JOIN stg_prices_repeated r ON r.date = k.date AND r.symbol = k.symbol AND r.conflicting
WHERE k.reason IS NULL
UNION ALL
SELECT $run_id, 'prices', k._row, CAST(k.date AS VARCHAR), k.symbol, 'stale_version',
       to_json(struct_pack(
           date := k.date, symbol := k.symbol, close := k.close, adj_close := k.adj_close,
           volume := k.volume, shares_outstanding := k.shares_outstanding,
           market_cap := k.market_cap, dividend := k.dividend, split_ratio := k.split_ratio,
           known_at := c.known_at, stored_known_at := c.stored_known_at))
FROM stg_prices_checked k
JOIN stg_prices_changed c ON c._row = k._row AND c.stale
UNION ALL
SELECT $run_id, 'securities', _row, NULL, symbol, reason, NULL
FROM stg_securities_rejected
UNION ALL
SELECT $run_id, 'securities', _row, NULL, symbol, 'stale_version',
       to_json(struct_pack(known_at := known_at, stored_known_at := stored_known_at))
FROM stg_securities WHERE action = 'stale';

-- name: securities_changed
SELECT count(*) FROM stg_securities WHERE action IN ('insert', 'update');

-- name: rejection_counts
SELECT source, reason, count(*) AS n
FROM quarantine WHERE run_id = $run_id
GROUP BY ALL ORDER BY n DESC, reason;

-- name: price_stage_counts
-- One scan of the accepted rows.
SELECT
    (SELECT count(*) FROM stg_prices_checked)                                AS rows_read,
    count(*)                                                                 AS rows_accepted,
    (SELECT coalesce(sum(copies - 1), 0) FROM stg_prices_repeated
     WHERE NOT conflicting)                                                  AS duplicates_collapsed,
    min(date)                                                                AS min_date,
    max(date)                                                                AS max_date,
    count(*) FILTER (WHERE basis = 'current')                                AS rows_current_basis
FROM stg_prices_accepted;

-- name: price_action_counts
-- From the comparison with what is stored (compare_prices): an accepted row is
-- inserted unless a stored row of its key stays (unchanged) or is replaced (changed
-- and not stale; a stale row is not accepted).
SELECT
    (SELECT count(*) FROM stg_prices_accepted)
    - count(*) FILTER (WHERE NOT changed OR NOT coalesce(stored_known_at >= known_at, false))
        AS rows_inserted,
    count(*) FILTER (WHERE changed AND NOT coalesce(stored_known_at >= known_at, false))
    + (SELECT count(*) FROM stg_shares_rederived) AS rows_updated,  -- re-derived shares
    count(*) FILTER (WHERE NOT changed) AS rows_unchanged
FROM stg_prices_matched;

-- name: merge_securities
-- A changed security's current version moves to the history first (same
-- transaction), superseded at the new version's known_at.
INSERT INTO security_versions
    (symbol, name, exchange, sector, industry, currency, type, company_id, run_id, known_at,
     superseded_at, superseded_by_run_id)
SELECT s.symbol, s.name, s.exchange, s.sector, s.industry, s.currency, s.type, s.company_id,
       s.run_id, s.known_at, d.known_at, $run_id
FROM securities s
JOIN stg_securities d ON d.symbol = s.symbol AND d.action = 'update';

UPDATE securities AS s
SET name = d.name, exchange = d.exchange, sector = d.sector, industry = d.industry,
    currency = d.currency, type = d.type, company_id = d.company_id, run_id = $run_id,
    known_at = d.known_at
FROM stg_securities d
WHERE d.action = 'update' AND s.symbol = d.symbol;

INSERT INTO securities
    (symbol, name, exchange, sector, industry, currency, type, company_id, run_id, known_at)
SELECT symbol, name, exchange, sector, industry, currency, type, company_id, $run_id, known_at
FROM stg_securities WHERE action = 'insert';

-- name: merge_prices
-- A changed row's current version moves to price_versions (superseded at the new
-- version's known_at), then is replaced (insert_prices); new rows are appended;
-- identical rows are left alone (run_id and known_at keep pointing at the version in
-- force). The store runs merge_prices, insert_prices and merge_rederived_shares in
-- this order (the Iceberg backend's scratch store writes the new rows to data files
-- instead: lake.sql).
INSERT INTO price_versions
    (date, symbol, close, adj_close, volume, shares_outstanding, market_cap, dividend,
     split_ratio, run_id, known_at, superseded_at, superseded_by_run_id, source, fetched_at,
     basis, shares_inferred)
SELECT p.date, p.symbol, p.close, p.adj_close, p.volume, p.shares_outstanding, p.market_cap,
       p.dividend, p.split_ratio, p.run_id, p.known_at, c.known_at, $run_id, p.source,
       p.fetched_at, p.basis, p.shares_inferred
FROM prices p
JOIN stg_prices_changed c ON c.date = p.date AND c.symbol = p.symbol AND NOT c.stale
WHERE p.date BETWEEN $min_date AND $max_date;

DELETE FROM prices AS p
USING stg_prices_changed c
WHERE p.date = c.date AND p.symbol = c.symbol AND NOT c.stale
  AND p.date BETWEEN $min_date AND $max_date;

-- name: insert_prices
-- An accepted row is written unless it matched a stored row that stays (compare_prices).
INSERT INTO prices
    (date, symbol, close, adj_close, volume, shares_outstanding, market_cap, dividend,
     split_ratio, run_id, known_at, source, fetched_at, basis, shares_inferred)
SELECT a.date, a.symbol, a.close, a.adj_close, a.volume, a.shares_outstanding, a.market_cap,
       a.dividend, a.split_ratio, $run_id, a.known_at, a.source, a.fetched_at, a.basis,
       a.shares_inferred
FROM stg_prices_accepted a
ANTI JOIN stg_prices_matched m ON m._row = a._row AND NOT m.changed;

-- name: merge_rederived_shares
-- Stored rows with re-derived shares (compare_prices): the same, known from this
-- run's start. They are dated after the input's first date.
INSERT INTO price_versions
    (date, symbol, close, adj_close, volume, shares_outstanding, market_cap, dividend,
     split_ratio, run_id, known_at, superseded_at, superseded_by_run_id, source, fetched_at,
     basis, shares_inferred)
SELECT p.date, p.symbol, p.close, p.adj_close, p.volume, p.shares_outstanding, p.market_cap,
       p.dividend, p.split_ratio, p.run_id, p.known_at, r.known_at, $run_id, p.source,
       p.fetched_at, p.basis, p.shares_inferred
FROM prices p
JOIN stg_shares_rederived r ON r.date = p.date AND r.symbol = p.symbol
WHERE p.date > $min_date;

UPDATE prices AS p
SET shares_outstanding = r.shares_outstanding, market_cap = r.market_cap, basis = r.basis,
    run_id = $run_id, known_at = r.known_at
FROM stg_shares_rederived r
WHERE p.date = r.date AND p.symbol = r.symbol AND p.date > $min_date;

-- name: record_shares
-- Every accepted count (not one taken from the history itself) that differs from
-- the count in force before it becomes a shares_history row: the first of a
-- symbol in the input is compared with the stored history (as-of join), later ones
-- with the previous input row, so unchanged consecutive counts collapse.
-- Only the first row of a run of equal counts can differ from the row before it.
-- A symbol's rows of one count usually form one run: grouped by (symbol, count),
-- a group whose dates do not overlap the next group's is one run, and its first
-- row is the one to compare (no sort of every row). The rows of a symbol whose
-- count comes back after another one (A, B, A) are compared one by one.
INSERT INTO shares_history
    (symbol, effective_date, shares_outstanding, known_at, source, basis, run_id)
WITH given AS NOT MATERIALIZED (  -- read twice, never held in memory
    SELECT symbol, date, shares_outstanding, known_at, source, basis
    FROM stg_prices_accepted
    WHERE shares_outstanding IS NOT NULL AND NOT shares_inferred
),
runs AS (
    SELECT symbol, shares_outstanding, min(date) AS date, max(date) AS last_date,
           arg_min(known_at, date) AS known_at, arg_min(source, date) AS source,
           arg_min(basis, date) AS basis
    FROM given
    GROUP BY symbol, shares_outstanding
),
interleaved AS (
    SELECT DISTINCT symbol FROM (
        SELECT symbol, last_date, lead(date) OVER (PARTITION BY symbol ORDER BY date) AS next
        FROM runs
    ) WHERE last_date > next
),
incoming AS (  -- nth: the symbol's first input row (1) or a later one that changes the count
    SELECT symbol, date, shares_outstanding, known_at, source, basis,
           row_number() OVER (PARTITION BY symbol ORDER BY date) AS nth
    FROM runs ANTI JOIN interleaved USING (symbol)
    UNION ALL
    SELECT symbol, date, shares_outstanding, known_at, source, basis, nth FROM (
        SELECT g.*,
               lag(g.shares_outstanding) OVER (PARTITION BY g.symbol ORDER BY g.date) AS previous,
               row_number() OVER (PARTITION BY g.symbol ORDER BY g.date) AS nth
        FROM given g SEMI JOIN interleaved USING (symbol)
    ) WHERE nth = 1 OR shares_outstanding <> previous
),
stored AS (
    SELECT symbol, effective_date, shares_outstanding, basis FROM (
        SELECT *, row_number() OVER (PARTITION BY symbol, effective_date
                                     ORDER BY known_at DESC) AS pick
        FROM shares_history
    ) WHERE pick = 1
)
SELECT i.symbol, i.date, i.shares_outstanding, i.known_at, i.source, i.basis, $run_id
FROM incoming i
ASOF LEFT JOIN stored h ON h.symbol = i.symbol AND i.date >= h.effective_date
ANTI JOIN stored s ON s.symbol = i.symbol AND s.effective_date = i.date
    AND s.shares_outstanding = i.shares_outstanding AND s.basis = i.basis
WHERE i.nth > 1
   OR (i.shares_outstanding, i.basis) IS DISTINCT FROM (h.shares_outstanding, h.basis);

-- name: drop_staging
DROP TABLE IF EXISTS stg_securities_parsed;
DROP TABLE IF EXISTS stg_securities_distinct;
DROP TABLE IF EXISTS stg_securities_conflicts;
DROP TABLE IF EXISTS stg_securities_rejected;
DROP TABLE IF EXISTS stg_securities;
DROP VIEW IF EXISTS stg_prices_accepted;
DROP VIEW IF EXISTS stg_prices_valid;
DROP TABLE IF EXISTS stg_prices_changed;
DROP TABLE IF EXISTS stg_prices_matched;
DROP TABLE IF EXISTS stg_prices_repeated;
DROP VIEW IF EXISTS stg_prices_checked;
DROP TABLE IF EXISTS stg_prices_to_fill;
DROP VIEW IF EXISTS stg_prices_staged;
RESET VARIABLE stg_prices_file;
RESET VARIABLE stg_known_at;
RESET VARIABLE stg_provider;
DROP TABLE IF EXISTS stg_prices_raw;
DROP MACRO IF EXISTS stg_unparsed_double;
DROP MACRO IF EXISTS stg_unparsed_time;
DROP MACRO IF EXISTS stg_time;
DROP MACRO IF EXISTS stg_typed_time;
DROP TABLE IF EXISTS stg_shares_fill;
DROP TABLE IF EXISTS stg_fill_targets;
DROP TABLE IF EXISTS stg_fill_input;
DROP VIEW IF EXISTS stg_shares_derived;
DROP TABLE IF EXISTS stg_shares_targets;
DROP TABLE IF EXISTS stg_shares_incoming;
DROP TABLE IF EXISTS stg_rederive_targets;
DROP TABLE IF EXISTS stg_shares_rederived;
DROP TABLE IF EXISTS stg_shares_run;
