-- The Spark engine's input from a DuckDB store (engine/spark/reader.py): the bars of a
-- window, exported to Parquet for Spark to read. Spark applies the point-in-time
-- bounds itself (the prices_at macro of migration v8, in DataFrame terms), so the
-- current versions and their history are exported as they are.

-- name: spark_prices_window
SELECT date, symbol, close, adj_close, volume, market_cap, dividend, split_ratio,
       known_at, run_id
FROM prices WHERE date BETWEEN $start AND $end;

-- name: spark_price_versions_window
SELECT date, symbol, close, adj_close, volume, market_cap, dividend, split_ratio,
       known_at, run_id, superseded_at, superseded_by_run_id
FROM price_versions WHERE date BETWEEN $start AND $end;
