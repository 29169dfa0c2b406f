"""What the warehouse tests share: the indices, the API's answers, a published
warehouse to query on any engine."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from index_builder.services.queries import IndexReader
from index_builder.storage.duckdb.store import DuckDBStore
from index_builder.warehouse.publish import PublishReport, parse_target, publish

from postgres_server import PostgresServer

# ew100 and ew-tech50: daily rebalances (every day a new period); mcap50-ucits: capped
# market-cap weights, a quarterly selection effective 5 sessions later, so weights
# drift between rebalances (the 80 sessions from 2023-01-03 reach past April 7).
INDICES = ("ew100", "ew-tech50", "mcap50-ucits")
ENGINES = ("duckdb", "postgres", "snowflake")
SCHEMA = "analytics"


@dataclass
class Answers:
    """What the API's reads answer for the market (services.queries.IndexReader: the
    code behind GET /index-performance, /index-composition, /composition-changes)."""

    performance: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    compositions: dict[str, dict[dt.date, list[dict[str, Any]]]] = field(default_factory=dict)
    changes: dict[str, list[tuple[dt.date, str, str]]] = field(default_factory=dict)
    headline: dict[str, str] = field(default_factory=dict)


class Warehouse:
    """A published warehouse: its target URL, dialect and a way to query it."""

    def __init__(self, engine: str, url: str, schema: str = SCHEMA) -> None:
        self.engine = engine
        self.url = url
        self.schema = schema
        self.target = parse_target(url)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of ``sql``; ``?`` marks a bound parameter (any engine)."""
        if self.engine == "duckdb":
            con = duckdb.connect(str(self.target.params["path"]), read_only=True)
            try:
                return con.execute(sql, list(params)).fetchall()
            finally:
                con.close()
        sql = sql.replace("?", "%s")
        if self.engine == "postgres":
            import psycopg2

            pg = psycopg2.connect(self.target.params["dsn"])
            try:
                with pg.cursor() as cur:
                    cur.execute(sql, tuple(params))
                    return list(cur.fetchall())
            finally:
                pg.close()
        import snowflake.connector

        sf = snowflake.connector.connect(**self.target.params)
        try:
            return list(sf.cursor().execute(sql, tuple(params)).fetchall())  # type: ignore[union-attr]
        finally:
            sf.close()

    def execute(self, sql: str) -> None:
        """Run one statement (no result) and commit it."""
        if self.engine == "duckdb":
            con = duckdb.connect(str(self.target.params["path"]))
            con.execute(sql)
            con.close()
        elif self.engine == "postgres":
            import psycopg2

            pg = psycopg2.connect(self.target.params["dsn"])
            with pg.cursor() as cur:
                cur.execute(sql)
            pg.commit()
            pg.close()
        else:
            import snowflake.connector

            sf = snowflake.connector.connect(**self.target.params)
            sf.cursor().execute(sql)
            sf.close()

    def publish(self, opened: tuple[DuckDBStore, IndexReader], **options: Any) -> PublishReport:
        store, reader = opened
        options.setdefault("schema", self.schema)
        return publish(store, reader, self.target, **options)


def engine_url(engine: str, folder: Path, postgres: PostgresServer | None, name: str) -> str:
    """A new, empty target of ``engine`` called ``name``."""
    if engine == "duckdb":
        return f"duckdb:///{folder / (name + '.duckdb')}"
    if engine == "postgres":
        assert postgres is not None
        return postgres.create_database(name)
    return f"snowflake://tester:secret@localaccount/{name.upper()}?warehouse=TESTING"
