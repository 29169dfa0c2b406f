"""``index-builder warehouse publish --target URL``: load the results of a store into a
warehouse schema, incrementally.

Targets: ``duckdb:///PATH`` (SQLAlchemy's form: ``duckdb:////abs/path.duckdb``),
``postgresql://user:password@host:port/database`` (psycopg2; Redshift speaks the same
protocol) and ``snowflake://user:password@account/database?warehouse=W&role=R``
(snowflake-connector-python).

A publish creates what is missing (schema, tables, views: ``warehouse ddl --source
publish``), bulk-loads the rows into staging tables (DuckDB: Arrow; PostgreSQL: COPY;
Snowflake: ``write_pandas``), then merges each table on its keys in one transaction:
rows whose values differ are updated, new keys inserted, keys of the published
indices no longer produced deleted. Running it again on the same store changes
nothing (0 inserted, updated, deleted; the same checksums). An index whose build
(version and definition hash) the target already holds is skipped unless ``full``.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from index_builder.errors import InvalidInputError, StorageError
from index_builder.services.queries import IndexReader
from index_builder.storage.base import Storage
from index_builder.warehouse.ddl import create_table, publish_statements
from index_builder.warehouse.tables import TABLES, WarehouseTable

TARGET_SCHEMES = ("duckdb", "postgresql", "snowflake")
STAGE_PREFIX = "stage_"

_ARROW_TYPES: dict[str, pa.DataType] = {
    "VARCHAR": pa.string(),
    "DOUBLE": pa.float64(),
    "DATE": pa.date32(),
    "BOOLEAN": pa.bool_(),
    "BIGINT": pa.int64(),
    "INTEGER": pa.int32(),
    "TIMESTAMP": pa.timestamp("us"),
}


# ---------------------------------------------------------------------------- targets
@dataclass(frozen=True)
class Target:
    """A parsed ``--target`` URL: the dialect, how to connect, and the URL to show
    (without its password)."""

    dialect: str
    display: str
    params: dict[str, Any]


def parse_target(url: str) -> Target:
    """``duckdb:///PATH``, ``postgresql://...`` or ``snowflake://...``; anything else
    is an exit-2 error naming ``--target``."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0].lower()
    if scheme == "postgres":
        scheme = "postgresql"
    if scheme not in TARGET_SCHEMES:
        raise InvalidInputError(
            f"--target must be a duckdb:///PATH, postgresql://... or snowflake://... URL, "
            f"got {_redact(url)!r}",
            field="target",
        )
    display = _redact(url)
    if scheme == "duckdb":
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if not path:
            raise InvalidInputError(
                f"--target {display}: name the DuckDB file (duckdb:///PATH)", field="target"
            )
        return Target("duckdb", display, {"path": Path(path)})
    if not parts.hostname:
        raise InvalidInputError(f"--target {display}: the URL names no host", field="target")
    if scheme == "postgresql":
        dsn = parts._replace(scheme="postgresql").geturl()
        return Target("postgres", display, {"dsn": dsn})
    database = parts.path.strip("/").split("/")[0]
    if not database or not parts.username:
        raise InvalidInputError(
            f"--target {display}: use snowflake://USER[:PASSWORD]@ACCOUNT/DATABASE"
            "[?warehouse=W&role=R]",
            field="target",
        )
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    params: dict[str, Any] = {
        "account": parts.hostname,
        "user": unquote(parts.username),
        "database": database,
        **({"password": unquote(parts.password)} if parts.password else {}),
        **{k: query[k] for k in ("warehouse", "role", "authenticator") if k in query},
    }
    return Target("snowflake", display, params)


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


class Connection(Protocol):
    """What the merge needs of a target connection."""

    dialect: str

    def execute(self, sql: str) -> None: ...

    def fetch(self, sql: str) -> list[tuple[Any, ...]]: ...

    def load(self, schema: str, table: str, data: pa.Table) -> None: ...

    def begin(self) -> None: ...

    def commit(self) -> None: ...

    def close(self) -> None: ...


class _DuckDB:
    dialect = "duckdb"

    def __init__(self, path: Path) -> None:
        import duckdb

        if not path.parent.is_dir():
            raise InvalidInputError(
                f"--target: the folder of {path} does not exist", field="target"
            )
        self.con = duckdb.connect(str(path))

    def execute(self, sql: str) -> None:
        self.con.execute(sql)

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        return self.con.execute(sql).fetchall()

    def load(self, schema: str, table: str, data: pa.Table) -> None:
        self.con.register("warehouse_rows", data)
        try:
            target = _table_sql(schema, table, "duckdb")
            self.con.execute(f"INSERT INTO {target} SELECT * FROM warehouse_rows")
        finally:
            self.con.unregister("warehouse_rows")

    def begin(self) -> None:
        self.con.execute("BEGIN TRANSACTION")

    def commit(self) -> None:
        self.con.execute("COMMIT")

    def close(self) -> None:
        self.con.close()


class _Postgres:
    dialect = "postgres"

    def __init__(self, dsn: str) -> None:
        import psycopg2

        self.con = psycopg2.connect(dsn, connect_timeout=10)

    def execute(self, sql: str) -> None:
        with self.con.cursor() as cur:
            cur.execute(sql)

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        with self.con.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())

    def load(self, schema: str, table: str, data: pa.Table) -> None:
        """COPY FROM STDIN as CSV (NULL is \\N; floats in Python's shortest round-trip
        form, so every double arrives bit for bit)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        for row in zip(*(data.column(i).to_pylist() for i in range(data.num_columns)), strict=True):
            writer.writerow([_csv(v) for v in row])
        buffer.seek(0)
        columns = ", ".join(exp.to_identifier(c).sql("postgres") for c in data.column_names)
        copy = (
            f"COPY {_table_sql(schema, table, 'postgres')} ({columns}) "
            "FROM STDIN WITH (FORMAT csv, NULL '\\N')"
        )
        with self.con.cursor() as cur:
            cur.copy_expert(copy, buffer)

    def begin(self) -> None:
        """psycopg2 opens a transaction with the first statement."""

    def commit(self) -> None:
        self.con.commit()

    def close(self) -> None:
        self.con.close()


def _csv(value: Any) -> Any:
    if value is None:
        return "\\N"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dt.date):  # a datetime too
        return value.isoformat()
    return value


class _Snowflake:
    dialect = "snowflake"

    def __init__(self, params: dict[str, Any]) -> None:
        import snowflake.connector

        self.database = params["database"]
        self.con = snowflake.connector.connect(**params)

    def execute(self, sql: str) -> None:
        self.con.cursor().execute(sql)

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        return list(self.con.cursor().execute(sql).fetchall())  # type: ignore[union-attr]

    def load(self, schema: str, table: str, data: pa.Table) -> None:
        """One bulk load (``write_pandas``: Parquet files and COPY INTO), never rows
        one by one; unquoted names are upper case in Snowflake."""
        import snowflake.connector.pandas_tools as tools

        frame = data.to_pandas(date_as_object=True)
        frame.columns = [c.upper() for c in frame.columns]
        tools.write_pandas(
            self.con, frame, table.upper(), database=self.database.upper(), schema=schema.upper()
        )

    def begin(self) -> None:
        self.execute("BEGIN TRANSACTION")

    def commit(self) -> None:
        self.execute("COMMIT")

    def close(self) -> None:
        self.con.close()


def connect(target: Target) -> Connection:
    """An open connection to the target; a refused connection is a
    :class:`StorageError` naming the target (without its password)."""
    try:
        if target.dialect == "duckdb":
            return _DuckDB(target.params["path"])
        if target.dialect == "postgres":
            return _Postgres(target.params["dsn"])
        return _Snowflake(target.params)
    except InvalidInputError:
        raise
    except Exception as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise StorageError(f"cannot connect to the warehouse {target.display}: {reason}") from exc


# ---------------------------------------------------------------------------- the rows
def collect(store: Storage, reader: IndexReader, index_ids: Sequence[str]) -> dict[str, pa.Table]:
    """The rows of every warehouse table for ``index_ids`` (their current results),
    one Arrow table each, with the warehouse's column types."""
    wanted = pa.array(list(index_ids), pa.string())
    rows: dict[str, list[dict[str, Any]]] = {t.name: [] for t in TABLES}
    stored: dict[str, pa.Table] = {}
    for name in ("index_levels", "index_spells"):
        whole = store.read_table(name).read_all()
        stored[name] = whole.filter(pc.is_in(whole.column("index_id"), value_set=wanted))
    definitions = {d.id: (d, builtin) for d, builtin in store.list_definitions()}
    for index_id in index_ids:
        definition, builtin = definitions[index_id]
        rows["index_definitions"].append(
            {
                "index_id": index_id,
                "name": definition.name,
                "return_type": definition.return_type,
                "weighting": definition.weighting,
                "rebalance": definition.rebalance,
                "definition": definition.to_json(),
                "builtin": builtin,
            }
        )
        state = store.build_state(index_id)
        assert state is not None  # only built indices are published
        rows["index_builds"].append(
            {
                "index_id": index_id,
                "version": state.version,
                "definition_hash": state.definition_hash,
                "base_date": state.base_date,
                "built_through": state.built_through,
                "data_run_id": state.data_run_id,
                "built_at": state.built_at,
            }
        )
        _, changes = reader.changes(index_id)
        for change in changes:
            for kind, symbols in (("entered", change.entered), ("exited", change.exited)):
                rows["index_changes"].extend(
                    {"index_id": index_id, "date": change.date, "symbol": s, "change_type": kind}
                    for s in symbols
                )
        levels = stored["index_levels"]
        mine = levels.filter(pc.equal(levels.column("index_id"), index_id))
        rebalances = set(mine.filter(mine.column("is_rebalance")).column("date").to_pylist())
        for comp in reader.compositions(index_id):
            day = comp.effective_date
            for row in comp.rows():
                rows["index_constituent_prices"].append(
                    {
                        "index_id": index_id,
                        "date": day,
                        "symbol": row["symbol"],
                        "price": row["price"],
                        "market_cap": row["market_cap"],
                    }
                )
                if day in rebalances:
                    rows["index_holdings"].append(
                        {
                            "index_id": index_id,
                            "effective_date": day,
                            "symbol": row["symbol"],
                            "rank": row["rank"],
                            "weight": row["weight"],
                            "units": row["units"],
                        }
                    )
    out: dict[str, pa.Table] = {}
    for t in TABLES:
        schema = arrow_schema(t)
        if t.name in stored:
            out[t.name] = stored[t.name].select(schema.names).cast(schema)
        elif t.name == "securities":
            whole = store.read_table("securities").read_all()
            out[t.name] = whole.select(schema.names).cast(schema)
        else:
            out[t.name] = pa.Table.from_pylist(rows[t.name], schema=schema)
    return out


def arrow_schema(table: WarehouseTable) -> pa.Schema:
    """The Arrow schema of a warehouse table."""
    return pa.schema([pa.field(c.name, _ARROW_TYPES[c.type]) for c in table.columns])


# ---------------------------------------------------------------------------- merging
@dataclass(frozen=True)
class TableMerge:
    """What a publish did to one table."""

    table: str
    inserted: int
    updated: int
    deleted: int
    rows: int  # in the target afterwards


@dataclass
class PublishReport:
    """The outcome of a publish."""

    target: str
    schema: str
    published: list[str]
    skipped: list[str]
    tables: list[TableMerge] = field(default_factory=list)
    seconds: float = 0.0
    checksums: dict[str, str] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        """Rows inserted, updated or deleted over every table."""
        return sum(t.inserted + t.updated + t.deleted for t in self.tables)


def publish(
    store: Storage,
    reader: IndexReader,
    target: Target,
    *,
    schema: str,
    index_ids: Sequence[str] | None = None,
    full: bool = False,
    checksums: bool = False,
    progress: Callable[[str], None] = lambda _msg: None,
) -> PublishReport:
    """Merge the current results of ``index_ids`` (default: every built index) into
    ``schema`` of the target; see the module docstring."""
    started = time.perf_counter()
    built = {s.index_id: s for s in store.current_build_states()}
    definitions = {d.id for d, _ in store.list_definitions()}
    if index_ids:
        for index_id in index_ids:
            if index_id not in definitions:
                raise InvalidInputError(f"unknown index {index_id!r}", field="index")
            if index_id not in built:
                raise InvalidInputError(
                    f"{index_id} is not built yet: run 'index-builder build --index {index_id}'",
                    field="index",
                )
        wanted = list(dict.fromkeys(index_ids))
    else:
        wanted = sorted(i for i in built if i in definitions)
    _check_same_file(store, target)
    con = connect(target)
    try:
        progress("schema")
        for statement in publish_statements(con.dialect, schema):
            con.execute(statement.sql)
        skipped = [] if full else _unchanged(con, schema, wanted, built)
        ids = [i for i in wanted if i not in skipped]
        progress(f"{len(ids)} indices")
        data = collect(store, reader, ids)
        report = PublishReport(target.display, schema, ids, skipped)
        for t in TABLES:
            stage = STAGE_PREFIX + t.name
            con.execute(_drop(schema, stage, con.dialect))
            con.execute(create_table(t, con.dialect, schema, name=stage))
            if data[t.name].num_rows:
                progress(f"load {t.name}")
                con.load(schema, stage, data[t.name])
        con.begin()
        for t in TABLES:
            progress(f"merge {t.name}")
            report.tables.append(_merge(con, schema, t))
        con.commit()
        for t in TABLES:
            con.execute(_drop(schema, STAGE_PREFIX + t.name, con.dialect))
        if con.dialect == "postgres":  # fresh statistics, or the views' joins plan badly
            for t in TABLES:
                con.execute("ANALYZE " + _table_sql(schema, t.name, con.dialect))
            con.commit()
        if checksums:
            report.checksums = table_checksums(con, schema)
    finally:
        con.close()
    report.seconds = time.perf_counter() - started
    return report


def _check_same_file(store: Storage, target: Target) -> None:
    path = getattr(store, "path", None)
    same = (
        path is not None and Path(target.params.get("path", "")).resolve() == Path(path).resolve()
    )
    if target.dialect == "duckdb" and same:
        raise InvalidInputError(
            "--target names the store's own database file; publish to another file",
            field="target",
        )


def _unchanged(
    con: Connection, schema: str, wanted: Sequence[str], built: dict[str, Any]
) -> list[str]:
    """Indices whose build (version and definition hash) the target already holds."""
    t = exp.to_table("index_builds", db=schema)
    query = exp.select("index_id", "version", "definition_hash").from_(t)
    held = {r[0]: (int(r[1]), r[2]) for r in con.fetch(query.sql(con.dialect))}
    return [i for i in wanted if held.get(i) == (built[i].version, built[i].definition_hash)]


def _merge(con: Connection, schema: str, table: WarehouseTable) -> TableMerge:
    """Update, insert and delete (in that order) so the target holds the staged rows
    for the published indices; each count is taken before its statement runs."""
    d = con.dialect
    target = exp.to_table(table.name, db=schema)
    stage = exp.to_table(STAGE_PREFIX + table.name, db=schema)

    def matches(left: str, right: str) -> exp.Condition:
        return exp.and_(
            *(exp.column(k, table=left).eq(exp.column(k, table=right)) for k in table.keys)
        )

    differs = exp.or_(
        *(
            exp.NullSafeNEQ(this=exp.column(c, table="tgt"), expression=exp.column(c, table="src"))
            for c in table.values
        )
    )
    changed = exp.and_(matches("tgt", "src"), exp.paren(differs))
    update_count = (
        exp.select(exp.Count(this=exp.Star()))
        .from_(target.as_("tgt"))
        .join(stage.as_("src"), on=matches("tgt", "src"))
        .where(exp.paren(differs))
    )
    update = exp.Update(
        this=target.as_("tgt"),
        expressions=[
            exp.EQ(this=exp.column(c), expression=exp.column(c, table="src")) for c in table.values
        ],
        from_=exp.From(this=stage.as_("src")),
        where=exp.Where(this=changed),
    )
    held = exp.Exists(
        this=exp.select(exp.Literal.number(1)).from_(target.as_("tgt")).where(matches("tgt", "src"))
    )
    new_rows = (
        exp.select(*(exp.column(c, table="src") for c in table.column_names))
        .from_(stage.as_("src"))
        .where(exp.Not(this=held))
    )
    insert_count = exp.select(exp.Count(this=exp.Star())).from_(exp.paren(new_rows).as_("n"))
    insert = exp.Insert(
        this=exp.Schema(
            this=target, expressions=[exp.to_identifier(c) for c in table.column_names]
        ),
        expression=new_rows,
    )
    gone = _gone(table, schema)
    delete_count = exp.select(exp.Count(this=exp.Star())).from_(target).where(gone)
    delete = exp.Delete(this=target, where=exp.Where(this=gone))

    updated = _count(con, update_count.sql(d))
    if updated:
        con.execute(update.sql(d))
    inserted = _count(con, insert_count.sql(d))
    if inserted:
        con.execute(insert.sql(d))
    deleted = _count(con, delete_count.sql(d))
    if deleted:
        con.execute(delete.sql(d))
    rows = _count(con, exp.select(exp.Count(this=exp.Star())).from_(target).sql(d))
    return TableMerge(table.name, inserted, updated, deleted, rows)


def _gone(table: WarehouseTable, schema: str) -> exp.Condition:
    """Rows of the target whose key the stage no longer has, among the published
    indices (per-index tables) or all rows (securities)."""
    own = exp.to_table(table.name, db=schema)

    def own_column(name: str) -> exp.Column:
        return exp.column(name, table=own.name, db=schema)

    stage = exp.to_table(STAGE_PREFIX + table.name, db=schema)
    matched = exp.and_(*(exp.column(k, table="src").eq(own_column(k)) for k in table.keys))
    missing = exp.Not(
        this=exp.Exists(
            this=exp.select(exp.Literal.number(1)).from_(stage.as_("src")).where(matched)
        )
    )
    if not table.per_index:
        return missing
    published = exp.select("index_id").from_(
        exp.to_table(STAGE_PREFIX + "index_definitions", db=schema)
    )
    return exp.and_(exp.In(this=own_column("index_id"), query=published.subquery()), missing)


def _count(con: Connection, sql: str) -> int:
    return int(con.fetch(sql)[0][0])


def _drop(schema: str, table: str, dialect: str) -> str:
    return exp.Drop(kind="TABLE", exists=True, tables=[exp.to_table(table, db=schema)]).sql(dialect)


def _table_sql(schema: str, table: str, dialect: str) -> str:
    return exp.to_table(table, db=schema).sql(dialect)


# ---------------------------------------------------------------------------- checksums
def table_checksums(con: Connection, schema: str) -> dict[str, str]:
    """``rows:sha256`` of every warehouse table's rows, read in key order with each
    value in a canonical text form (the same on every engine)."""
    out = {}
    for t in TABLES:
        query = exp.select(*t.column_names).from_(exp.to_table(t.name, db=schema)).order_by(*t.keys)
        rows = con.fetch(query.sql(con.dialect))
        digest = hashlib.sha256()
        for row in rows:
            digest.update(json.dumps([_canonical(v) for v in row]).encode())
            digest.update(b"\n")
        out[t.name] = f"{len(rows)}:{digest.hexdigest()[:16]}"
    return out


def _canonical(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return value
    return repr(float(value))  # Decimal (Snowflake NUMBER with a scale)
