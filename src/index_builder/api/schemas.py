"""Request and response models of the REST API (they are the OpenAPI document).

Returns are fractions (0.0123 = 1.23%), levels are index points, market caps and
prices are USD, dates are ISO 8601 (YYYY-MM-DD) exchange dates, timestamps are
ISO 8601 in UTC.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from index_builder.engine.definitions import DEFAULT_INDEX_ID, INDEX_ID_PATTERN, IndexDefinition
from index_builder.errors import InvalidInputError
from index_builder.point_in_time import AS_OF_FORMATS, end_of_day, parse_as_of, to_utc

IndexField = Field(
    default=DEFAULT_INDEX_ID,
    pattern=INDEX_ID_PATTERN,
    max_length=63,
    description="Index id (see GET /indices): lower-case letters, digits and '-', at most 63.",
    examples=["ew100"],
)


def _as_of_value(value: object) -> object:
    """A date means the end of that day (UTC); a date-time without an offset is UTC."""
    if isinstance(value, str):
        try:
            return parse_as_of(value)
        except InvalidInputError:
            raise ValueError(f"not a date or timestamp (use {AS_OF_FORMATS})") from None
    if isinstance(value, dt.datetime):
        return to_utc(value)
    if isinstance(value, dt.date):
        return end_of_day(value)
    return value


AsOf = Annotated[dt.datetime, BeforeValidator(_as_of_value)]
"""A point in time, normalised to naive UTC (see :mod:`index_builder.point_in_time`)."""

AS_OF_DESCRIPTION = (
    "Point in time: read (or build) the index as of this moment, from the market data "
    "known then (docs/methodology.md, section 9). ISO 8601 date or date-time; a date "
    "means the end of that day UTC, a date-time without an offset is UTC. Must not be in "
    "the future. Reads need a build as of the same moment (POST /build-index with "
    "`as_of`); without it they answer 404 with the command to run. Default: the current "
    "results."
)
AS_OF_EXAMPLES = ["2024-06-28", "2024-06-28T16:00:00-04:00"]
AsOfField = Field(default=None, description=AS_OF_DESCRIPTION, examples=AS_OF_EXAMPLES)
AsOfEcho = Field(
    default=None,
    description="The as-of moment read, UTC (null: the current results).",
    examples=["2024-06-28T23:59:59.999999Z"],
)
AS_OF_VERSION_DESCRIPTION = (
    "Version id (GET /admin/versions): read (or build) the index from the market data "
    "as they stood right after that version, with the current rules. Reads need a build "
    "as of the same version (POST /build-index with `as_of_version`); without it they "
    "answer 404 with the command to run. An unknown version is 404 naming this field. "
    "Not with `as_of` (400). Default: the current results."
)
AsOfVersionField = Field(default=None, ge=1, description=AS_OF_VERSION_DESCRIPTION, examples=[12])
AsOfVersionEcho = Field(
    default=None,
    description="The version whose data the build read used (null: not a build as of a version).",
    examples=[12],
)


class BuildIndexRequest(BaseModel):
    """Make sure levels exist over [start_date, end_date], computed from the base date."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    index: str = IndexField
    start_date: dt.date | None = Field(
        default=None,
        description="First date the caller needs (must not precede the base date). Levels "
        "are always computed from the definition's base date; the index is never rebased.",
        examples=["2024-01-02"],
    )
    end_date: dt.date | None = Field(
        default=None,
        description="Last date to build (default: the last trading day).",
        examples=["2024-12-31"],
    )
    as_of: AsOf | None = AsOfField
    as_of_version: int | None = AsOfVersionField
    run_async: bool = Field(
        default=False,
        alias="async",
        description="Return 202 with a job at once. Builds larger than the configured size "
        "(INDEX_BUILDER_ASYNC_BUILD_DAYS trading days) are asynchronous anyway.",
    )


class BuildResponse(BaseModel):
    """What a build produced, counted over the requested window."""

    index: str = Field(description="Index id.", examples=["ew100"])
    outcome: Literal["built", "unchanged"] = Field(
        description="`built`: days were written (a full build, new days appended, or a "
        "correction restated); `unchanged`: nothing new to compute, the stored build "
        "answers. A build that fails answers a problem+json instead (422 `build-failed`).",
        examples=["built"],
    )
    mode: Literal["full", "incremental", "restated", "up-to-date"] = Field(
        description="How it was computed: `full` from the base date, `incremental` from "
        "the last rebalance before the first new or changed day, `restated` (a "
        "correction of past data recomputed), `up-to-date` (nothing computed).",
        examples=["incremental"],
    )
    start_date: dt.date = Field(description="First day of the window.", examples=["2024-01-02"])
    end_date: dt.date = Field(description="Last built day of the window.")
    trading_days: int = Field(description="Trading days with a level in the window.")
    rebalances: int = Field(description="Rebalances in the window.")
    changes: int = Field(description="Rebalances in the window whose constituents changed.")
    duration_ms: float = Field(description="Wall time of the request's build, milliseconds.")
    version: int = Field(description="Build version of the index (cache keys include it).")
    warnings: list[str] = Field(
        description="What the build noticed without failing (e.g. a rebalance skipped for "
        "want of eligible securities).",
        examples=[["2024-03-15: no eligible security; rebalance skipped"]],
    )
    as_of: dt.datetime | None = AsOfEcho
    as_of_version: int | None = AsOfVersionEcho


class BuildsRequestBody(BaseModel):
    """Build several indices in one job (each incrementally, through the last trading day)."""

    model_config = ConfigDict(extra="forbid")

    indices: list[Annotated[str, Field(pattern=INDEX_ID_PATTERN, max_length=63)]] | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="Index ids to build (see GET /indices), in this order; duplicates are "
        "built once. Each must exist (404) and be allowed by the feature flags (409). "
        "Default (null or no body): every definition, except those a feature flag "
        "switches off (listed in the result's `skipped`).",
        examples=[["ew100", "ew-tech50"]],
    )


class BuildOutcomeInfo(BaseModel):
    """How the build of one index of a multi-index job ended."""

    index: str = Field(description="Index id.", examples=["ew100"])
    outcome: Literal["built", "unchanged", "failed"] = Field(
        description="`built` (days were written), `unchanged` (nothing new to compute) or "
        "`failed` (`reason` says why; the job's other indices were still built).",
        examples=["built"],
    )
    mode: Literal["full", "incremental", "restated", "up-to-date", "failed"] = Field(
        description="How it was computed (`failed`: not at all).", examples=["incremental"]
    )
    base_date: dt.date | None = Field(
        description="The index's base date (null when it failed).", examples=["2023-01-03"]
    )
    start_date: dt.date | None = Field(
        description="First day written (null when the build failed)."
    )
    end_date: dt.date | None = Field(
        description="Last built day: the index is built through it (null when it failed).",
        examples=["2024-12-31"],
    )
    trading_days: int = Field(description="Trading days written (0: unchanged or failed).")
    rebalances: int = Field(description="Rebalances among the days written.")
    changes: int = Field(description="Composition changes among the days written.")
    version: int | None = Field(
        description="Build version now stored (null when it failed and none is stored)."
    )
    duration_ms: float = Field(description="Time spent on this index, milliseconds.")
    restated_from: dt.date | None = Field(
        description="A correction of past data (`mode` `restated`): the first published day "
        "whose values changed (null otherwise)."
    )
    restated_days: int = Field(
        default=0,
        description="How many published days the correction changed (the earlier days stay "
        "exactly as published; a build as of a moment before it reproduces the previous "
        "publication).",
    )
    warnings: list[str] = Field(description="What the build noticed without failing.")
    reason: str | None = Field(
        description="Why it failed (null unless `failed`).",
        examples=["ew-sector-utilities: no eligible security on the base date 2013-01-02"],
    )
    error_code: str | None = Field(
        description="The problem type code of the failure (e.g. `build-failed`, "
        "`not-found`, `internal-error`); null unless `failed`.",
        examples=["build-failed"],
    )
    as_of: str | None = Field(description="The build's as-of moment (null: the current results).")
    as_of_version: int | None = AsOfVersionEcho


class SkippedIndex(BaseModel):
    """An index left out of a build of every index."""

    index: str = Field(description="Index id.", examples=["ew100-buffer"])
    reason: str = Field(description="Why: the feature flag that switches it off.")


class BuildsResult(BaseModel):
    """The result of a multi-index build job: one outcome per index, and the counts."""

    outcomes: list[BuildOutcomeInfo] = Field(description="One entry per index, in the order built.")
    built: int = Field(description="Indices with outcome `built`.", examples=[3])
    unchanged: int = Field(description="Indices with outcome `unchanged`.", examples=[27])
    failed: int = Field(description="Indices with outcome `failed`.", examples=[1])
    skipped: list[SkippedIndex] = Field(
        description="Indices not built because a feature flag switches them off (only "
        "when every index was asked for)."
    )


class JobAccepted(BaseModel):
    """A build or an export accepted for asynchronous execution."""

    job_id: str = Field(description="Job id.", examples=["7f9c0c1e2d8b4f5a9e3f6b1c2d3e4f50"])
    status: Literal["queued", "running", "succeeded", "failed"] = Field(
        description="Job state when the request was answered."
    )
    status_url: str = Field(
        description="Poll this for progress and the result: a path on this server "
        "(`/jobs/{job_id}`; never built from the request's Host header)."
    )
    joined: bool = Field(
        description="True when an identical build (or export) was already in flight."
    )


class JobError(BaseModel):
    """Why a job failed or was interrupted (problem details fields)."""

    type: str = Field(
        description="Problem type code; `interrupted` (status 503) when the process running "
        "the job stopped before it finished; `cancelled` (status 409) after a cancel.",
        examples=["build-failed", "interrupted", "cancelled"],
    )
    status: int = Field(description="HTTP status the error corresponds to.")
    detail: str = Field(description="What went wrong.")
    field: str | None = Field(default=None, description="The request field at fault.")


class ExportResult(BaseModel):
    """The result of an export job: its file (download it from the job's `download_url`)."""

    index: str = Field(description="Index id.")
    format: Literal["xlsx", "csv", "parquet"] = Field(description="The file's format.")
    start_date: dt.date = Field(description="First day exported.")
    end_date: dt.date = Field(description="Last day exported.")
    as_of: str | None = AsOfEcho
    as_of_version: int | None = AsOfVersionEcho
    build_version: int | None = Field(description="The build the file was read from.")
    rows: dict[str, int] = Field(
        description="Rows per table: performance, compositions, changes.",
        examples=[{"performance": 2520, "compositions": 252000, "changes": 2519}],
    )
    filename: str = Field(
        description="The file's name (in `Content-Disposition`).",
        examples=["ew100_2015-01-02_2024-12-31.xlsx"],
    )
    media_type: str = Field(description="The file's media type.")
    bytes: int = Field(description="The file's size.")
    expires_at: dt.datetime = Field(
        description="When the file is deleted (UTC; INDEX_BUILDER_EXPORT_RETENTION_HOURS "
        "after it was written; sooner when the job is dropped with older jobs)."
    )


class JobStatusResponse(BaseModel):
    """State of a build or export job. Jobs are stored: they outlive a restart of the
    server (the newest INDEX_BUILDER_JOBS_KEEP are kept)."""

    job_id: str = Field(description="Job id.")
    kind: Literal["build", "builds", "export"] = Field(
        description="`build` (POST /build-index), `builds` (POST /builds) or `export` "
        "(POST /export-data)."
    )
    index: str | None = Field(
        description="Index id of a POST /build-index or export job; null for POST /builds."
    )
    indices: list[str] = Field(description="Every index the job builds (or exports).")
    status: Literal["queued", "running", "succeeded", "failed", "interrupted", "cancelled"] = Field(
        description="queued -> running -> succeeded | failed, `cancelled` (POST "
        "/jobs/{job_id}/cancel: a queued job never starts, a running one stops at its "
        "next stage; what a build already stored stays), or `interrupted`: the process "
        "running it stopped or died first (a restart, a killed worker; `error` says so: "
        "POST /jobs/{job_id}/retry runs it again, or submit the request again). A POST "
        "/builds job succeeds even when some of its indices failed (their outcomes say "
        "so); it fails only for what concerns every index (e.g. no market data)."
    )
    stage: str = Field(description="What the build is doing, e.g. 'loading market data'.")
    progress: float = Field(ge=0, le=1, description="Fraction done, 0..1.")
    created_at: dt.datetime = Field(description="When the job was queued (UTC).")
    started_at: dt.datetime | None = Field(default=None, description="When it started (UTC).")
    finished_at: dt.datetime | None = Field(default=None, description="When it ended (UTC).")
    result: BuildResponse | BuildsResult | ExportResult | None = Field(
        default=None,
        description="Set when succeeded: a BuildResponse (POST /build-index), a "
        "BuildsResult (POST /builds) or an ExportResult (POST /export-data).",
    )
    error: JobError | None = Field(default=None, description="Set when failed or interrupted.")
    download_url: str | None = Field(
        default=None,
        description="A succeeded export job's file, until it expires: a path on this "
        "server (`/exports/{job_id}/file`).",
        examples=["/exports/7f9c0c1e2d8b4f5a9e3f6b1c2d3e4f50/file"],
    )
    attempt: int = Field(
        default=1, ge=1, description="1, and one more for every POST /jobs/{job_id}/retry."
    )
    cancel_requested: bool = Field(
        default=False,
        description="A cancel was asked for and the running job has not stopped yet.",
    )


class PerformancePoint(BaseModel):
    """One trading day."""

    date: dt.date = Field(description="Trading day.", examples=["2024-01-02"])
    level: float = Field(description="Index level (points).", examples=[1034.5521])
    daily_return: float = Field(description="Return since the previous trading day, fraction.")
    cumulative_return: float = Field(
        description="Return since the window's first trading day, fraction."
    )
    level_price: float = Field(description="Price return variant's level (points).")
    level_total: float = Field(description="Total return variant's level (points).")
    level_net_total: float = Field(description="Net total return variant's level (points).")


class PerformanceSummary(BaseModel):
    """Window statistics (see docs/methodology.md, section 7). Null when undefined."""

    total_return: float = Field(description="Fraction.", examples=[0.1523])
    annualized_return: float | None = Field(description="Fraction per year (252 days).")
    annualized_volatility: float | None = Field(description="Fraction per sqrt(year).")
    sharpe: float | None = Field(description="Annualised mean return / volatility, rf = 0.")
    max_drawdown: float = Field(description="Largest peak-to-trough fall, negative fraction.")
    best_day: float | None = Field(description="Largest daily return, fraction.")
    worst_day: float | None = Field(description="Smallest daily return, fraction.")
    turnover: float | None = Field(
        description="Average one-way turnover per rebalance, fraction of the index."
    )


class PerformanceResponse(BaseModel):
    """Levels and returns over a window."""

    index: str = Field(description="Index id.", examples=["ew100"])
    return_type: Literal["price", "total", "net_total"] = Field(
        description="The variant of `level`, `daily_return` and `cumulative_return`."
    )
    start_date: dt.date = Field(description="First day of the window.")
    end_date: dt.date = Field(description="Last day of the window (at most the last built).")
    as_of: dt.datetime | None = AsOfEcho
    as_of_version: int | None = AsOfVersionEcho
    data: list[PerformancePoint] = Field(description="One entry per trading day, ascending.")
    summary: PerformanceSummary = Field(description="Statistics over the window.")


class Constituent(BaseModel):
    """A constituent in force after the close of the effective date."""

    rank: int = Field(description="Rank by market cap at the last rebalance (1 = largest).")
    symbol: str = Field(description="Ticker.", examples=["AAPL"])
    name: str | None = Field(description="Security name.")
    sector: str | None = Field(description="GICS sector.", examples=["Information Technology"])
    weight: float = Field(description="Weight after the close, fraction (sums to 1).")
    market_cap: float = Field(description="Market cap, USD (last valid on or before the date).")
    price: float = Field(description="Return price P (adj_close, else close), USD.")
    units: float = Field(description="Notional units q_i held until the next rebalance.")


class CompositionResponse(BaseModel):
    """The composition after the close of a date."""

    index: str = Field(description="Index id.", examples=["ew100"])
    date: dt.date = Field(description="The requested date.")
    effective_date: dt.date = Field(
        description="The trading day used: the requested date or the previous trading day."
    )
    as_of: dt.datetime | None = AsOfEcho
    as_of_version: int | None = AsOfVersionEcho
    total: int = Field(description="Constituents in the composition (all pages).")
    limit: int = Field(description="Page size used.")
    offset: int = Field(description="Constituents skipped before this page.")
    constituents: list[Constituent] = Field(description="Constituents of the page, by rank.")


class AnnouncedConstituent(BaseModel):
    """One constituent of an announced composition."""

    rank: int = Field(description="Rank at the reference date (1 = largest).")
    symbol: str = Field(description="Ticker.")
    name: str | None = Field(default=None, description="Security name.")
    sector: str | None = Field(default=None, description="GICS sector.")
    weight: float = Field(description="Target weight when it takes effect (fraction).")
    current_weight: float = Field(
        description="Weight in the composition in force after the last close (0: entering)."
    )
    market_cap: float = Field(description="The security's own market cap on the reference date.")


class AnnouncementResponse(BaseModel):
    """The pro-forma composition: the latest selection made, not yet in force (with
    several in flight, the index once every announced change is in force)."""

    index: str = Field(description="Index id.", examples=["mcap50-ucits"])
    reference_date: dt.date = Field(description="Date whose data selected and weighted it.")
    effective_date: dt.date | None = Field(
        description="Session at whose close it takes effect (on the XNYS calendar, assuming "
        "every session trades); null beyond the calendar."
    )
    sessions_ahead: int = Field(description="Sessions after the last built close until then.")
    last_close: dt.date = Field(description="Last built trading day (the weights in force).")
    expected_turnover: float = Field(
        description="Expected one-way turnover: half the sum of |target - current| weights."
    )
    entered: list[str] = Field(description="Symbols entering, sorted.")
    exited: list[str] = Field(description="Symbols leaving, sorted.")
    pending_selections: int = Field(
        description="Selections made but not yet in force after the last close, this one "
        "included (a daily index with effective_lag 2 has 2: the earlier one takes effect "
        "first)."
    )
    constituents: list[AnnouncedConstituent] = Field(description="Constituents by rank.")


class ChangeEntry(BaseModel):
    """Constituents that entered and exited at one rebalance."""

    date: dt.date = Field(
        description="Effective date of the rebalance (the change is in force after its close)."
    )
    entered: list[str] = Field(description="Symbols that entered, sorted.")
    exited: list[str] = Field(description="Symbols that exited, sorted.")


class ChangesResponse(BaseModel):
    """Composition changes within a window."""

    index: str = Field(description="Index id.", examples=["ew100"])
    start_date: dt.date = Field(description="First day of the window.")
    end_date: dt.date = Field(description="Last day of the window.")
    as_of: dt.datetime | None = AsOfEcho
    as_of_version: int | None = AsOfVersionEcho
    changes: list[ChangeEntry] = Field(description="One entry per changing rebalance.")


class IndexBuildInfo(BaseModel):
    """The last successful build of an index."""

    version: int = Field(description="Build version (never reused).")
    base_date: dt.date = Field(description="Base date (level = base value).")
    built_through: dt.date = Field(description="Last built trading day.")
    built_at: dt.datetime = Field(description="When the build finished.")
    as_of: dt.datetime | None = Field(
        default=None,
        description="The build's as-of moment, UTC (null: the current results).",
        examples=["2024-06-28T23:59:59.999999Z"],
    )
    as_of_version: int | None = AsOfVersionEcho
    data_waiting_from: dt.date | None = Field(
        default=None,
        description="First trading day of market data newer than this build (new days or "
        "corrections), which waits for the next build; every read answers from this "
        "published build until then. Null: up to date.",
    )


class IndexInfo(BaseModel):
    """A definition with its built-in flag and build state."""

    definition: IndexDefinition = Field(description="The index rules.")
    builtin: bool = Field(description="Built-in indices cannot be changed or removed.")
    build: IndexBuildInfo | None = Field(description="Last build; null when never built.")
    as_of_builds: list[IndexBuildInfo] = Field(
        default_factory=list,
        description="Builds as of past moments (read them with `as_of`), by moment, then "
        "builds as of versions (read them with `as_of_version`), by version.",
    )


class ExportRequest(BaseModel):
    """Download an index's summary, performance, compositions and changes."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    index: str = IndexField
    start_date: dt.date | None = Field(default=None, description="Default: the base date.")
    end_date: dt.date | None = Field(default=None, description="Default: the last built day.")
    format: Literal["xlsx", "csv", "parquet"] = Field(
        default="xlsx", description="xlsx workbook, or a zip of csv / parquet tables."
    )
    as_of: AsOf | None = AsOfField
    as_of_version: int | None = AsOfVersionField
    run_async: bool = Field(
        default=False,
        alias="async",
        description="Return 202 with an export job at once (download the file from the "
        "job's `download_url`). Windows longer than INDEX_BUILDER_ASYNC_EXPORT_DAYS "
        "trading days are exported as a job anyway.",
    )


class FlagInfo(BaseModel):
    """One feature flag."""

    name: str = Field(description="Flag name.", examples=["async_builds"])
    value: bool | int | float | str = Field(description="Value in force.")
    default: bool | int | float | str = Field(description="Default value.")
    type: str = Field(description="Value type.", examples=["bool"])
    source: str = Field(description="Where the value comes from: default, env or file.")
    description: str | None = Field(default=None, description="What the flag switches.")


class FlagsResponse(BaseModel):
    """The feature flags in force in the answering process."""

    status: str = Field(description="ok, or degraded while the flags file is invalid.")
    file: str | None = Field(description="The flags file (INDEX_BUILDER_FLAGS_FILE), if any.")
    loaded_at: str | None = Field(description="When the flags were last (re)loaded, UTC.")
    error: str | None = Field(default=None, description="Why the flags file was not applied.")
    flags: list[FlagInfo] = Field(description="Every flag.")


class ProviderCapabilitiesInfo(BaseModel):
    """What a provider can give."""

    prices: bool = Field(description="Daily bars (raw close and volume).")
    adjusted_prices: bool = Field(description="The provider offers adjusted closes (not stored).")
    splits: bool = Field(description="Splits (new shares per old, on the effective date).")
    dividends: bool = Field(description="Cash dividends per share on the ex date.")
    shares_outstanding_history: bool = Field(
        description="Shares outstanding as a point-in-time history."
    )
    listings: bool = Field(description="A listing endpoint (the universe of listed stocks).")


class ProviderInfo(BaseModel):
    """One market data provider."""

    name: str = Field(description="Provider name, as given to --provider (chains: a,b).")
    capabilities: ProviderCapabilitiesInfo
    rate_limit_per_minute: float | None = Field(
        description="Client-side request limit in force (null: local, no limit)."
    )
    auth: str = Field(description="How it authenticates.")
    needs_api_key: bool = Field(description="Whether it needs an API key.")
    network: bool = Field(description="Whether it fetches over the network.")
    configured: bool = Field(description="Usable now (its API key is set when it needs one).")
    api_key_variable: str | None = Field(description="Environment variable of its API key.")


class ProvidersResponse(BaseModel):
    """Every market data provider."""

    providers: list[ProviderInfo] = Field(description="Providers sorted by name.")


class VersionItem(BaseModel):
    """One version of the store's content: every change is one."""

    version_id: int = Field(description="Version id (ascending with time).", examples=[12])
    kind: Literal["ingest", "build", "definition", "rollback", "restore"] = Field(
        description="What changed: an ingestion run (succeeded or partial), a build stored, "
        "a definition added, replaced or removed, a rollback of the data, a restore."
    )
    created_at: dt.datetime = Field(description="When, UTC.")
    data_run_id: int = Field(
        description="The newest ingestion run whose data are in force after the change: "
        "`as_of_version` reads the data written by it and the earlier runs."
    )
    run_id: int | None = Field(description="ingest / rollback: the run recorded.")
    index_id: str | None = Field(description="build: the result key stored; definition: the index.")
    build_version: int | None = Field(description="build: the build version stored.")
    rows: int | None = Field(
        description="ingest: rows accepted; build: level rows written; rollback: rows restored."
    )
    detail: dict[str, Any] = Field(description="What the change did (depends on `kind`).")
    snapshots: dict[str, int] | None = Field(
        description="The lake's table snapshot ids at this version (null with DuckDB)."
    )


class VersionsResponse(BaseModel):
    """Versions of the store, newest first."""

    versions: list[VersionItem] = Field(description="Newest first.")


class RollbackRequest(BaseModel):
    """Roll the market data back to their state right after a version."""

    model_config = ConfigDict(extra="forbid")

    to_version: int = Field(ge=1, description="Version id (GET /admin/versions).", examples=[12])
    build: bool = Field(
        default=True,
        description="Rebuild every index whose current build saw the undone data (restated "
        "from the first changed day); false: they restate at their next build.",
    )


class RollbackResponse(BaseModel):
    """What a rollback did."""

    target_version: int = Field(description="The version rolled back to.")
    target_run: int = Field(description="Its data_run_id: the run whose data are in force.")
    nothing_to_undo: bool = Field(
        description="True when the data in force were already those of the version: "
        "nothing was changed or recorded."
    )
    run_id: int | None = Field(description="The rollback's own ingestion run.")
    version_id: int | None = Field(description="The version recording the rollback.")
    prices_restored: int = Field(description="Price rows in force then, current again.")
    prices_withdrawn: int = Field(description="Price rows written since, moved to the history.")
    securities_restored: int
    securities_withdrawn: int
    shares_restored: int = Field(description="Share counts of shares_history brought back.")
    shares_withdrawn: int = Field(description="Share counts withdrawn from shares_history.")
    runs_undone: list[int] = Field(description="Ingestion runs now marked rolled back.")
    runs_redone: list[int] = Field(
        description="Runs an earlier rollback had undone whose data are in force again."
    )
    builds: list[BuildOutcomeInfo] = Field(description="The rebuilt indices' outcomes.")
    skipped: list[SkippedIndex] = Field(
        description="Indices to rebuild that a feature flag switches off (not rebuilt)."
    )
    message: str = Field(description="What happened, in one line.")
