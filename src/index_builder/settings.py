"""The one settings object (environment prefix ``INDEX_BUILDER_``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Process-wide configuration, read from the environment and ``.env``.

    Every field can be set as ``INDEX_BUILDER_<FIELD>`` (upper case).
    """

    model_config = SettingsConfigDict(env_prefix="INDEX_BUILDER_", env_file=".env", extra="ignore")

    database: Path = Field(
        default=Path("data/index_builder.duckdb"),
        description="DuckDB database file (created with its folder when missing).",
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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; call ``get_settings.cache_clear()`` in tests)."""
    return Settings()
