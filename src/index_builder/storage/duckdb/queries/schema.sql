-- Versioned migrations. Each block runs once, in order, inside one transaction.
-- The runner records applied versions in schema_migrations.

-- name: v1_core
CREATE TABLE securities (
    symbol      VARCHAR PRIMARY KEY,
    name        VARCHAR,
    exchange    VARCHAR,
    sector      VARCHAR,
    industry    VARCHAR,
    currency    VARCHAR,
    type        VARCHAR,
    company_id  VARCHAR,
    run_id      BIGINT NOT NULL          -- ingestion run that last changed the row
);

-- One row per (date, symbol): only valid bars (METHODOLOGY "Inputs").
-- Uniqueness is kept by the merge queries, not by an index: an ART index on
-- 15M rows doubles ingestion time and memory.
CREATE TABLE prices (
    date                DATE    NOT NULL,
    symbol              VARCHAR NOT NULL,
    close               DOUBLE  NOT NULL,
    adj_close           DOUBLE,
    volume              DOUBLE,
    shares_outstanding  DOUBLE,
    market_cap          DOUBLE  NOT NULL,
    dividend            DOUBLE,
    split_ratio         DOUBLE,
    run_id              BIGINT  NOT NULL  -- ingestion run that last changed the row
);

CREATE SEQUENCE ingest_run_ids START 1;

CREATE TABLE ingest_runs (
    run_id                BIGINT PRIMARY KEY,
    provider              VARCHAR NOT NULL,
    params                JSON,
    status                VARCHAR NOT NULL,   -- running | succeeded | failed
    started_at            TIMESTAMP NOT NULL,
    finished_at           TIMESTAMP,
    rows_read             BIGINT,
    rows_accepted         BIGINT,
    rows_rejected         BIGINT,
    duplicates_collapsed  BIGINT,
    rows_inserted         BIGINT,
    rows_updated          BIGINT,
    rows_unchanged        BIGINT,
    securities_changed    BIGINT,
    min_date              DATE,
    max_date              DATE,
    message               VARCHAR
);

CREATE TABLE quarantine (
    run_id      BIGINT  NOT NULL,
    source      VARCHAR NOT NULL,   -- prices | securities
    row_number  BIGINT,             -- 1-based row of the input
    date        VARCHAR,
    symbol      VARCHAR,
    reason      VARCHAR NOT NULL,
    record      VARCHAR             -- the raw row as JSON
);

CREATE TABLE index_definitions (
    index_id    VARCHAR PRIMARY KEY,
    definition  JSON NOT NULL,
    builtin     BOOLEAN NOT NULL,
    created_at  TIMESTAMP NOT NULL,
    updated_at  TIMESTAMP NOT NULL
);

CREATE TABLE index_builds (
    index_id         VARCHAR PRIMARY KEY,
    version          BIGINT  NOT NULL,   -- new on every build (see v2)
    definition_hash  VARCHAR NOT NULL,
    base_date        DATE    NOT NULL,
    built_through    DATE    NOT NULL,
    data_run_id      BIGINT  NOT NULL,   -- newest ingestion run the build has seen
    built_at         TIMESTAMP NOT NULL,
    duration_ms      DOUBLE,
    warnings         JSON
);

CREATE TABLE index_levels (
    index_id        VARCHAR NOT NULL,
    date            DATE    NOT NULL,
    level           DOUBLE  NOT NULL,
    daily_return    DOUBLE  NOT NULL,
    is_rebalance    BOOLEAN NOT NULL,
    turnover        DOUBLE,
    n_constituents  INTEGER NOT NULL,
    PRIMARY KEY (index_id, date)
);

-- Compositions as constituent spells: in force after the close of valid_from
-- through the close of valid_to (NULL: still in force).
CREATE TABLE index_spells (
    index_id    VARCHAR NOT NULL,
    symbol      VARCHAR NOT NULL,
    valid_from  DATE    NOT NULL,
    valid_to    DATE
);

-- name: v2_build_version_counter
-- Build versions are never reused, even after an index is deleted and added
-- again, so a cache key with a version can never name stale results. The
-- counter starts above every version already handed out.
CREATE TABLE build_version_counter (value BIGINT NOT NULL);
INSERT INTO build_version_counter SELECT coalesce(max(version), 0) FROM index_builds;

-- name: v3_return_variant_levels
-- Levels of every return variant (METHODOLOGY part 2); `level` is the headline.
ALTER TABLE index_levels ADD COLUMN level_price DOUBLE;
ALTER TABLE index_levels ADD COLUMN level_total DOUBLE;
ALTER TABLE index_levels ADD COLUMN level_net_total DOUBLE;

-- name: v4_effective_dates
-- Reference and effective dates (METHODOLOGY part 2): a rebalance row of
-- index_levels is dated by its effective date and names the reference date its
-- selection used (NULL in builds made before v4: the same day).
ALTER TABLE index_levels ADD COLUMN reference_date DATE;
-- Selections made but not yet in force after the last built close: the
-- pro-forma announcement, one row per constituent, replaced by every build.
CREATE TABLE index_announcements (
    index_id        VARCHAR NOT NULL,
    reference_date  DATE    NOT NULL,
    effective_date  DATE,               -- NULL: beyond the exchange calendar
    sessions_ahead  INTEGER NOT NULL,   -- sessions after the last built close
    symbol          VARCHAR NOT NULL,
    name            VARCHAR,
    sector          VARCHAR,
    rank            INTEGER NOT NULL,
    weight          DOUBLE  NOT NULL,   -- target weight
    market_cap      DOUBLE  NOT NULL    -- the security's own, on the reference date
);
