-- index-builder warehouse ddl --dialect duckdb (source: publish)
--
-- Plain tables that 'index-builder warehouse publish --target URL' fills (merging
-- on their keys), and the analytics views over them. Every statement may run again.
--
-- Views (compiled from one SQL text with sqlglot):
--   index_daily_levels
--   index_composition
--   index_composition_changes
--   index_sector_weights

CREATE SCHEMA IF NOT EXISTS index_builder;

-- One row per published index: its definition (JSON) and headline fields.
CREATE TABLE IF NOT EXISTS index_builder.index_definitions (
  index_id TEXT NOT NULL,
  name TEXT,
  return_type TEXT,
  weighting TEXT,
  rebalance TEXT,
  definition TEXT NOT NULL,
  builtin BOOLEAN NOT NULL,
  PRIMARY KEY (index_id)
);

-- The build each published index's results come from.
CREATE TABLE IF NOT EXISTS index_builder.index_builds (
  index_id TEXT NOT NULL,
  version BIGINT NOT NULL,
  definition_hash TEXT NOT NULL,
  base_date DATE NOT NULL,
  built_through DATE NOT NULL,
  data_run_id BIGINT NOT NULL,
  built_at TIMESTAMP NOT NULL,
  PRIMARY KEY (index_id)
);

-- Every built day: the headline level and every return variant's level.
CREATE TABLE IF NOT EXISTS index_builder.index_levels (
  index_id TEXT NOT NULL,
  date DATE NOT NULL,
  level DOUBLE NOT NULL,
  daily_return DOUBLE NOT NULL,
  is_rebalance BOOLEAN NOT NULL,
  turnover DOUBLE,
  n_constituents INT NOT NULL,
  level_price DOUBLE,
  level_total DOUBLE,
  level_net_total DOUBLE,
  reference_date DATE,
  PRIMARY KEY (index_id, date)
);

-- Constituent spells: in force after the close of valid_from through valid_to.
CREATE TABLE IF NOT EXISTS index_builder.index_spells (
  index_id TEXT NOT NULL,
  symbol TEXT NOT NULL,
  valid_from DATE NOT NULL,
  valid_to DATE,
  PRIMARY KEY (index_id, symbol, valid_from)
);

-- The securities of the store (sector and name of the constituents).
CREATE TABLE IF NOT EXISTS index_builder.securities (
  symbol TEXT NOT NULL,
  name TEXT,
  exchange TEXT,
  sector TEXT,
  industry TEXT,
  currency TEXT,
  company_id TEXT,
  PRIMARY KEY (symbol)
);

-- Composition changes as the API answers them: entered or exited, by rebalance.
CREATE TABLE IF NOT EXISTS index_builder.index_changes (
  index_id TEXT NOT NULL,
  date DATE NOT NULL,
  symbol TEXT NOT NULL,
  change_type TEXT NOT NULL,
  PRIMARY KEY (index_id, date, symbol)
);

-- Each rebalance's constituents: rank, target weight and notional units.
CREATE TABLE IF NOT EXISTS index_builder.index_holdings (
  index_id TEXT NOT NULL,
  effective_date DATE NOT NULL,
  symbol TEXT NOT NULL,
  rank INT NOT NULL,
  weight DOUBLE NOT NULL,
  units DOUBLE NOT NULL,
  PRIMARY KEY (index_id, effective_date, symbol)
);

-- Each constituent's price (carried through halts, grown by the headline variant since its rebalance) and market cap on every day it is held.
CREATE TABLE IF NOT EXISTS index_builder.index_constituent_prices (
  index_id TEXT NOT NULL,
  date DATE NOT NULL,
  symbol TEXT NOT NULL,
  price DOUBLE NOT NULL,
  market_cap DOUBLE,
  PRIMARY KEY (index_id, date, symbol)
);

-- view index_daily_levels: Every built day of every index: the headline level and every return variant's level, daily return and cumulative return since the base date.
CREATE OR REPLACE VIEW index_builder.index_daily_levels AS
SELECT
  l.index_id,
  l.date,
  l.level,
  l.daily_return,
  l.level / FIRST_VALUE(l.level) OVER (PARTITION BY l.index_id ORDER BY l.date) - 1 AS cumulative_return,
  l.level_price,
  l.level_total,
  l.level_net_total,
  COALESCE(
    l.level_price / LAG(l.level_price) OVER (PARTITION BY l.index_id ORDER BY l.date) - 1,
    0
  ) AS daily_return_price,
  COALESCE(
    l.level_total / LAG(l.level_total) OVER (PARTITION BY l.index_id ORDER BY l.date) - 1,
    0
  ) AS daily_return_total,
  COALESCE(
    l.level_net_total / LAG(l.level_net_total) OVER (PARTITION BY l.index_id ORDER BY l.date) - 1,
    0
  ) AS daily_return_net_total,
  l.level_price / FIRST_VALUE(l.level_price) OVER (PARTITION BY l.index_id ORDER BY l.date) - 1 AS cumulative_return_price,
  l.level_total / FIRST_VALUE(l.level_total) OVER (PARTITION BY l.index_id ORDER BY l.date) - 1 AS cumulative_return_total,
  l.level_net_total / FIRST_VALUE(l.level_net_total) OVER (PARTITION BY l.index_id ORDER BY l.date) - 1 AS cumulative_return_net_total,
  l.is_rebalance,
  l.turnover,
  l.n_constituents
FROM index_builder.index_levels AS l
WHERE
  l.index_id NOT LIKE '%@%';

-- view index_composition: The composition in force after the close of every built day: the members whose spell covers the day (valid_from <= day <= valid_to, an open spell still in force), with the units of the rebalance in force (the last effective date on or before the day) and the day's constituent price: weight = units x price / the index's total. For a date that is not a trading day, read the last built day before it.
CREATE OR REPLACE VIEW index_builder.index_composition AS
WITH days AS (
  SELECT
    l.index_id,
    l.date,
    MAX(CASE WHEN l.is_rebalance THEN l.date END) OVER (
      PARTITION BY l.index_id
      ORDER BY l.date
      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    ) AS period_start
  FROM index_builder.index_levels AS l
  WHERE
    l.index_id NOT LIKE '%@%'
), members AS (
  SELECT
    d.index_id,
    d.date,
    d.period_start,
    s.symbol
  FROM days AS d
  JOIN index_builder.index_spells AS s
    ON s.index_id = d.index_id
    AND s.valid_from <= d.date
    AND (
      s.valid_to IS NULL OR s.valid_to >= d.date
    )
), valued AS (
  SELECT
    m.index_id,
    m.date,
    m.symbol,
    h.rank,
    h.units,
    p.price,
    p.market_cap,
    h.units * p.price AS holding_value
  FROM members AS m
  JOIN index_builder.index_holdings AS h
    ON h.index_id = m.index_id
    AND h.effective_date = m.period_start
    AND h.symbol = m.symbol
  JOIN index_builder.index_constituent_prices AS p
    ON p.index_id = m.index_id AND p.date = m.date AND p.symbol = m.symbol
)
SELECT
  v.index_id,
  v.date,
  v.symbol,
  v.rank,
  v.holding_value / SUM(v.holding_value) OVER (PARTITION BY v.index_id, v.date) AS weight,
  v.market_cap,
  v.price,
  v.units,
  sec.sector,
  sec.name
FROM valued AS v
LEFT JOIN index_builder.securities AS sec
  ON sec.symbol = v.symbol;

-- view index_composition_changes: Constituents entered and exited at each rebalance, from the spells alone: a spell that starts after the base date is an entry on valid_from; a spell that ends is an exit on the next built day after valid_to (the rebalance that removed it).
CREATE OR REPLACE VIEW index_builder.index_composition_changes AS
WITH days AS (
  SELECT
    l.index_id,
    l.date,
    LEAD(l.date) OVER (PARTITION BY l.index_id ORDER BY l.date) AS next_date,
    MIN(l.date) OVER (PARTITION BY l.index_id) AS base_date
  FROM index_builder.index_levels AS l
  WHERE
    l.index_id NOT LIKE '%@%'
)
SELECT
  s.index_id,
  s.valid_from AS date,
  s.symbol,
  'entered' AS change_type
FROM index_builder.index_spells AS s
JOIN days AS d
  ON d.index_id = s.index_id AND d.date = s.valid_from
WHERE
  s.valid_from > d.base_date
UNION ALL
SELECT
  s.index_id,
  d.next_date AS date,
  s.symbol,
  'exited' AS change_type
FROM index_builder.index_spells AS s
JOIN days AS d
  ON d.index_id = s.index_id AND d.date = s.valid_to
WHERE
  d.next_date IS NOT NULL;

-- view index_sector_weights: Sector weights over time: the weights of each day's composition summed by sector.
CREATE OR REPLACE VIEW index_builder.index_sector_weights AS
SELECT
  c.index_id,
  c.date,
  COALESCE(c.sector, 'Unknown') AS sector,
  SUM(c.weight) AS weight,
  COUNT(*) AS constituents
FROM index_builder.index_composition AS c
GROUP BY
  c.index_id,
  c.date,
  COALESCE(c.sector, 'Unknown');
