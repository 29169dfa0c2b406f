"""The one settings object (environment prefix ``INDEX_BUILDER_``)."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal

from limits import parse as parse_rate_limit
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from index_builder.ops.flags import FlagStore


class Settings(BaseSettings):
    """Process-wide configuration, read from the environment and ``.env``.

    Every field can be set as ``INDEX_BUILDER_<FIELD>`` (upper case).
    """

    # every number finite: INDEX_BUILDER_REDIS_TIMEOUT_SECONDS=inf (or nan) is refused
    model_config = SettingsConfigDict(
        env_prefix="INDEX_BUILDER_", env_file=".env", extra="ignore", allow_inf_nan=False
    )

    storage: Literal["duckdb", "iceberg"] = Field(
        default="duckdb",
        description="Storage backend: 'duckdb' (one embedded database file) or 'iceberg' "
        "(Apache Iceberg tables in INDEX_BUILDER_WAREHOUSE; no DuckDB file is created).",
    )
    database: Path = Field(
        default=Path("data/index_builder.duckdb"),
        description="DuckDB database file (created with its folder when missing).",
    )
    warehouse: str = Field(
        default="data/lake",
        description="Iceberg backend: where the tables live, a local folder or "
        "s3://bucket/prefix (AWS_* environment variables, AWS_ENDPOINT_URL included) or "
        "gs://bucket/prefix (GCS file IO, needs gcsfs).",
    )
    catalog_uri: str | None = Field(
        default=None,
        description="Iceberg backend: the SQL catalog (SQLAlchemy URL), e.g. "
        "postgresql+psycopg2://user@host/db in production (password from the URL or "
        "PGPASSWORD, never logged); default: a SQLite file catalog.db in a local "
        "warehouse folder (next to the DuckDB database for an object-store warehouse).",
    )
    lake_namespace: str = Field(
        default="index_builder",
        pattern=r"^[a-z][a-z0-9_]{0,62}$",
        description="Iceberg backend: the catalog namespace holding this store's tables.",
    )
    lake_lease_seconds: float = Field(
        default=60.0,
        ge=5,
        le=3600,
        description="Iceberg backend: how long the writer lease lasts without renewal "
        "(a crashed writer's lease expires after it; a live one renews it).",
    )
    lake_wait_seconds: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="Iceberg backend: how long a write waits for another process's writer "
        "lease before it fails (409 / exit 1).",
    )
    lake_refresh_seconds: float = Field(
        default=0.25,
        ge=0,
        le=3600,
        description="Iceberg backend: how often a reading process looks for a newer "
        "version written by another process (one small catalog query; an API process "
        "looks before answering, so a build is served everywhere within about this long; "
        "0: before every request).",
    )
    s3_endpoint: str | None = Field(
        default=None,
        description="S3 endpoint URL for the warehouse and backups (default: "
        "AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, else AWS itself).",
    )
    s3_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="Connect and read timeout of each object-store request (Iceberg "
        "warehouse, s3:// backups; two attempts): an unreachable store fails reads with "
        "503 after about twice this.",
    )
    calendar: str = Field(
        default="XNYS", description="Exchange calendar (exchange_calendars code) for sessions."
    )
    calendar_start: str = Field(
        default="1990-01-01", description="First date the exchange calendar covers."
    )
    duckdb_threads: int | None = Field(
        default=None, ge=1, description="DuckDB worker threads (default: all cores)."
    )
    duckdb_memory_limit: str | None = Field(
        default=None, description="DuckDB memory limit, e.g. '2GB' (default: DuckDB's own)."
    )
    ingest_memory_limit: str | None = Field(
        default="1GB",
        description="DuckDB memory limit while ingesting; larger inputs spill to disk "
        "next to the database instead of growing the process.",
    )

    api_host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    api_port: int = Field(default=8000, ge=1, le=65535, description="Port the API listens on.")
    redis_url: str | None = Field(
        default=None,
        description="Redis for the response cache, e.g. redis://127.0.0.1:6379/0 "
        "(unset: no cache, every read comes from the database), and with the iceberg store "
        "the job queue of 'index-builder worker' (INDEX_BUILDER_JOB_QUEUE).",
    )
    cache_ttl_seconds: int = Field(default=3600, ge=1, description="Cached response lifetime.")
    http_max_age_seconds: int = Field(
        default=0,
        ge=0,
        le=86400,
        description="Cache-Control max-age of public reads (0: 'no-cache', clients and "
        "proxies revalidate every time with If-None-Match and get 304 when unchanged).",
    )
    redis_timeout_seconds: float = Field(
        default=0.25,
        gt=0,
        description="Timeout of every Redis call (slower counts as down). Under load on a "
        "small machine 50 ms tripped on healthy Redis; 250 ms does not.",
    )
    redis_retry_seconds: float = Field(
        default=5.0, gt=0, description="After a Redis failure, how long to skip it before retrying."
    )
    local_cache_entries: int = Field(
        default=512,
        ge=0,
        description="Responses also kept in process memory in front of Redis (0: off). "
        "Only with Redis configured; keys name a build version, so they never go stale.",
    )
    engine: Literal["numpy", "spark"] = Field(
        default="numpy",
        description="Engine of 'index-builder build' (its --engine): 'numpy' (in process) or "
        "'spark' (one Spark job for every index; needs index-builder[spark] and Java 17+).",
    )
    spark_master: str = Field(
        default="local[*]",
        min_length=1,
        max_length=500,
        pattern=r"^(local(\[(\*|[1-9][0-9]*)\])?|(spark|k8s|mesos)://\S+|yarn)$",
        description="The Spark engine's master: local[*] / local[N] (in this process's JVM), "
        "spark://host:7077, yarn or k8s://https://host:443.",
    )
    spark_driver_memory: str = Field(
        default="2g",
        pattern=r"^[1-9][0-9]*[kmgt]$",
        description="The Spark engine's driver memory (local mode: all of Spark's), e.g. 2g.",
    )
    async_build_days: int = Field(
        default=750,
        ge=1,
        description="POST /build-index runs asynchronously (202) when it has more trading "
        "days than this to compute.",
    )
    build_workers: int = Field(default=1, ge=1, le=8, description="Concurrent index builds.")
    jobs_keep: int = Field(
        default=1000,
        ge=1,
        description="Jobs (builds and exports) kept, in the database, for GET /jobs/{id}: the "
        "newest this many; older finished ones are deleted (with their export files).",
    )
    async_export_days: int = Field(
        default=750,
        ge=1,
        description="POST /export-data runs as a job (202) when its window has more trading "
        "days than this (or with 'async': true).",
    )
    export_dir: Path | None = Field(
        default=None,
        description="Folder of the files of export jobs (default: 'exports' next to the "
        "database file).",
    )
    export_retention_hours: float = Field(
        default=24.0,
        gt=0,
        description="How long the file of an export job can be downloaded; then it is deleted.",
    )
    export_workers: int = Field(default=1, ge=1, le=8, description="Concurrent export jobs.")
    job_queue: Literal["auto", "process", "redis"] = Field(
        default="auto",
        description="Where jobs (builds, exports) run: 'process' (threads of 'index-builder "
        "serve'), 'redis' (a Redis queue run by 'index-builder worker', shared by every API "
        "process; needs INDEX_BUILDER_REDIS_URL and the iceberg store) or 'auto' (redis when "
        "both are set, else process).",
    )
    job_lease_seconds: float = Field(
        default=10.0,
        ge=1,
        le=600,
        description="Redis queue: a running job's worker renews its lease this often / 4; "
        "a job whose worker stays silent this long (killed, lost) becomes 'interrupted' "
        "(POST /jobs/{id}/retry runs it again).",
    )
    api_workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Processes of 'index-builder serve' (--workers): more than 1 needs the "
        "iceberg store and INDEX_BUILDER_REDIS_URL (the duckdb file serves one process).",
    )
    flags: str | None = Field(
        default=None,
        description="Feature flags as a JSON object, e.g. '{\"async_builds\": false}' "
        "(see GET /admin/flags for the names).",
    )
    flags_file: Path | None = Field(
        default=None,
        description="YAML or JSON file of feature flags, over INDEX_BUILDER_FLAGS; re-read "
        "without a restart when it changes.",
    )
    flags_reload_seconds: float = Field(
        default=5.0, ge=0, description="How often the flags file is checked for changes."
    )
    shadow_sample_rate: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="With the shadow_storage feature flag: the fraction of reads (0 to 1) "
        "repeated on the shadow store and compared with the primary's answer (1: every "
        "read; 0: writes only). See docs/operations.md.",
    )

    request_middleware: bool = Field(
        default=True,
        description="Request ids, access lines and request metrics on every request "
        "(off only to measure their cost).",
    )
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto",
        description="Log output: json (one object per line), console (readable), or auto "
        "(serve: console on a terminal, else json; other commands: console).",
    )
    log_level: str = Field(
        default="INFO", description="Lowest level logged: DEBUG, INFO, WARNING or ERROR."
    )
    metrics_dir: Path | None = Field(
        default=None,
        description="Folder shared by the processes of one deployment for multiprocess "
        "Prometheus metrics (PROMETHEUS_MULTIPROC_DIR wins when both are set). Must be "
        "in the environment before the server starts; clear it before starting the fleet.",
    )
    freshness_grace_minutes: int = Field(
        default=120,
        ge=0,
        description="Data is stale when the last trading day stored is older than the latest "
        "exchange session whose close was more than this long ago.",
    )
    health_timeout_seconds: float = Field(
        default=2.0, gt=0, description="Timeout of the storage check of GET /health/ready."
    )

    schedule_offset_minutes: int = Field(
        default=30,
        ge=0,
        description="The daily cycle runs this long after each XNYS session's close "
        "(early closes respected, holidays skipped).",
    )
    schedule_provider: str = Field(
        default="synthetic",
        description="Provider (or fallback chain, e.g. 'polygon,yahoo') of the daily cycle.",
    )
    schedule_universe: Path | None = Field(
        default=None,
        description="Universe file of the daily cycle (one symbol per line, '#' comments); "
        "unset: everything the provider gives.",
    )
    schedule_symbols: int = Field(
        default=3000, ge=1, description="synthetic provider only: securities of the daily cycle."
    )
    schedule_backfill_sessions: int = Field(
        default=30,
        ge=0,
        description="At most this many missing sessions before the latest one are backfilled "
        "by one cycle (an empty database gets only the latest session).",
    )
    schedule_retries: int = Field(
        default=3, ge=0, description="Retries of a failed daily-cycle step before the cycle fails."
    )
    schedule_retry_seconds: float = Field(
        default=60.0,
        ge=0,
        description="Backoff before the first retry of a failed step; doubles every retry.",
    )
    scheduler_enabled: bool = Field(
        default=False,
        description="Run the daily schedule inside 'index-builder serve' (a background "
        "thread that also refreshes the API's caches). DuckDB has one writing process, "
        "so 'index-builder daily' / 'scheduler' only run when no server holds the database.",
    )
    backup_dir: str | None = Field(
        default=None,
        description="Where the daily cycle backs up the store after its build step (a folder "
        "or s3://bucket/prefix, AWS_* environment variables); unset: no scheduled backup.",
    )
    backup_keep: int = Field(
        default=7, ge=1, description="Complete scheduled backups kept in the backup folder."
    )
    # ------------------------------------------------------------- market data providers
    polygon_api_key: SecretStr | None = Field(
        default=None, description="Polygon.io API key (sent as a header, never logged)."
    )
    tiingo_api_key: SecretStr | None = Field(
        default=None, description="Tiingo API token (sent as a header, never logged)."
    )
    provider_timeout_seconds: float = Field(
        default=15.0, gt=0, description="Timeout of every provider HTTP request."
    )
    provider_retries: int = Field(
        default=4,
        ge=0,
        le=10,
        description="Retries of a transient provider error (429, 5xx, timeout, reset).",
    )
    provider_backoff_base_seconds: float = Field(
        default=0.5, ge=0, description="First retry delay; doubles per retry, with jitter."
    )
    provider_backoff_max_seconds: float = Field(
        default=30.0, ge=0, description="Longest retry delay (a longer Retry-After still wins)."
    )
    breaker_failure_threshold: int = Field(
        default=5, ge=1, description="Consecutive provider failures that open its circuit."
    )
    breaker_failure_ratio: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Failure ratio over the last breaker_window calls that opens the circuit.",
    )
    breaker_window: int = Field(
        default=20, ge=1, description="Calls the failure ratio is computed over (all needed)."
    )
    breaker_cooldown_seconds: float = Field(
        default=60.0, ge=0, description="How long a circuit stays open before one probe call."
    )
    yahoo_rate_limit_per_minute: float = Field(
        default=60.0, gt=0, description="Client-side limit of Yahoo Finance requests."
    )
    polygon_rate_limit_per_minute: float = Field(
        default=5.0, gt=0, description="Client-side limit of Polygon requests (free plan: 5)."
    )
    tiingo_rate_limit_per_minute: float = Field(
        default=0.8,
        gt=0,
        description="Client-side limit of Tiingo requests (free plan: 50 per hour).",
    )
    ingest_batch_symbols: int = Field(
        default=50,
        ge=1,
        description="Symbols fetched and stored per ingestion batch (a kill keeps the "
        "batches stored; a re-run fetches only what is missing).",
    )
    polygon_shares_samples: int = Field(
        default=24,
        ge=1,
        description="Most dates per symbol at which Polygon's point-in-time shares "
        "outstanding are fetched (month ends, thinned evenly).",
    )

    @property
    def export_folder(self) -> Path:
        """Where export jobs write their files (``export_dir``, or next to the database)."""
        if self.export_dir is not None:
            return self.export_dir
        return self.database.parent / "exports"

    def feature_flags(self) -> FlagStore:
        """The feature flags these settings describe."""
        return FlagStore(self.flags, self.flags_file, reload_seconds=self.flags_reload_seconds)

    # Protection: rate limits, API keys, request limits (index_builder.ops)
    rate_limit_enabled: bool = Field(default=True, description="Apply the rate limits below.")
    rate_limit_reads: str = Field(
        default="600/minute",
        description="Budget of the GET endpoints per API key (or client address), shared by "
        "every worker through Redis, e.g. '600/minute', '10/second', '1000/hour'.",
    )
    rate_limit_builds: str = Field(
        default="30/minute",
        description="Budget of POST /build-index and the definition changes (POST/DELETE "
        "/indices) per API key or client address.",
    )
    rate_limit_exports: str = Field(
        default="60/minute", description="Budget of POST /export-data per API key or address."
    )
    trusted_proxies: str = Field(
        default="",
        description="Comma-separated addresses or networks (CIDR) of proxies whose "
        "X-Forwarded-For names the client for rate limiting (default: none; the peer "
        "address is the client).",
    )
    api_keys: SecretStr | None = Field(
        default=None,
        description="API keys, comma-separated entries 'name:scope+scope:key' (scopes: "
        "read, build, export, admin; admin implies all).",
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="A secrets file of API keys: one 'name:scope+scope:key' entry per line, "
        "'#' starts a comment.",
    )
    auth_enabled: bool | None = Field(
        default=None,
        description="Require API keys on protected routes (default: true when any key is "
        "configured, false otherwise).",
    )
    reads_require_key: bool = Field(
        default=False, description="Require a key with the 'read' scope on the GET endpoints."
    )
    max_body_bytes: int = Field(
        default=1 << 20, ge=0, description="Largest request body (413 beyond it)."
    )
    max_window_days: int = Field(
        default=7305,
        ge=1,
        description="Longest window (calendar days, both ends included) a request that names "
        "its start_date may ask for (default: 20 years).",
    )
    max_page_size: int = Field(
        default=1000,
        ge=1,
        description="Default and largest 'limit' of GET /index-composition.",
    )
    request_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A GET request not answered within this time gets 504 problem+json (the "
        "work still finishes, and a cached read keeps its answer).",
    )
    auth_failure_limit: str = Field(
        default="10/minute",
        description="Failed API keys allowed per client address (as the rate limits see it) "
        "per window, e.g. '10/minute'; after that every request of the address that sends a "
        "key answers 429 until the window ends. Counted in Redis when configured, else per "
        "process. 'off' disables the throttle.",
    )
    allowed_hosts: str = Field(
        default="*",
        description="Comma-separated host names the Host header may name ('api.example.com', "
        "'*.example.com'); any other answers 400 problem+json. '*' (default): any host.",
    )

    # The HTTP server of 'index-builder serve' (index_builder.api.server)
    server_keep_alive_seconds: int = Field(
        default=5, ge=1, description="An idle keep-alive connection is closed after this long."
    )
    server_header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="A connection whose request line and headers are not complete this long "
        "after it opened (or after the first byte of its next request) is closed (slow "
        "clients; 408 when it sent part of a request).",
    )
    server_max_header_bytes: int = Field(
        default=32768,
        ge=1024,
        description="Largest request line and headers (431 beyond; also h11's largest "
        "incomplete event).",
    )
    server_limit_concurrency: int = Field(
        default=1000,
        ge=0,
        description="Open connections (or requests in progress) beyond which a new request "
        "answers 503 (0: no limit).",
    )
    server_backlog: int = Field(
        default=2048, ge=1, description="Connections the kernel queues before they are accepted."
    )
    server_shutdown_timeout_seconds: int = Field(
        default=20,
        ge=0,
        description="On Ctrl-C or SIGTERM, how long requests in progress may finish before "
        "the server stops anyway.",
    )

    @field_validator("rate_limit_reads", "rate_limit_builds", "rate_limit_exports")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        """Refuse a rate limit string the ``limits`` library cannot parse."""
        try:
            parse_rate_limit(value)
        except ValueError:
            raise ValueError(
                f"not a rate limit: {value!r} (use e.g. '600/minute' or '10 per second')"
            ) from None
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: str) -> str:
        """Refuse entries that are not IP addresses or networks."""
        for entry in (e.strip() for e in value.split(",")):
            if entry:
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise ValueError(f"not an IP address or network: {entry!r}") from None
        return value

    @field_validator("auth_failure_limit")
    @classmethod
    def _auth_failure_limit(cls, value: str) -> str:
        """``off`` or a rate limit string."""
        if value.strip().lower() == "off":
            return "off"
        try:
            parse_rate_limit(value)
        except ValueError:
            raise ValueError(
                f"not a rate limit: {value!r} (use e.g. '10/minute', or 'off')"
            ) from None
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: str) -> str:
        """Host names, '*.domain' patterns, or '*' alone."""
        entries = [e.strip().lower() for e in value.split(",") if e.strip()]
        if not entries:
            raise ValueError("name at least one host, or '*' for any")
        for entry in entries:
            if entry != "*" and ("*" in entry[1:] or (entry[0] == "*" and entry[:2] != "*.")):
                raise ValueError(f"not a host name or '*.domain' pattern: {entry!r}")
        return "*" if "*" in entries else ",".join(entries)

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}")
        return level


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; call ``get_settings.cache_clear()`` in tests)."""
    return Settings()
