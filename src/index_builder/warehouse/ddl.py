"""What registers the lake's tables in a warehouse and creates the analytics views
(``index-builder warehouse ddl``).

Two sources of tables:

* ``lake`` (BigQuery, Snowflake, Redshift): the Iceberg lake's tables are registered
  where they lie: BigLake Iceberg external tables (BigQuery), externally managed
  Iceberg tables (Snowflake, object-store catalog integration), an external schema
  over the Glue Data Catalog (Redshift Spectrum). The three tables only the engine
  computes (``index_changes``, ``index_holdings``, ``index_constituent_prices``) are
  plain tables that ``index-builder warehouse publish`` fills.
* ``publish`` (PostgreSQL, DuckDB; Snowflake too): plain tables for every published
  table, filled by ``index-builder warehouse publish``.

Values the user must supply and did not are printed as ``<PLACEHOLDER>`` text.
Every statement's identifiers and strings are quoted by sqlglot for the dialect.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlglot import exp

from index_builder.errors import InvalidInputError
from index_builder.warehouse.tables import TABLES, WarehouseTable
from index_builder.warehouse.views import DIALECTS, VIEW_NAMES, compile_views

Source = Literal["lake", "publish"]

LAKE_DIALECTS = ("bigquery", "snowflake", "redshift")
"""Dialects whose default source is the lake (registered where it lies)."""

LAKE_TABLES = (
    "index_definitions",
    "index_builds",
    "index_levels",
    "index_spells",
    "index_announcements",
    "securities",
    "prices",
)
"""The lake tables a warehouse registers (the views read three of them)."""

ENGINE_TABLES = tuple(t for t in TABLES if not t.in_lake)
"""Tables only ``warehouse publish`` fills (the engine computes them)."""

DEFAULT_SCHEMA = "index_builder"
LAKE_NAMESPACE = "index_builder"


@dataclass(frozen=True)
class DdlOptions:
    """What ``warehouse ddl`` is asked for. ``None`` prints a placeholder."""

    dialect: str
    schema: str = DEFAULT_SCHEMA
    source: Source | None = None  # default: lake for BigQuery/Snowflake/Redshift
    catalog: str | None = None  # BigQuery project / Snowflake database
    warehouse: str | None = None  # the lake's location (s3://..., gs://...)
    lake_schema: str | None = None  # Redshift: the external schema (default <schema>_lake)
    connection: str | None = None  # BigQuery: project.region.connection
    external_volume: str | None = None  # Snowflake
    catalog_integration: str | None = None  # Snowflake
    glue_database: str | None = None  # Redshift
    iam_role: str | None = None  # Redshift
    region: str | None = None  # Redshift
    metadata: Mapping[str, str] = field(default_factory=dict)  # table -> metadata.json
    views_only: bool = False  # only the CREATE OR REPLACE VIEW statements

    @property
    def resolved_source(self) -> Source:
        """The source of the tables: the one asked for or the dialect's default."""
        if self.source is not None:
            return self.source
        return "lake" if self.dialect in LAKE_DIALECTS else "publish"


@dataclass(frozen=True)
class Statement:
    """One statement of the DDL and the comment lines printed above it."""

    sql: str
    comment: tuple[str, ...] = ()


def check_options(options: DdlOptions) -> None:
    """Exit-2 errors for a dialect or source the DDL cannot serve."""
    if options.dialect not in DIALECTS:
        raise InvalidInputError(
            f"--dialect must be one of {', '.join(DIALECTS)}, got {options.dialect!r}",
            field="dialect",
        )
    if options.source not in (None, "lake", "publish"):
        raise InvalidInputError(
            f"--source must be lake or publish, got {options.source!r}", field="source"
        )
    source = options.resolved_source
    if source == "lake" and options.dialect not in LAKE_DIALECTS:
        raise InvalidInputError(
            f"--source lake: {options.dialect} does not register Iceberg tables here; use "
            f"{', '.join(LAKE_DIALECTS)}, or --source publish (tables 'warehouse publish' fills)",
            field="source",
        )
    if source == "publish" and options.dialect not in ("postgres", "duckdb", "snowflake"):
        raise InvalidInputError(
            f"--source publish: 'warehouse publish' writes to postgres, duckdb and snowflake, "
            f"not {options.dialect}",
            field="source",
        )
    for name, value in (("--schema", options.schema), ("--lake-schema", options.lake_schema)):
        if value is not None and not value.replace("_", "").isalnum():
            raise InvalidInputError(
                f"{name} must be letters, digits and underscores, got {value!r}",
                field=name.strip("-").replace("-", "_"),
            )


def statements(options: DdlOptions) -> list[Statement]:
    """Every statement of the DDL, in the order to run them."""
    check_options(options)
    if options.views_only:
        lake_schema = options.lake_schema or f"{options.schema}_lake"
        lake = {t: lake_schema for t in LAKE_TABLES}
        redshift_lake = options.dialect == "redshift" and options.resolved_source == "lake"
        return _views(
            options.dialect, options.schema, lake if redshift_lake else {}, options.catalog
        )
    if options.resolved_source == "publish":
        return publish_statements(options.dialect, options.schema, options.catalog)
    return {
        "bigquery": _bigquery,
        "snowflake": _snowflake,
        "redshift": _redshift,
    }[options.dialect](options)


def render(options: DdlOptions) -> str:
    """The DDL as one SQL text: a header, then each statement with its comment."""
    check_options(options)
    lines = [f"-- {line}" if line else "--" for line in _header(options)]
    parts = ["\n".join(lines)]
    for st in statements(options):
        comment = "\n".join(f"-- {c}" for c in st.comment)
        parts.append(f"{comment}\n{st.sql};" if comment else f"{st.sql};")
    return "\n\n".join(parts) + "\n"


def publish_statements(dialect: str, schema: str, catalog: str | None = None) -> list[Statement]:
    """The schema, every published table (if missing) and the views: what ``warehouse
    publish`` runs before it merges (each statement may run again)."""
    out = [Statement(_create_schema(dialect, schema, catalog))]
    for table in TABLES:
        out.append(Statement(create_table(table, dialect, schema, catalog), (table.doc,)))
    out.extend(_views(dialect, schema, {}, catalog))
    return out


def create_table(
    table: WarehouseTable,
    dialect: str,
    schema: str,
    catalog: str | None = None,
    name: str | None = None,
) -> str:
    """``CREATE TABLE IF NOT EXISTS`` of a warehouse table (``name``: another name,
    such as a staging table's), its key as primary key where the dialect takes one."""
    columns: list[exp.Expression] = []
    for column in table.columns:
        constraints = []
        if not column.nullable:
            constraints.append(exp.ColumnConstraint(kind=exp.NotNullColumnConstraint()))
        columns.append(
            exp.ColumnDef(
                this=exp.to_identifier(column.name),
                kind=exp.DataType.build(column.type),
                constraints=constraints,
            )
        )
    if dialect != "bigquery":  # BigQuery takes only unenforced keys
        columns.append(exp.PrimaryKey(expressions=[exp.to_identifier(k) for k in table.keys]))
    target = exp.Table(
        this=exp.to_identifier(name or table.name),
        db=exp.to_identifier(schema),
        catalog=exp.to_identifier(catalog) if catalog else None,
    )
    create = exp.Create(
        kind="TABLE", exists=True, this=exp.Schema(this=target, expressions=columns)
    )
    return create.sql(dialect=dialect, pretty=True)


def _create_schema(dialect: str, schema: str, catalog: str | None) -> str:
    target = exp.Table(
        this=exp.to_identifier(schema), db=exp.to_identifier(catalog) if catalog else None
    )
    return exp.Create(kind="SCHEMA", exists=True, this=target).sql(dialect=dialect)


def _views(
    dialect: str, schema: str, table_schemas: Mapping[str, str], catalog: str | None
) -> list[Statement]:
    return [
        Statement(sql, (f"view {view.name}: {view.doc}",))
        for view, sql in compile_views(dialect, schema, table_schemas, catalog)
    ]


def _engine_tables(options: DdlOptions) -> list[Statement]:
    note = "filled by 'index-builder warehouse publish' (the engine computes it)"
    return [
        Statement(
            create_table(t, options.dialect, options.schema, options.catalog),
            (f"{t.doc}", note),
        )
        for t in ENGINE_TABLES
    ]


def _placeholder(value: str | None, text: str) -> str:
    return value if value else f"<{text}>"


def _metadata_file(options: DdlOptions, table: str) -> str:
    """The table's current metadata file: the one given (``--from-lake``), else a
    placeholder under the warehouse."""
    if table in options.metadata:
        return options.metadata[table]
    warehouse = _placeholder(options.warehouse, "WAREHOUSE").rstrip("/")
    return f"{warehouse}/{LAKE_NAMESPACE}/{table}/metadata/<CURRENT>.metadata.json"


def _string(value: str, dialect: str) -> str:
    return exp.Literal.string(value).sql(dialect=dialect)


def _table_name(dialect: str, schema: str, table: str, catalog: str | None) -> str:
    return exp.Table(
        this=exp.to_identifier(table),
        db=exp.to_identifier(schema),
        catalog=exp.to_identifier(catalog) if catalog else None,
    ).sql(dialect=dialect)


def _bigquery(options: DdlOptions) -> list[Statement]:
    d, schema, project = "bigquery", options.schema, options.catalog
    connection = exp.to_identifier(
        _placeholder(options.connection, "PROJECT.REGION.CONNECTION"), quoted=True
    ).sql(dialect=d)
    out = [Statement(_create_schema(d, schema, project))]
    for table in LAKE_TABLES:
        uri = _string(_metadata_file(options, table), d)
        sql = (
            f"CREATE OR REPLACE EXTERNAL TABLE {_table_name(d, schema, table, project)}\n"
            f"WITH CONNECTION {connection}\n"
            f"OPTIONS (format = 'ICEBERG', uris = [{uri}])"
        )
        out.append(Statement(sql, (f"lake table {table} (BigLake Iceberg table)",)))
    return out + _engine_tables(options) + _views(d, schema, {}, project)


def _snowflake(options: DdlOptions) -> list[Statement]:
    d, schema, database = "snowflake", options.schema, options.catalog
    integration = _placeholder(options.catalog_integration, "CATALOG_INTEGRATION")
    volume = _placeholder(options.external_volume, "EXTERNAL_VOLUME")
    out = [
        Statement(
            "CREATE CATALOG INTEGRATION IF NOT EXISTS "
            + exp.to_identifier(integration).sql(dialect=d)
            + "\n  CATALOG_SOURCE = OBJECT_STORE\n  TABLE_FORMAT = ICEBERG\n  ENABLED = TRUE",
            (
                "the lake's metadata files are read where they lie (object-store catalog);",
                f"the external volume {volume} must point at the warehouse "
                f"{_placeholder(options.warehouse, 'WAREHOUSE')}",
                "(CREATE EXTERNAL VOLUME ... STORAGE_LOCATIONS = ((... STORAGE_BASE_URL = "
                "'<WAREHOUSE>/')))",
            ),
        ),
        Statement(_create_schema(d, schema, database)),
    ]
    for table in LAKE_TABLES:
        path = _snowflake_path(options, table)
        sql = (
            f"CREATE OR REPLACE ICEBERG TABLE {_table_name(d, schema, table, database)}\n"
            f"  EXTERNAL_VOLUME = {_string(volume, d)}\n"
            f"  CATALOG = {_string(integration, d)}\n"
            f"  METADATA_FILE_PATH = {_string(path, d)}"
        )
        out.append(Statement(sql, (f"lake table {table} (externally managed Iceberg table)",)))
    return out + _engine_tables(options) + _views(d, schema, {}, database)


def _snowflake_path(options: DdlOptions, table: str) -> str:
    """METADATA_FILE_PATH: relative to the external volume's base (the warehouse)."""
    full = _metadata_file(options, table)
    warehouse = _placeholder(options.warehouse, "WAREHOUSE").rstrip("/") + "/"
    return full[len(warehouse) :] if full.startswith(warehouse) else full


def _redshift(options: DdlOptions) -> list[Statement]:
    d, schema = "redshift", options.schema
    lake_schema = options.lake_schema or f"{schema}_lake"
    glue = _placeholder(options.glue_database, "GLUE_DATABASE")
    register = [
        "the Glue database must hold the lake's Iceberg tables, each registered once with",
        "its current metadata file, e.g. with pyiceberg's Glue catalog:",
    ]
    register += [
        f"  register_table(('{glue}', '{t}'), '{_metadata_file(options, t)}')" for t in LAKE_TABLES
    ]
    sql = (
        f"CREATE EXTERNAL SCHEMA IF NOT EXISTS {exp.to_identifier(lake_schema).sql(dialect=d)}\n"
        f"FROM DATA CATALOG\n"
        f"DATABASE {_string(glue, d)}\n"
        f"IAM_ROLE {_string(_placeholder(options.iam_role, 'IAM_ROLE_ARN'), d)}\n"
        f"REGION {_string(_placeholder(options.region, 'REGION'), d)}"
    )
    out = [
        Statement(sql, ("lake tables (Redshift Spectrum over the Glue Data Catalog);", *register)),
        Statement(_create_schema(d, schema, None)),
    ]
    lake = {t: lake_schema for t in LAKE_TABLES}
    return out + _engine_tables(options) + _views(d, schema, lake, None)


def _header(options: DdlOptions) -> list[str]:
    source = options.resolved_source
    lines = [
        f"index-builder warehouse ddl --dialect {options.dialect} (source: {source})",
        "",
    ]
    if options.views_only:
        lines += [
            "The analytics views only, over the tables of the full DDL (same options).",
        ]
    elif source == "publish":
        lines += [
            "Plain tables that 'index-builder warehouse publish --target URL' fills (merging",
            "on their keys), and the analytics views over them. Every statement may run again.",
        ]
    else:
        lines += [
            "Registers the Iceberg lake's tables where they lie, creates the tables only the",
            "engine computes (filled by 'index-builder warehouse publish'), and the views.",
            "Each lake commit writes a new metadata file: run this again with --from-lake",
            "(or the new paths) to point the tables at the newest snapshot.",
            "Placeholders to replace: every <...> text (<CURRENT>: the newest metadata file).",
        ]
    lines += ["", "Views (compiled from one SQL text with sqlglot):"]
    lines += [f"  {v}" for v in VIEW_NAMES]
    return lines


def lake_metadata(store: Any) -> tuple[str, dict[str, str]]:
    """The warehouse location of an Iceberg store and the current metadata file of each
    lake table the DDL registers (``--from-lake``)."""
    location = store.location
    metadata = {}
    for table in LAKE_TABLES:
        loaded = store.catalog.load_table((location.namespace, table))
        metadata[table] = str(loaded.metadata_location)
    return str(location.warehouse), metadata
