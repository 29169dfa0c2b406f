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

-- name: v5_point_in_time
-- Point in time (docs/methodology.md, section 9): every stored value records when
-- it became known (known_at, UTC); a corrected value is a new version and the one
-- it replaces moves to a history table. prices and securities keep the current
-- versions, so reads without an as-of moment are unchanged. Rows stored before
-- this migration became known when the run that wrote them started (a row
-- without a recorded run: when this migration ran, the conservative choice).
-- known_at stays nullable only because DuckDB cannot add a NOT NULL column to a
-- filled table in one transaction; every merge writes it.
-- the run's default known_at (its start time)
ALTER TABLE ingest_runs ADD COLUMN known_at TIMESTAMP;
UPDATE ingest_runs SET known_at = started_at;

ALTER TABLE prices ADD COLUMN known_at TIMESTAMP;
UPDATE prices SET known_at = r.started_at FROM ingest_runs r WHERE r.run_id = prices.run_id;
UPDATE prices SET known_at = now()::TIMESTAMP WHERE known_at IS NULL;

ALTER TABLE securities ADD COLUMN known_at TIMESTAMP;
UPDATE securities SET known_at = r.started_at FROM ingest_runs r
WHERE r.run_id = securities.run_id;
UPDATE securities SET known_at = now()::TIMESTAMP WHERE known_at IS NULL;

-- Superseded versions: valid (known) from known_at until superseded_at, the
-- known_at of the version that replaced them. Versions of one key never overlap.
CREATE TABLE price_versions (
    date                  DATE      NOT NULL,
    symbol                VARCHAR   NOT NULL,
    close                 DOUBLE    NOT NULL,
    adj_close             DOUBLE,
    volume                DOUBLE,
    shares_outstanding    DOUBLE,
    market_cap            DOUBLE    NOT NULL,
    dividend              DOUBLE,
    split_ratio           DOUBLE,
    run_id                BIGINT    NOT NULL,   -- ingestion run that wrote this version
    known_at              TIMESTAMP NOT NULL,
    superseded_at         TIMESTAMP NOT NULL,
    superseded_by_run_id  BIGINT    NOT NULL    -- ingestion run that replaced it
);

CREATE TABLE security_versions (
    symbol                VARCHAR   NOT NULL,
    name                  VARCHAR,
    exchange              VARCHAR,
    sector                VARCHAR,
    industry              VARCHAR,
    currency              VARCHAR,
    type                  VARCHAR,
    company_id            VARCHAR,
    run_id                BIGINT    NOT NULL,
    known_at              TIMESTAMP NOT NULL,
    superseded_at         TIMESTAMP NOT NULL,
    superseded_by_run_id  BIGINT    NOT NULL
);

-- Results of a build as of K are stored under the key '<index id>@<K>'; the
-- build state records K (NULL: the current results).
ALTER TABLE index_builds ADD COLUMN as_of TIMESTAMP;

-- The values known at moment k: the current version if it was known by then,
-- else the superseded version that was in force at k. Rows first known after k
-- do not exist at k.
CREATE MACRO prices_as_of(k) AS TABLE
    SELECT date, symbol, close, adj_close, volume, shares_outstanding, market_cap, dividend,
           split_ratio
    FROM prices WHERE known_at <= k
    UNION ALL
    SELECT date, symbol, close, adj_close, volume, shares_outstanding, market_cap, dividend,
           split_ratio
    FROM price_versions WHERE known_at <= k AND superseded_at > k;

CREATE MACRO securities_as_of(k) AS TABLE
    SELECT symbol, name, exchange, sector, industry, currency, type, company_id
    FROM securities WHERE known_at <= k
    UNION ALL
    SELECT symbol, name, exchange, sector, industry, currency, type, company_id
    FROM security_versions WHERE known_at <= k AND superseded_at > k;

-- name: v6_provenance_and_shares
-- Provenance of every bar (README "Data sources"): the provider that delivered it,
-- when it was fetched, and the basis of its shares_outstanding: point_in_time (the
-- count in force on that date) or current (today's count applied to a past date;
-- survivorship and look-ahead bias). Rows stored before this migration came from
-- their run's provider at its start; their shares count as point_in_time.
ALTER TABLE prices ADD COLUMN source VARCHAR;
ALTER TABLE prices ADD COLUMN fetched_at TIMESTAMP;
ALTER TABLE prices ADD COLUMN basis VARCHAR;
UPDATE prices SET source = r.provider, fetched_at = r.started_at
FROM ingest_runs r WHERE r.run_id = prices.run_id;
UPDATE prices SET basis = 'point_in_time' WHERE shares_outstanding IS NOT NULL;

ALTER TABLE price_versions ADD COLUMN source VARCHAR;
ALTER TABLE price_versions ADD COLUMN fetched_at TIMESTAMP;
ALTER TABLE price_versions ADD COLUMN basis VARCHAR;
UPDATE price_versions SET source = r.provider, fetched_at = r.started_at
FROM ingest_runs r WHERE r.run_id = price_versions.run_id;
UPDATE price_versions SET basis = 'point_in_time' WHERE shares_outstanding IS NOT NULL;

-- How many accepted rows of a run have shares of basis 'current' (warned about).
ALTER TABLE ingest_runs ADD COLUMN rows_current_basis BIGINT;

-- Shares outstanding as a point-in-time history: the count in force from
-- effective_date until the next effective_date of the symbol, known from
-- known_at. Unchanged consecutive counts collapse into one row; a corrected count
-- for an effective date is a new row known later (read the latest one known at a
-- moment). A bar without market_cap is valued at close x the count in force on
-- its date among the rows known when it is ingested.
CREATE TABLE shares_history (
    symbol              VARCHAR   NOT NULL,
    effective_date      DATE      NOT NULL,
    shares_outstanding  DOUBLE    NOT NULL,
    known_at            TIMESTAMP NOT NULL,
    source              VARCHAR,
    basis               VARCHAR   NOT NULL,   -- point_in_time | current
    run_id              BIGINT    NOT NULL
);
INSERT INTO shares_history
SELECT symbol, date, shares_outstanding, known_at, source, basis, run_id
FROM (
    SELECT symbol, date, shares_outstanding, known_at, source, basis, run_id,
           lag(shares_outstanding) OVER (PARTITION BY symbol ORDER BY date) AS previous
    FROM prices WHERE shares_outstanding IS NOT NULL
)
WHERE previous IS DISTINCT FROM shares_outstanding;

-- name: v7_schedule_runs
-- The daily cycle (index-builder daily / scheduler): one row per step per cycle.
CREATE SEQUENCE schedule_cycle_ids START 1;
CREATE TABLE schedule_runs (
    cycle_id     BIGINT    NOT NULL,
    step         VARCHAR   NOT NULL,   -- backfill | ingest | build | invalidate
    session      DATE,                 -- the session the cycle brings in
    status       VARCHAR   NOT NULL,   -- succeeded | failed | skipped
    attempts     INTEGER   NOT NULL,
    started_at   TIMESTAMP NOT NULL,
    finished_at  TIMESTAMP NOT NULL,
    duration_ms  DOUBLE    NOT NULL,
    message      VARCHAR
);

-- name: v8_published_history
-- Published history (METHODOLOGY "Published history", docs/methodology.md section 6).
-- A definition without a base date keeps the base date of its first build: data
-- that arrives later for earlier dates never moves it. Indices built before this
-- migration keep the base date they were built with.
ALTER TABLE index_definitions ADD COLUMN pinned_base_date DATE;
UPDATE index_definitions SET pinned_base_date = b.base_date
FROM index_builds b WHERE b.index_id = index_definitions.index_id;

-- The data a publication was computed from: the versions known at moment k AND
-- written by ingestion run r or an earlier one. A build as of K reads (K, any run);
-- the reads of a current build read (any moment, the build's data_run_id), so its
-- compositions never mix newer data into a published build. Versions of one key
-- are known and written in increasing order, so the version in force is the last
-- one within both bounds: the next one is past either bound.
CREATE MACRO prices_at(k, r) AS TABLE
    SELECT date, symbol, close, adj_close, volume, shares_outstanding, market_cap, dividend,
           split_ratio
    FROM prices WHERE known_at <= k AND run_id <= r
    UNION ALL
    SELECT date, symbol, close, adj_close, volume, shares_outstanding, market_cap, dividend,
           split_ratio
    FROM price_versions
    WHERE known_at <= k AND run_id <= r AND (superseded_at > k OR superseded_by_run_id > r);

CREATE MACRO securities_at(k, r) AS TABLE
    SELECT symbol, name, exchange, sector, industry, currency, type, company_id
    FROM securities WHERE known_at <= k AND run_id <= r
    UNION ALL
    SELECT symbol, name, exchange, sector, industry, currency, type, company_id
    FROM security_versions
    WHERE known_at <= k AND run_id <= r AND (superseded_at > k OR superseded_by_run_id > r);

-- name: v9_shares_inferred
-- Whether a bar's shares_outstanding was given or inferred by the rule of
-- METHODOLOGY "Inputs" (the count in force, adjusted by the splits since; see
-- fill_shares in ingest.sql). Inferred shares are re-derived when a count or a
-- split arrives for an earlier date; given ones never are. Rows stored before this
-- migration count as given.
ALTER TABLE prices ADD COLUMN shares_inferred BOOLEAN DEFAULT false;
ALTER TABLE price_versions ADD COLUMN shares_inferred BOOLEAN DEFAULT false;

-- name: v11_run_owner
-- The process that runs an ingestion ('<host>:<pid>'). A run still 'running' when
-- another process opens the database for writing can only belong to a process that
-- is gone (DuckDB lets one process write a file): it is marked 'interrupted'.
ALTER TABLE ingest_runs ADD COLUMN owner VARCHAR;

-- name: v10_jobs
-- The API's jobs (POST /build-index async, POST /builds, POST /export-data async),
-- so GET /jobs/{id} answers after a restart: the newest INDEX_BUILDER_JOBS_KEEP are
-- kept. A job still queued or running when the API opens the database belongs to a
-- process that is gone: it is marked 'interrupted' (queries/jobs.sql).
CREATE TABLE api_jobs (
    job_id       VARCHAR   PRIMARY KEY,
    kind         VARCHAR   NOT NULL,   -- build | builds | export
    request      VARCHAR   NOT NULL,   -- JSON: the request's fields
    status       VARCHAR   NOT NULL,   -- queued | running | succeeded | failed | interrupted
    stage        VARCHAR   NOT NULL,
    progress     DOUBLE    NOT NULL,
    created_at   TIMESTAMP NOT NULL,   -- UTC
    started_at   TIMESTAMP,
    finished_at  TIMESTAMP,
    result       VARCHAR,              -- JSON, when succeeded
    error        VARCHAR               -- JSON (problem fields), when failed or interrupted
);

-- name: v12_versions
-- Every change of a store's content is a version: an ingestion run, a build, a
-- definition change, a rollback, a restore. `index-builder versions` lists them;
-- `--as-of-version` reads the data as they stood after one (the newest ingestion
-- run then: data_run_id), and a rollback reverts the data to one. `snapshots` holds
-- the lake's table snapshot ids at that version (Iceberg backend; NULL in DuckDB).
CREATE SEQUENCE version_ids START 1;
CREATE TABLE versions (
    version_id   BIGINT    PRIMARY KEY,
    kind         VARCHAR   NOT NULL,   -- ingest | build | definition | rollback | restore
    created_at   TIMESTAMP NOT NULL,   -- UTC
    data_run_id  BIGINT    NOT NULL,   -- the newest ingestion run whose data is in force
    run_id       BIGINT,               -- ingest / rollback: the run it recorded
    index_id     VARCHAR,              -- build / definition: the result key or index
    build_version BIGINT,              -- build: the build version stored
    rows         BIGINT,               -- rows it wrote (ingest: accepted, build: days)
    detail       VARCHAR,              -- JSON: what it did
    snapshots    VARCHAR               -- JSON {table: snapshot id} (lake backend)
);
-- The rollback run that undid a run (informational: its rows were moved to the history
-- tables by that rollback; NULL again when a later rollback re-does it).
ALTER TABLE ingest_runs ADD COLUMN rolled_back_by BIGINT;
-- shares_history rows a rollback withdrew (written after its target run): moved here
-- with the rollback that withdrew them, and back unchanged when a later rollback
-- re-does their run, so shares_history is always the facts in force.
CREATE TABLE shares_withdrawn (
    symbol               VARCHAR   NOT NULL,
    effective_date       DATE      NOT NULL,
    shares_outstanding   DOUBLE    NOT NULL,
    known_at             TIMESTAMP NOT NULL,
    source               VARCHAR,
    basis                VARCHAR   NOT NULL,
    run_id               BIGINT    NOT NULL,
    withdrawn_at         TIMESTAMP NOT NULL,
    withdrawn_by_run_id  BIGINT    NOT NULL
);
-- Results of a build as of version V are stored under '<index id>@v<V>': the data as
-- they stood after V (written by its data_run_id and earlier runs), the current rules.
ALTER TABLE index_builds ADD COLUMN as_of_version BIGINT;

-- name: v17_build_engine
-- The engine that computed a build (issue 17): 'numpy' (in process) or 'spark'. Builds
-- stored before this migration were all computed by the NumPy engine.
ALTER TABLE index_builds ADD COLUMN engine VARCHAR DEFAULT 'numpy';
