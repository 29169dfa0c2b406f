"""The analytics views, written once (``views.sql``, PostgreSQL syntax) and compiled
for each warehouse dialect with sqlglot.

* ``index_daily_levels``: every built day, every return variant's level, daily and
  cumulative return (what ``GET /index-performance`` answers for the whole history);
* ``index_composition``: the composition after the close of every built day from the
  spells, with weights (``GET /index-composition``);
* ``index_composition_changes``: entries and exits by rebalance from the spells
  (``GET /composition-changes``);
* ``index_sector_weights``: each day's weights summed by sector.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect

DIALECTS = ("bigquery", "snowflake", "redshift", "postgres", "duckdb")
"""The dialects ``index-builder warehouse ddl`` compiles for."""

SOURCE_DIALECT = "postgres"
_MARKER = re.compile(r"^--\s*name:\s*(?P<name>[a-z0-9_]+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class ViewSource:
    """One view as written: its name, what it answers (the comment lines under its
    name marker) and its ``CREATE VIEW`` statement."""

    name: str
    doc: str
    sql: str


@cache
def view_sources() -> tuple[ViewSource, ...]:
    """The views of ``views.sql`` in file order."""
    text = (resources.files("index_builder.warehouse") / "views.sql").read_text("utf-8")
    marks = list(_MARKER.finditer(text))
    views = []
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        body = text[mark.end() : end].strip()
        lines = body.splitlines()
        doc = [ln[2:].strip() for ln in lines if ln.startswith("--")]
        sql = "\n".join(ln for ln in lines if not ln.startswith("--")).strip().rstrip(";")
        views.append(ViewSource(mark.group("name"), " ".join(doc), sql))
    return tuple(views)


VIEW_NAMES = tuple(v.name for v in view_sources())


def compile_view(
    view: ViewSource,
    dialect: str,
    schema: str,
    table_schemas: Mapping[str, str] | None = None,
    catalog: str | None = None,
) -> str:
    """``CREATE OR REPLACE VIEW`` of ``view`` in ``dialect``: the view in ``schema``,
    every table it reads in ``table_schemas[table]`` (default: ``schema``), both in
    ``catalog`` when given (a BigQuery project, a Snowflake database)."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}")
    tree = sqlglot.parse_one(view.sql, read=SOURCE_DIALECT)
    assert isinstance(tree, exp.Create)
    tree.set("replace", True)
    target = tree.this
    assert isinstance(target, exp.Table)
    _qualify(target, schema, catalog)
    ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
    for table in tree.expression.find_all(exp.Table):
        if table.name in ctes or table.args.get("db") is not None:
            continue
        _qualify(table, (table_schemas or {}).get(table.name, schema), catalog)
    # Every ordering is by a NOT NULL column: ask for the target's own default null
    # order, so no dialect spells out (or warns about) a NULLS FIRST/LAST it does not need.
    small = Dialect.get_or_raise(dialect).NULL_ORDERING == "nulls_are_small"
    for ordered in tree.find_all(exp.Ordered):
        ordered.set("nulls_first", small != bool(ordered.args.get("desc")))
    if dialect == "redshift":  # views over an external (Spectrum) schema must be late-binding
        tree.set("no_schema_binding", True)
    return tree.sql(dialect=dialect, pretty=True)


def _qualify(table: exp.Table, schema: str, catalog: str | None) -> None:
    table.set("db", exp.to_identifier(schema))
    if catalog:
        table.set("catalog", exp.to_identifier(catalog))


def compile_views(
    dialect: str,
    schema: str,
    table_schemas: Mapping[str, str] | None = None,
    catalog: str | None = None,
) -> list[tuple[ViewSource, str]]:
    """Every view compiled for ``dialect`` (see :func:`compile_view`), in order."""
    return [(v, compile_view(v, dialect, schema, table_schemas, catalog)) for v in view_sources()]
