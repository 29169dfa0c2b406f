"""``warehouse ddl``: golden files pin every compiled statement of every dialect (set
UPDATE_GOLDEN=1 to write them again after a deliberate change); the statements parse
back in their dialect; the published schemas' DDL runs on DuckDB, PostgreSQL and
fakesnow; options replace the placeholders; --from-lake names the lake's files."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import duckdb
import psycopg2
import pytest
import sqlglot
from sqlglot import exp

from index_builder.settings import get_settings
from index_builder.warehouse.ddl import LAKE_TABLES, DdlOptions, statements
from index_builder.warehouse.views import DIALECTS, VIEW_NAMES

from cli_runner import run
from postgres_server import PostgresServer
from warehouse_fixtures import Warehouse, engine_url

GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = [(d, None) for d in DIALECTS] + [("snowflake", "publish")]


def golden_name(dialect: str, source: str | None) -> str:
    return f"{dialect}-{source}.sql" if source else f"{dialect}.sql"


def sql_only(text: str) -> str:
    """The statements of a DDL text without its comment lines."""
    return "\n".join(ln for ln in text.splitlines() if not ln.startswith("--"))


def ddl(tmp_path: Path, *args: str) -> str:
    code, out, err = run(tmp_path / "unused.duckdb", "warehouse", "ddl", *args)
    assert code == 0, err
    return out


@pytest.mark.parametrize(("dialect", "source"), CASES)
def test_golden_files_pin_every_statement(dialect: str, source: str | None, tmp_path: Path) -> None:
    args = ["--dialect", dialect] + (["--source", source] if source else [])
    text = ddl(tmp_path, *args)
    golden = GOLDEN / golden_name(dialect, source)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(text, encoding="utf-8")
    assert golden.exists(), f"{golden} is missing: run with UPDATE_GOLDEN=1"
    expected = golden.read_text(encoding="utf-8")
    if text != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(True), text.splitlines(True), str(golden), "now"
            )
        )
        pytest.fail(f"{golden.name} differs (UPDATE_GOLDEN=1 to accept):\n{diff}")


@pytest.mark.parametrize(("dialect", "source"), CASES)
def test_views_only_prints_the_golden_views(
    dialect: str, source: str | None, tmp_path: Path
) -> None:
    args = ["--dialect", dialect, "--views-only"] + (["--source", source] if source else [])
    views = sql_only(ddl(tmp_path, *args)).strip().split(";\n")
    assert len(views) == len(VIEW_NAMES)
    golden = (GOLDEN / golden_name(dialect, source)).read_text()
    for view in views:
        assert view.strip().rstrip(";") in golden


def test_every_golden_file_is_a_case() -> None:
    assert sorted(p.name for p in GOLDEN.glob("*.sql")) == sorted(
        golden_name(d, s) for d, s in CASES
    )


@pytest.mark.parametrize(("dialect", "source"), CASES)
def test_tables_and_views_parse_back_in_their_dialect(dialect: str, source: str | None) -> None:
    creates = []
    for st in statements(DdlOptions(dialect, source=source)):  # type: ignore[arg-type]
        tree = sqlglot.parse_one(st.sql, read=dialect)
        if isinstance(tree, exp.Create) and tree.kind in ("TABLE", "VIEW"):
            creates.append((tree.kind, tree.this.name if tree.kind == "VIEW" else None))
    assert [name for kind, name in creates if kind == "VIEW"] == list(VIEW_NAMES)
    assert sum(1 for kind, _ in creates if kind == "TABLE") >= 3


def test_the_duckdb_and_postgres_golden_files_run(tmp_path: Path, postgres: PostgresServer) -> None:
    """Run twice (every statement may run again); the views answer on empty tables."""
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    for _ in range(2):
        con.execute((GOLDEN / "duckdb.sql").read_text())
    for view in VIEW_NAMES:
        assert con.execute(f"SELECT COUNT(*) FROM index_builder.{view}").fetchone() == (0,)
    con.close()
    pg = psycopg2.connect(postgres.create_database("golden"))
    with pg.cursor() as cur:
        for _ in range(2):
            cur.execute((GOLDEN / "postgres.sql").read_text())
        for view in VIEW_NAMES:
            cur.execute(f"SELECT COUNT(*) FROM index_builder.{view}")
            assert cur.fetchone() == (0,)
    pg.commit()
    pg.close()


def test_the_snowflake_publish_golden_runs_on_fakesnow(
    tmp_path: Path, fakesnow_patch: None
) -> None:
    wh = Warehouse("snowflake", engine_url("snowflake", tmp_path, None, "golden"))
    text = (GOLDEN / "snowflake-publish.sql").read_text()
    for tree in sqlglot.parse(text, read="snowflake"):
        if tree is not None:
            wh.execute(tree.sql("snowflake"))
    for view in VIEW_NAMES:
        assert wh.query(f"SELECT COUNT(*) FROM index_builder.{view}") == [(0,)]


def test_options_replace_the_placeholders(tmp_path: Path) -> None:
    bigquery = ddl(
        tmp_path,
        "--dialect",
        "bigquery",
        "--catalog",
        "my-project",
        "--schema",
        "indices",
        "--warehouse",
        "gs://bucket/lake",
        "--connection",
        "my-project.eu.lake",
    )
    assert "CREATE SCHEMA IF NOT EXISTS `my-project`.indices" in bigquery
    assert "WITH CONNECTION `my-project.eu.lake`" in bigquery
    assert "uris = ['gs://bucket/lake/index_builder/index_levels/metadata/" in bigquery
    assert "FROM `my-project`.indices.index_spells AS s" in bigquery
    snowflake = ddl(
        tmp_path,
        "--dialect",
        "snowflake",
        "--warehouse",
        "s3://bucket/lake",
        "--external-volume",
        "lake_volume",
        "--catalog-integration",
        "lake_files",
    )
    assert "EXTERNAL_VOLUME = 'lake_volume'" in snowflake
    assert "METADATA_FILE_PATH = 'index_builder/index_spells/metadata/" in snowflake
    redshift = ddl(
        tmp_path,
        "--dialect",
        "redshift",
        "--glue-database",
        "lake",
        "--iam-role",
        "arn:aws:iam::1:role/r",
        "--region",
        "eu-west-1",
    )
    assert "IAM_ROLE 'arn:aws:iam::1:role/r'" in redshift
    assert "FROM index_builder_lake.index_levels AS l" in redshift
    assert "FROM index_builder.index_holdings" not in redshift  # joined, not FROM
    assert "JOIN index_builder.index_holdings AS h" in redshift
    for text in (bigquery, snowflake, redshift):
        words = sql_only(text).replace("'", " ").split()
        left = {w for w in words if w.startswith("<") and w != "<="}
        assert all("<CURRENT>" in w for w in left), left


def test_from_lake_names_each_current_metadata_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INDEX_BUILDER_STORAGE", "iceberg")
    monkeypatch.setenv("INDEX_BUILDER_WAREHOUSE", str(tmp_path / "lake"))
    try:
        text = ddl(tmp_path, "--dialect", "bigquery", "--from-lake")
    finally:
        get_settings.cache_clear()
    assert "<CURRENT>" not in sql_only(text) and "<WAREHOUSE>" not in sql_only(text)
    uris = [line for line in text.splitlines() if "uris = [" in line]
    assert len(uris) == len(LAKE_TABLES)
    for line in uris:
        path = line.split("uris = ['", 1)[1].split("'", 1)[0].removeprefix("file://")
        assert path.endswith(".metadata.json") and Path(path).is_file(), path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dialect", "oracle"], "--dialect must be one of"),
        (["--dialect", "duckdb", "--source", "lake"], "--source lake: duckdb"),
        (["--dialect", "bigquery", "--source", "publish"], "--source publish"),
        (["--dialect", "postgres", "--source", "files"], "--source must be lake or publish"),
        (["--dialect", "postgres", "--schema", "a-b"], "--schema must be letters"),
        (["--dialect", "bigquery", "--from-lake"], "INDEX_BUILDER_STORAGE=iceberg"),
    ],
)
def test_bad_options_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    code, out, err = run(tmp_path / "x.duckdb", "warehouse", "ddl", *args)
    assert code == 2 and out == ""
    assert message in err
