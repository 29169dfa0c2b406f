"""``index-builder``: ingest market data, define and build indices, read results.

Every user error prints one line on stderr and exits with code 2; the same
validation as the API (see :mod:`index_builder.errors`). So does a bad setting
(``INDEX_BUILDER_*`` in the environment or ``.env``). ``--db`` and ``-q`` go
before or after the command; help texts are plain text (no rich markup, so
``[env ...]`` and ``[default: ...]`` show as written).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, get_args

import typer
from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer._click import Command, Context, Parameter  # the click that typer bundles
from typer.core import TyperGroup

from index_builder import __version__
from index_builder.calendar import get_calendar
from index_builder.cli.output import (
    OutputFormat,
    build_line,
    build_summary,
    ingest_record,
    render,
    write_json,
)
from index_builder.engine.definitions import DEFAULT_INDEX_ID, load_definition_file
from index_builder.errors import IndexBuilderError, InvalidInputError, StorageError
from index_builder.export import export_index
from index_builder.ingest.job import run_ingestion
from index_builder.ingest.universe import read_universe_file
from index_builder.ops.logging import configure_logging
from index_builder.point_in_time import AS_OF_FORMATS, check_point, format_as_of, parse_as_of
from index_builder.providers import PROVIDERS, chain_names
from index_builder.providers.file import parse_column_map
from index_builder.providers.listing import describe_providers
from index_builder.providers.synthetic import DEFAULT_DAYS, DEFAULT_SEED, DEFAULT_SYMBOLS
from index_builder.schedule import CycleResult, config_from_settings, run_daily_cycle, run_scheduler
from index_builder.services.builds import BuildResult, IndexBuilder, data_waiting
from index_builder.services.catalog import add_definition, ensure_builtins, remove_definition
from index_builder.services.queries import (
    CHANGES_COLUMNS,
    COMPOSITION_COLUMNS,
    PERFORMANCE_COLUMNS,
    PROFORMA_COLUMNS,
    IndexReader,
)
from index_builder.services.rollback import RollbackOutcome, parse_version_id, rollback
from index_builder.settings import Settings, get_settings
from index_builder.storage.backup import Manifest, restore_backup, verify_backup, write_backup
from index_builder.storage.base import VERSION_KINDS, BuildState, IngestReport, ScheduleStep
from index_builder.storage.duckdb.store import DuckDBStore
from index_builder.storage.factory import (
    describe_settings,
    make_backend,
    make_store,
    other_backend,
    storage_label,
)
from index_builder.storage.failures import storage_failure
from index_builder.storage.migrate import MigrationReport, migrate_store, verify_stores
from index_builder.storage.schema import schema_status

if TYPE_CHECKING:
    from index_builder.storage.iceberg.store import IcebergStore


class _State:
    settings: Settings
    quiet: bool = False


STATE = _State()

DB_HELP = "DuckDB file [env INDEX_BUILDER_DATABASE]."
QUIET_HELP = "No progress output."


def _db_after_command(value: Path | None) -> None:
    """``--db`` given after the command: wins over one given before it."""
    if value is not None and hasattr(STATE, "settings"):
        STATE.settings = STATE.settings.model_copy(update={"database": value})


def _quiet_after_command(value: bool) -> None:
    if value:
        STATE.quiet = True


@cache
def _common_options() -> list[Parameter]:
    """``--db`` and ``-q`` as options of every command (typer builds them from a
    signature; they update ``STATE`` after the top-level callback has run)."""
    proto = typer.Typer(add_completion=False)

    @proto.command()
    def common(
        db: Annotated[
            Path | None,
            typer.Option(
                "--db",
                help=f"{DB_HELP} Also accepted before the command.",
                callback=_db_after_command,
                show_default=False,
            ),
        ] = None,
        quiet: Annotated[
            bool,
            typer.Option("--quiet", "-q", help=QUIET_HELP, callback=_quiet_after_command),
        ] = False,
    ) -> None:  # pragma: no cover - never invoked, only its options are used
        """The options every command accepts."""

    params = [p for p in typer.main.get_command(proto).params if p.name in {"db", "quiet"}]
    for param in params:
        param.expose_value = False  # handled by the callbacks, not passed to the command
    return params


class _Group(TyperGroup):
    """A group whose commands also accept the global ``--db`` and ``-q``, so
    ``index-builder build -q --db x.duckdb`` works like ``index-builder -q --db
    x.duckdb build``."""

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None and not isinstance(cmd, TyperGroup):
            names = {p.name for p in cmd.params}
            cmd.params.extend(p for p in _common_options() if p.name not in names)
        return cmd


app = typer.Typer(
    name="index-builder",
    help="Build, serve and monitor rules-based stock indices.",
    cls=_Group,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich markup would eat "[env ...]" and "[default: ...]"
)
indices_app = typer.Typer(
    help="List, show, add and remove index definitions.",
    cls=_Group,
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(indices_app, name="indices")
lake_app = typer.Typer(
    help="Upkeep of the Iceberg lake (INDEX_BUILDER_STORAGE=iceberg): compact, expire.",
    cls=_Group,
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(lake_app, name="lake")
warehouse_app = typer.Typer(
    help="Warehouses: the DDL that registers the lake and creates the analytics views "
    "(BigQuery, Snowflake, Redshift, PostgreSQL, DuckDB); publish results into one.",
    cls=_Group,
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(warehouse_app, name="warehouse")

err = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 160)

F = TypeVar("F", bound=Callable[..., Any])


def _parse_date(value: str | None, field: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidInputError(
            f"--{field.replace('_', '-')}: {value!r} is not a date (use YYYY-MM-DD)", field=field
        ) from None


def _parse_as_of(value: str | None) -> dt.datetime | None:
    """``--as-of``: a date (the end of that day, UTC) or a timestamp (naive = UTC)."""
    return None if value is None else parse_as_of(value, label="--as-of")


def _parse_point(
    as_of: str | None, as_of_version: str | None
) -> tuple[dt.datetime | None, int | None]:
    """``--as-of`` and ``--as-of-version`` (a version id), at most one of them."""
    moment = _parse_as_of(as_of)
    version = None if as_of_version is None else parse_version_id(as_of_version, "--as-of-version")
    check_point(moment, version, ("--as-of", "--as-of-version"))
    return moment, version


@contextmanager
def _store(*, shadow: bool | None = None) -> Iterator[DuckDBStore]:
    """The store the settings name (with its shadow when the shadow_storage flag is on,
    unless ``shadow`` says otherwise), opened, with the built-in definitions."""
    s = STATE.settings
    store = make_store(s, get_calendar(s.calendar, s.calendar_start), shadow=shadow)
    with store:
        ensure_builtins(store)
        yield store


def _builder(store: DuckDBStore, engine: str | None = None) -> IndexBuilder:
    """The builder over ``store``, on ``engine`` (default: the settings' engine)."""
    s = STATE.settings
    chosen = engine or s.engine
    spark = None
    if chosen == "spark":
        from index_builder.engine.spark.session import SparkOptions

        spark = SparkOptions(master=s.spark_master, driver_memory=s.spark_driver_memory)
    return IndexBuilder(
        store,
        store.calendar,
        s.feature_flags(),
        engine="spark" if chosen == "spark" else "numpy",
        spark=spark,
    )


def _buildable(builder: IndexBuilder, ids: list[str]) -> list[str]:
    """``ids`` without those a feature flag switches off (each named on stderr)."""
    off = builder.switched_off(ids)
    for reason in off.values():
        typer.echo(f"skipped: {reason}", err=True)
    return [i for i in ids if i not in off]


def _fail(exc: IndexBuilderError) -> None:
    # escaped: a message may quote user input such as "[x]", which rich would take as markup
    err.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code)


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except IndexBuilderError as exc:
        _fail(exc)
    except Exception as exc:
        failure = storage_failure(exc)  # the storage's library error (DuckDB, S3, catalog)
        if failure is None:
            raise
        _fail(failure)


@contextmanager
def _progress(label: str) -> Iterator[Callable[[str], None]]:
    """A rich progress display fed with step messages (silent with --quiet)."""
    if STATE.quiet or (not err.is_terminal and not sys.stderr.isatty()):
        yield lambda _msg: None
        return
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task(label, total=None)
        yield lambda msg: progress.update(task, description=f"{label}: {msg}")


DateOpt = Annotated[str | None, typer.Option(help="YYYY-MM-DD")]
IndexOpt = Annotated[str, typer.Option("--index", "-i", help="Index id.")]
FormatOpt = Annotated[
    OutputFormat,
    typer.Option(
        "--format",
        "-f",
        help="table (may be cut to the terminal), or csv / json (every value in full).",
    ),
]
AsOfOpt = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help=f"Point in time: {AS_OF_FORMATS}. A date means the end of that day, "
        "UTC; no offset means UTC.",
        show_default=False,
    ),
]
AsOfVersionOpt = Annotated[
    str | None,
    typer.Option(
        "--as-of-version",
        metavar="VERSION",
        help="Version id (see `index-builder versions`): the data as they stood right "
        "after it, with the current rules (not with --as-of).",
        show_default=False,
    ),
]


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"index-builder {__version__}")
        raise typer.Exit(0)


@app.callback()
def main(
    db: Annotated[
        Path | None,
        typer.Option(
            "--db", help=f"{DB_HELP} Also accepted after the command.", show_default=False
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help=QUIET_HELP)] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Index Builder: ingest market data, build indices, read results."""
    settings = _load_settings()
    STATE.settings = settings.model_copy(update={"database": db}) if db else settings
    STATE.quiet = quiet
    # commands talk to a person: readable logs unless JSON is asked for (serve decides again)
    auto = STATE.settings.log_format == "auto"
    configure_logging(STATE.settings, log_format="console" if auto else None)
    with _errors():
        STATE.settings.feature_flags()  # a malformed INDEX_BUILDER_FLAGS: one line, exit 2


def _load_settings() -> Settings:
    """The settings; a bad value prints one line naming the variable and exits 2."""
    try:
        return get_settings()
    except ValidationError as exc:
        _fail(InvalidInputError(settings_error(exc)))
    except SettingsError as exc:  # a value pydantic-settings cannot even decode
        _fail(InvalidInputError(" ".join(str(exc).split())))
    raise AssertionError("unreachable")  # pragma: no cover


def settings_error(exc: ValidationError) -> str:
    """``INDEX_BUILDER_API_PORT='abc': input should be a valid integer ...`` for each
    bad setting, on one line (secrets are never echoed)."""
    prefix = Settings.model_config.get("env_prefix", "")
    parts = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else ""
        field = Settings.model_fields.get(name)
        variable = f"{prefix}{name}".upper()
        secret = field is not None and SecretStr in (field.annotation, *get_args(field.annotation))
        given = "" if secret or "input" not in error else f"={error['input']!r}"
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{variable}{given}: {message[:1].lower()}{message[1:]}")
    return "bad setting " + "; ".join(parts) + " (environment or .env)"


# ---------------------------------------------------------------------------- ingest
@app.command()
def ingest(
    provider: Annotated[
        str,
        typer.Option(
            help="Data provider: synthetic | file | yahoo | polygon | tiingo, or a fallback "
            "chain of HTTP providers such as polygon,yahoo (see `index-builder providers`)."
        ),
    ] = "synthetic",
    seed: Annotated[int, typer.Option(help="synthetic: random seed.")] = DEFAULT_SEED,
    symbols: Annotated[
        int, typer.Option(help="synthetic: number of securities.")
    ] = DEFAULT_SYMBOLS,
    days: Annotated[int, typer.Option(help="synthetic: number of sessions.")] = DEFAULT_DAYS,
    start: Annotated[
        str | None,
        typer.Option(help="synthetic: first session, YYYY-MM-DD [default: end on 2024-12-31]."),
    ] = None,
    securities: Annotated[Path | None, typer.Option(help="file: securities CSV/Parquet.")] = None,
    prices: Annotated[Path | None, typer.Option(help="file: prices CSV/Parquet.")] = None,
    map_: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            help="file: rename a column of both files, old=new (repeatable).",
            show_default=False,
        ),
    ] = None,
    securities_map: Annotated[
        list[str] | None,
        typer.Option(
            "--securities-map",
            help="file: rename a column of the securities file only, old=new (repeatable; "
            "wins over --map for the same column).",
            show_default=False,
        ),
    ] = None,
    prices_map: Annotated[
        list[str] | None,
        typer.Option(
            "--prices-map",
            help="file: rename a column of the prices file only, old=new (repeatable; "
            "wins over --map for the same column).",
            show_default=False,
        ),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option(help="HTTP providers: last session, YYYY-MM-DD [default: the last closed]."),
    ] = None,
    universe: Annotated[
        str | None,
        typer.Option(
            help="HTTP providers: a universe file (symbols, or a CSV with a symbol column) "
            "or a provider with listings (polygon)."
        ),
    ] = None,
    tickers: Annotated[
        str | None, typer.Option(help="HTTP providers: symbols, comma-separated.")
    ] = None,
    type_: Annotated[
        list[str] | None,
        typer.Option("--type", help="HTTP providers: security types kept (repeatable, e.g. CS)."),
    ] = None,
    exchange: Annotated[
        list[str] | None,
        typer.Option(help="HTTP providers: exchanges (MICs) kept (repeatable, e.g. XNYS)."),
    ] = None,
    fmt: Annotated[
        OutputFormat,
        typer.Option(
            "--format", "-f", help="table, or the run's report as one csv or json record."
        ),
    ] = OutputFormat.table,
) -> None:
    """Ingest market data (a standalone job; idempotent; every run is recorded)."""
    with _errors():
        if chain_names(provider) is not None:
            query = _provider_query(start, end, universe, tickers, type_, exchange)
            with _store() as store, _progress(f"ingest ({provider})") as step:
                report = run_ingestion(store, provider, query, progress=step)
            _print_ingest(report, _where(), fmt)
            if report.status == "failed":
                raise typer.Exit(1)
            return
        maps = _FileMaps(map_ or [], securities_map or [], prices_map or [])
        query = _ingest_query(provider, seed, symbols, days, start, securities, prices, maps)
        if universe is not None:
            query["universe"] = read_universe_file(Path(universe))
        with _store() as store, _progress(f"ingest ({provider})") as step:
            report = run_ingestion(store, provider, query, progress=step)
        _print_ingest(report, _where(), fmt)


@dataclass(frozen=True)
class _FileMaps:
    """The ``old=new`` pairs of ``--map`` (both files), ``--securities-map`` and
    ``--prices-map``."""

    both: list[str]
    securities: list[str]
    prices: list[str]


def _provider_query(
    start: str | None,
    end: str | None,
    universe: str | None,
    tickers: str | None,
    types: list[str] | None,
    exchanges: list[str] | None,
) -> dict[str, Any]:
    if start is None:
        raise InvalidInputError("HTTP providers need --start YYYY-MM-DD", field="start")
    if not universe and not tickers:
        raise InvalidInputError(
            "HTTP providers need --tickers A,B or --universe FILE|polygon", field="universe"
        )
    return {
        "start": _parse_date(start, "start"),
        "end": _parse_date(end, "end"),
        "symbols": [t.strip().upper() for t in (tickers or "").split(",") if t.strip()],
        "universe": universe,
        "types": types or [],
        "exchanges": exchanges or [],
    }


def _ingest_query(
    provider: str,
    seed: int,
    symbols: int,
    days: int,
    start: str | None,
    securities: Path | None,
    prices: Path | None,
    maps: _FileMaps,
) -> dict[str, Any]:
    if provider == "synthetic":
        if symbols < 1 or days < 1:
            raise InvalidInputError("--symbols and --days must be at least 1", field="symbols")
        return {
            "seed": seed,
            "symbols": symbols,
            "days": days,
            "start": _parse_date(start, "start"),
        }
    if provider == "file":
        if securities is None or prices is None:
            raise InvalidInputError(
                "--provider file needs --securities PATH and --prices PATH", field="securities"
            )
        query: dict[str, Any] = {
            "securities": str(securities),
            "prices": str(prices),
            "column_map": parse_column_map(maps.both, option="--map"),
        }
        if maps.securities:
            query["securities_column_map"] = parse_column_map(
                maps.securities, option="--securities-map"
            )
        if maps.prices:
            query["prices_column_map"] = parse_column_map(maps.prices, option="--prices-map")
        return query
    raise InvalidInputError(
        f"unknown provider {provider!r} (known: {', '.join(sorted(PROVIDERS))})",
        field="provider",
    )


def _where() -> dict[str, str]:
    """Where the settings put the data (backend, file or warehouse and catalog)."""
    return describe_settings(STATE.settings)


def _print_ingest(
    report: IngestReport, storage: dict[str, str], fmt: OutputFormat = OutputFormat.table
) -> None:
    if fmt is not OutputFormat.table:
        record = ingest_record(report, storage)
        if fmt is OutputFormat.json:
            write_json(record)
        else:
            render([record], list(record), fmt)
        _warn_current_basis(report)
        return
    table = Table(title=f"Ingestion run {report.run_id} ({report.provider}): {report.status}")
    table.add_column("count")
    table.add_column("rows", justify="right")
    for label, value in (
        ("read", report.rows_read),
        ("accepted", report.rows_accepted),
        ("  inserted", report.rows_inserted),
        ("  updated", report.rows_updated),
        ("  unchanged", report.rows_unchanged),
        ("duplicates collapsed", report.duplicates_collapsed),
        ("rejected (quarantined)", report.rows_rejected),
    ):
        table.add_row(label, f"{value:,}")
    for reason, n in sorted(report.rejected_by_reason.items()):
        table.add_row(f"  {reason}", f"{n:,}")
    table.add_row("securities changed", f"{report.securities_changed:,}")
    out.print(table)
    _warn_current_basis(report)
    if report.summary is not None:
        out.print(f"summary: {report.message}")
        if report.run_ids:
            out.print(f"runs: {', '.join(str(r) for r in report.run_ids)}")
    span = f"{report.min_date} .. {report.max_date}" if report.min_date else "no dates"
    out.print(f"dates: {span}; storage: {storage_label(storage)}")
    if report.known_at is not None:
        out.print(
            f"known at: {format_as_of(report.known_at)} (the run's start: the known_at of "
            "every row that gives none)"
        )


def _warn_current_basis(report: IngestReport) -> None:
    if report.rows_current_basis:
        err.print(
            f"[bold yellow]warning:[/] {report.rows_current_basis:,} accepted rows use today's "
            "share count for a past date (basis 'current'): their market caps carry "
            "survivorship and look-ahead bias (README, 'Shares outstanding')",
            highlight=False,
            soft_wrap=True,
        )


@app.command("providers")
def providers_command(format_: FormatOpt = OutputFormat.table) -> None:
    """Market data providers: what each can give, its rate limit, auth, configured."""
    rows = []
    for item in describe_providers(STATE.settings):
        caps = item["capabilities"]
        rows.append(
            {
                "name": item["name"],
                "capabilities": " ".join(k for k, v in caps.items() if v),
                "rate_limit_per_minute": item["rate_limit_per_minute"],
                "auth": item["auth"],
                "configured": "yes" if item["configured"] else "no",
            }
        )
    cols = ["name", "capabilities", "rate_limit_per_minute", "auth", "configured"]
    render(rows, cols, format_, title="Providers")


@app.command()
def runs(
    limit: Annotated[int, typer.Option(help="How many runs.")] = 20,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Recent ingestion runs."""
    with _errors(), _store() as store:
        rows = store.ingest_runs(limit)
    cols = [
        "run_id",
        "provider",
        "status",
        "started_at",
        "finished_at",
        "known_at",
        "rows_read",
        "rows_accepted",
        "rows_rejected",
        "rows_inserted",
        "rows_updated",
        "rows_current_basis",
        "rolled_back_by",
        "message",
    ]
    render(rows, cols, fmt, title="Ingestion runs")
    current = sum(int(r.get("rows_current_basis") or 0) for r in rows)
    if current:
        err.print(
            f"[bold yellow]warning:[/] {current:,} rows of these runs use today's share count "
            "for a past date (basis 'current'): survivorship and look-ahead bias",
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def quarantine(
    run: Annotated[int | None, typer.Option(help="Only this run.")] = None,
    limit: Annotated[int, typer.Option(help="How many rows.")] = 50,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Rows rejected at ingestion, with the reason."""
    with _errors(), _store() as store:
        rows = store.quarantined(run, limit)
    cols = ["run_id", "source", "row_number", "date", "symbol", "reason", "record"]
    render(rows, cols, fmt, title="Quarantined rows")


# ---------------------------------------------------------------------------- versions
VERSION_COLUMNS = [
    "version_id",
    "kind",
    "created_at",
    "data_run_id",
    "run_id",
    "index_id",
    "build_version",
    "rows",
    "detail",
    "snapshots",
]


@app.command()
def versions(
    limit: Annotated[
        str, typer.Option("--limit", metavar="N", help="How many versions, newest first.")
    ] = "50",
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            metavar="KIND",
            help=f"Only this kind: {' | '.join(VERSION_KINDS)}.",
            show_default=False,
        ),
    ] = None,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Every change of the store's content, newest first: ingestion runs, builds,
    definition changes, rollbacks and restores. data_run_id is the newest ingestion
    run in force after the change: --as-of-version reads the data as they stood then,
    and `rollback --to` brings them back."""
    with _errors():
        n = _positive(limit, "--limit")
        if kind is not None and kind not in VERSION_KINDS:
            raise InvalidInputError(
                f"--kind: {kind!r} is not a kind of version (one of {', '.join(VERSION_KINDS)})",
                field="kind",
            )
        with _store() as store:
            found = store.versions(n, kind)
    text = fmt is not OutputFormat.json  # detail as one JSON text in a table or CSV cell
    rows = [
        {
            **v.as_dict(),
            "detail": json.dumps(v.detail, sort_keys=True, default=str) if text else v.detail,
            "snapshots": json.dumps(v.snapshots) if text and v.snapshots else v.snapshots,
        }
        for v in found
    ]
    render(rows, VERSION_COLUMNS, fmt, title="Versions (newest first)")


def _positive(value: str, option: str) -> int:
    """A positive integer option given as text (one line naming it otherwise)."""
    text = value.strip()
    if not text.isdigit() or int(text) < 1:
        raise InvalidInputError(
            f"{option}: {value!r} is not a positive integer", field=option.lstrip("-")
        )
    return int(text)


ROLLBACK_COLUMNS = [
    "target_version",
    "target_run",
    "nothing_to_undo",
    "run_id",
    "version_id",
    "prices_restored",
    "prices_withdrawn",
    "securities_restored",
    "securities_withdrawn",
    "shares_restored",
    "shares_withdrawn",
    "runs_undone",
    "runs_redone",
    "indices_built",
    "indices_unchanged",
    "indices_failed",
]


@app.command("rollback")
def rollback_command(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            metavar="VERSION",
            help="Version id (see `index-builder versions`): the market data go back to "
            "their state right after it.",
            show_default=False,
        ),
    ],
    no_build: Annotated[
        bool,
        typer.Option(
            "--no-build",
            help="Only roll the data back; the indices built since restate at their next build.",
        ),
    ] = False,
    fmt: Annotated[
        OutputFormat,
        typer.Option(
            "--format",
            "-f",
            help="table; json: the rollback and every index's build as one object; csv: the "
            "rollback as one record (the builds' lines on stderr).",
        ),
    ] = OutputFormat.table,
) -> None:
    """Revert the market data to their state right after version --to, as one new
    ingestion run recorded as a version (row level: the values written since move to
    the history, those in force then are current again; nothing is deleted), then
    rebuild every index whose current build saw the undone data: it restates from the
    first changed day, the earlier days stay as published. Reversible: `rollback --to`
    the version just before this rollback re-does what it undid. Exit code 2 for an unknown
    version; 0 with a message when there is nothing to undo; 1 when an index could not
    be rebuilt (the data rollback stands; the others are built)."""
    with _errors():
        version = parse_version_id(to, "--to")
        with _standalone_store() as store:
            with _progress("rollback") as step:
                outcome = rollback(
                    store,
                    store.calendar,
                    version,
                    build=not no_build,
                    flags=STATE.settings.feature_flags(),
                    label="--to",
                    on_index=lambda r: step(f"{r.index_id} {r.outcome}"),
                )
            waiting = [] if outcome.report is None or not no_build else _stale(store, outcome)
    _print_rollback(outcome, fmt, waiting)
    if outcome.failed:
        raise typer.Exit(1)


def _stale(store: DuckDBStore, outcome: RollbackOutcome) -> list[str]:
    from index_builder.services.rollback import stale_indices

    return stale_indices(store, outcome.target_run)


def _print_rollback(outcome: RollbackOutcome, fmt: OutputFormat, waiting: list[str]) -> None:
    """The rollback (a line, a JSON object or a CSV record) and each index's build."""
    record = outcome.as_dict()
    builds = outcome.builds
    counts = {o: sum(1 for b in builds if b.outcome == o) for o in ("built", "unchanged")}
    record.update(
        indices_built=counts["built"],
        indices_unchanged=counts["unchanged"],
        indices_failed=sum(1 for b in builds if b.failed),
    )
    if fmt is OutputFormat.json:
        write_json(record)
    elif fmt is OutputFormat.csv:
        render([record], ROLLBACK_COLUMNS, fmt)
    else:
        out.print(outcome.message, highlight=False, soft_wrap=True)
    if fmt is OutputFormat.table:
        width = max((len(b.index_id) for b in builds), default=0)
        for b in builds:
            typer.echo(_styled(build_line(b, width), b.outcome))
    elif fmt is OutputFormat.csv:
        for b in builds:
            typer.echo(build_line(b), err=True)
    for b in builds:
        for w in b.warnings:
            typer.echo(f"warning: {b.index_id}: {w}", err=True)
    for reason in outcome.skipped.values():
        typer.echo(f"skipped: {reason}", err=True)
    if builds:
        typer.echo(f"indices rebuilt: {build_summary(builds)}", err=True)
    elif outcome.report is not None and not waiting:
        typer.echo("indices rebuilt: none (no current build saw the undone data)", err=True)
    if waiting:
        typer.echo(
            f"not rebuilt (--no-build): {', '.join(waiting)}; 'index-builder build' restates "
            "them from the first changed day",
            err=True,
        )


# ---------------------------------------------------------------------------- build
BUILD_COLUMNS = [
    "index",
    "outcome",
    "mode",
    "base_date",
    "start_date",
    "end_date",
    "trading_days",
    "rebalances",
    "changes",
    "version",
    "duration_ms",
    "restated_from",
    "restated_days",
    "warnings",
    "reason",
    "error_code",
    "as_of",
    "as_of_version",
    "engine",
]


class BuildEngine(StrEnum):
    """``build --engine``: NumPy in this process, or one Spark job for every index."""

    numpy = "numpy"
    spark = "spark"


@app.command()
def build(
    index: Annotated[
        list[str] | None, typer.Option("--index", "-i", help="Index id (repeatable; default all).")
    ] = None,
    start: DateOpt = None,
    end: DateOpt = None,
    full: Annotated[bool, typer.Option(help="Recompute from the base date.")] = False,
    as_of: AsOfOpt = None,
    as_of_version: AsOfVersionOpt = None,
    fmt: Annotated[
        OutputFormat,
        typer.Option(
            "--format", "-f", help="table: one line per index; json or csv: one record per index."
        ),
    ] = OutputFormat.table,
    engine: Annotated[
        BuildEngine | None,
        typer.Option(
            "--engine",
            help="numpy (in process) or spark (one Spark job for every index; master "
            "INDEX_BUILDER_SPARK_MASTER). Default: INDEX_BUILDER_ENGINE, else numpy.",
            case_sensitive=False,
        ),
    ] = None,
    every: Annotated[
        bool,
        typer.Option(
            "--all", help="Every stored definition (what no --index means), in one build."
        ),
    ] = False,
) -> None:
    """Build indices (incrementally unless --full) and persist levels and spells.

    One index that cannot be built does not stop the others: every index gets a
    line on stdout, `built`, `unchanged` or `failed` with the reason (--format
    json: a list of records, nothing else on stdout); warnings, switched-off
    indices and the counts go to stderr. Exit code 1 when any index failed, 2
    for bad input (nothing is built then).

    With --as-of: a full build from the data known at that moment, stored next to
    (never over) the current results; read it with --as-of on the read commands.
    With --as-of-version: the same from the data as they stood right after that
    version; read it with --as-of-version.

    With --engine spark every index is computed in one Spark job (one scan of the
    bars; see docs/architecture.md, "Spark engine"); the results are the NumPy
    engine's and are stored the same way, the build record naming the engine.
    """
    with _errors():
        if every and index:
            raise InvalidInputError("--all and --index exclude each other", field="index")
        start_d, end_d = _parse_date(start, "start"), _parse_date(end, "end")
        as_of_k, version = _parse_point(as_of, as_of_version)
        with _store() as store:
            builder = _builder(store, engine)
            stored = [d.id for d, _ in store.list_definitions()]
            ids = list(dict.fromkeys(index)) if index else _buildable(builder, stored)
            for i in ids:  # --start only checks the window: builds start at the base date
                builder.check_window(i, start_d, end_d, as_of_k, version)
            with _progress("build") as step:
                results = builder.build(
                    ids,
                    end=end_d,
                    full=full,
                    as_of=as_of_k,
                    as_of_version=version,
                    on_index=lambda r: step(f"{r.index_id} {r.outcome}"),
                )
    if builder.last_spark_job is not None:
        typer.echo(builder.last_spark_job.line(), err=True)
    _print_builds(results, fmt, skipped=0 if index else len(stored) - len(ids))
    if any(r.failed for r in results):
        raise typer.Exit(1)


def _print_builds(results: list[BuildResult], fmt: OutputFormat, *, skipped: int = 0) -> None:
    """Each index's outcome on stdout (a line, or a JSON / CSV record); warnings and
    the counts on stderr."""
    if fmt is OutputFormat.json:
        write_json([r.as_dict() for r in results])
    elif fmt is OutputFormat.csv:
        render([r.as_dict() for r in results], BUILD_COLUMNS, fmt)
    else:
        width = max((len(r.index_id) for r in results), default=0)
        for r in results:
            typer.echo(_styled(build_line(r, width), r.outcome))
    for r in results:
        for w in r.warnings:
            typer.echo(f"warning: {r.index_id}: {w}", err=True)
    typer.echo(f"storage: {storage_label(_where())}", err=True)
    if results:
        typer.echo(f"engine: {results[0].engine}", err=True)
    typer.echo(build_summary(results, skipped), err=True)


def _styled(line: str, outcome: str) -> str:
    """The outcome word coloured on a terminal (plain text otherwise)."""
    colour = {"built": "green", "unchanged": "blue", "failed": "red"}.get(outcome)
    if colour is None or not sys.stdout.isatty():
        return line
    word = line[: len(outcome)]
    return typer.style(word, fg=colour, bold=outcome == "failed") + line[len(outcome) :]


# ---------------------------------------------------------------------------- reads
@app.command()
def performance(
    index: IndexOpt = DEFAULT_INDEX_ID,
    start: DateOpt = None,
    end: DateOpt = None,
    return_type: Annotated[
        str | None,
        typer.Option(help="price | total | net_total (default: the index's headline)."),
    ] = None,
    fmt: FormatOpt = OutputFormat.table,
    as_of: AsOfOpt = None,
    as_of_version: AsOfVersionOpt = None,
) -> None:
    """Levels, daily and cumulative returns (and a summary with --format table)."""
    with _errors():
        as_of_k, version = _parse_point(as_of, as_of_version)
        with _store() as store:
            perf = IndexReader(store, store.calendar).performance(
                index,
                _parse_date(start, "start"),
                _parse_date(end, "end"),
                return_type,
                as_of=as_of_k,
                as_of_version=version,
            )
    title = f"{index} performance{_as_of_title(perf.window.as_of, version)}"
    render(perf.rows, PERFORMANCE_COLUMNS, fmt, title=title)
    if fmt is OutputFormat.table:
        summary = [{"statistic": k, "value": v} for k, v in perf.summary.as_dict().items()]
        render(summary, ["statistic", "value"], fmt, title="Summary")


@app.command()
def composition(
    index: IndexOpt = DEFAULT_INDEX_ID,
    date: DateOpt = None,
    fmt: FormatOpt = OutputFormat.table,
    as_of: AsOfOpt = None,
    as_of_version: AsOfVersionOpt = None,
) -> None:
    """Constituents in force after the close of --date (default: last built day)."""
    with _errors():
        as_of_k, version = _parse_point(as_of, as_of_version)
        with _store() as store:
            comp = IndexReader(store, store.calendar).composition(
                index, _parse_date(date, "date"), as_of_k, version
            )
    title = (
        f"{index} composition after the close of {comp.effective_date}"
        f"{_as_of_title(as_of_k, version)}"
    )
    render(comp.rows(), COMPOSITION_COLUMNS, fmt, title=title)


@app.command()
def proforma(
    index: IndexOpt = DEFAULT_INDEX_ID,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """The next composition: announced, not yet in force (indices with an effective_lag)."""
    with _errors(), _store() as store:
        a = IndexReader(store, store.calendar).announcement(index)
    effective = a.effective_date or f"{a.sessions_ahead} sessions after {a.last_close}"
    title = (
        f"{index} pro-forma: reference date {a.reference_date}, effective after the close of "
        f"{effective}; expected one-way turnover {a.expected_turnover:.2%} "
        f"({len(a.entered)} in, {len(a.exited)} out)"
    )
    render(a.constituents, PROFORMA_COLUMNS, fmt, title=title)


@app.command()
def changes(
    index: IndexOpt = DEFAULT_INDEX_ID,
    start: DateOpt = None,
    end: DateOpt = None,
    fmt: FormatOpt = OutputFormat.table,
    as_of: AsOfOpt = None,
    as_of_version: AsOfVersionOpt = None,
) -> None:
    """Constituents entered and exited at each rebalance."""
    with _errors():
        as_of_k, version = _parse_point(as_of, as_of_version)
        with _store() as store:
            window, found = IndexReader(store, store.calendar).changes(
                index, _parse_date(start, "start"), _parse_date(end, "end"), as_of_k, version
            )
    rows = [{"date": c.date, "entered": c.entered, "exited": c.exited} for c in found]
    title = f"{index} composition changes{_as_of_title(window.as_of, version)}"
    render(rows, CHANGES_COLUMNS, fmt, title=title)


class ExportFileFormat(StrEnum):
    """File formats of ``index-builder export`` (those of ``POST /export-data``)."""

    xlsx = "xlsx"
    csv = "csv"
    parquet = "parquet"


@app.command("export")
def export_command(
    out_file: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="File to write. Written to a temporary file next to it, then renamed: "
            "FILE is never partial, and an existing FILE stays as it was when the export fails.",
            show_default=False,
        ),
    ],
    index: IndexOpt = DEFAULT_INDEX_ID,
    start: DateOpt = None,
    end: DateOpt = None,
    as_of: AsOfOpt = None,
    as_of_version: AsOfVersionOpt = None,
    fmt: Annotated[
        ExportFileFormat,
        typer.Option(
            "--format",
            "-f",
            help="xlsx: a workbook (Summary with a level chart, Performance, Compositions, "
            "Changes); csv or parquet: a zip of the same tables.",
        ),
    ] = ExportFileFormat.xlsx,
) -> None:
    """Export an index window to a file: the same file as the API's POST /export-data.

    --start and --end default to the built range. Prints the path and the size.
    Exit code 2 for what the user can fix (unknown index, a window that is not
    built, a folder that does not exist or cannot be written), 1 when storage fails.
    """
    with _errors():
        start_d, end_d = _parse_date(start, "start"), _parse_date(end, "end")
        point = _parse_point(as_of, as_of_version)
        target = _export_target(out_file, fmt)
        with _store() as store:
            reader = IndexReader(store, store.calendar)
            size = _export_atomically(reader, index, start_d, end_d, fmt, point, target)
    typer.echo(f"wrote {target} ({size:,} bytes)")


def _export_target(path: Path, fmt: ExportFileFormat) -> Path:
    """``--out`` as an absolute path, refused (exit 2) when it cannot be a file."""
    target = path.expanduser().absolute()
    if target.is_dir():
        raise InvalidInputError(f"--out: {path} is a directory, not a file", field="out")
    if not target.parent.exists():
        raise InvalidInputError(f"--out: folder {target.parent} does not exist", field="out")
    if not target.parent.is_dir():
        raise InvalidInputError(f"--out: {target.parent} is not a folder", field="out")
    suffix = ".xlsx" if fmt is ExportFileFormat.xlsx else ".zip"
    if target.suffix.lower() != suffix:
        what = "an xlsx workbook" if fmt is ExportFileFormat.xlsx else f"a zip of {fmt} tables"
        typer.echo(f"warning: --out {path} does not end in {suffix}; it is {what}", err=True)
    return target


def _export_atomically(
    reader: IndexReader,
    index: str,
    start: dt.date | None,
    end: dt.date | None,
    fmt: ExportFileFormat,
    point: tuple[dt.datetime | None, int | None],
    target: Path,
) -> int:
    """Write the export into a hidden folder next to ``target``, rename it over
    ``target`` (atomic on one file system) and return its size; the folder goes
    in every case, so a failure or Ctrl-C leaves nothing behind."""
    try:
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as exc:
        raise InvalidInputError(
            f"--out: cannot write to {target.parent}: {exc.strerror or exc}", field="out"
        ) from None
    try:
        as_of, as_of_version = point
        exported = export_index(
            reader, index, start, end, fmt.value, scratch, as_of, as_of_version=as_of_version
        )
        exported.path.chmod(_new_file_mode(target))
        os.replace(exported.path, target)
        return target.stat().st_size
    except PermissionError as exc:
        raise InvalidInputError(
            f"--out: cannot write {target}: {exc.strerror or exc}", field="out"
        ) from None
    except OSError as exc:  # a full disk, an I/O error: not the user's to fix
        raise StorageError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _new_file_mode(target: Path) -> int:
    """The mode of the file being replaced, else what the umask gives a new file."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def _as_of_title(as_of: dt.datetime | None, as_of_version: int | None = None) -> str:
    """`` as of <K>`` (`` as of version <V>``) for the title of a read as of a moment
    (a version)."""
    if as_of_version is not None:
        return f" as of version {as_of_version}"
    return "" if as_of is None else f" as of {format_as_of(as_of)}"


# ---------------------------------------------------------------------------- indices
@indices_app.command("list")
def indices_list(fmt: FormatOpt = OutputFormat.table) -> None:
    """All index definitions."""
    with _errors(), _store() as store:
        rows = []
        definitions = store.list_definitions()
        states = {d.id: store.build_state(d.id) for d, _ in definitions}
        waiting = data_waiting(store, [s for s in states.values() if s is not None])
        for d, builtin in definitions:
            state = states[d.id]
            rows.append(
                {
                    "id": d.id,
                    "name": d.name,
                    "top_n": d.top_n,
                    "weighting": d.weighting,
                    "rebalance": d.rebalance,
                    "builtin": "yes" if builtin else "no",
                    "built_through": state.built_through if state else None,
                    "data_waiting_from": waiting.get(d.id),
                    "problem": None,
                }
            )
        broken = store.broken_definitions()
        rows.extend({"id": i, "problem": why} for i, why in sorted(broken.items()))
    render(
        rows,
        [
            "id",
            "name",
            "top_n",
            "weighting",
            "rebalance",
            "builtin",
            "built_through",
            "data_waiting_from",
            "problem",
        ],
        fmt,
        title="Indices (data_waiting_from: newer data waits for a build; reads answer from "
        "the published build; problem: a stored definition that no longer validates)",
    )
    for index_id in broken:
        typer.echo(
            f"warning: the stored definition of {index_id} no longer validates: replace it "
            "with 'index-builder indices add FILE --replace' or remove it",
            err=True,
        )


@indices_app.command("show")
def indices_show(index_id: Annotated[str, typer.Argument(help="Index id.")]) -> None:
    """One definition as JSON, with its build state."""
    with _errors(), _store() as store:
        definition = _builder(store).definition(index_id)
        state = store.build_state(index_id)
        as_of_builds = store.as_of_builds(index_id)
        waiting = data_waiting(store, [state] if state is not None else [])
    payload: dict[str, Any] = {"definition": json.loads(definition.to_json())}
    if state is not None:
        payload["build"] = _build_info(state)
        day = waiting.get(index_id)
        payload["build"]["data_waiting_from"] = None if day is None else str(day)
    if as_of_builds:
        payload["as_of_builds"] = [_build_info(s) for s in as_of_builds]
    sys.stdout.write(json.dumps(payload, indent=2) + "\n")


def _build_info(state: BuildState) -> dict[str, Any]:
    info: dict[str, Any] = {
        "version": state.version,
        "base_date": str(state.base_date),
        "built_through": str(state.built_through),
        "built_at": str(state.built_at),
    }
    if state.as_of is not None:
        info["as_of"] = format_as_of(state.as_of)
    if state.as_of_version is not None:
        info["as_of_version"] = state.as_of_version
    return info


@indices_app.command("add")
def indices_add(
    file: Annotated[Path, typer.Argument(help="YAML or JSON definition.")],
    replace: Annotated[bool, typer.Option(help="Replace an existing user index.")] = False,
) -> None:
    """Add a user-defined index from a YAML or JSON file."""
    with _errors():
        definition = load_definition_file(file)
        with _store() as store:
            replaced = add_definition(
                store, definition, replace=replace, flags=STATE.settings.feature_flags()
            )
    out.print(
        f"{'replaced' if replaced else 'added'} index {definition.id}; build it with "
        f"'index-builder build --index {definition.id}'"
    )


@indices_app.command("remove")
def indices_remove(index_id: Annotated[str, typer.Argument(help="Index id.")]) -> None:
    """Remove a user-defined index and its results (built-ins are refused)."""
    with _errors(), _store() as store:
        remove_definition(store, index_id)
    out.print(f"removed index {index_id}")


# ---------------------------------------------------------------------------- serve
@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address [env INDEX_BUILDER_API_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [env INDEX_BUILDER_API_PORT].")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Processes serving the port [env INDEX_BUILDER_API_WORKERS]; more than 1 "
            "needs INDEX_BUILDER_STORAGE=iceberg and INDEX_BUILDER_REDIS_URL.",
        ),
    ] = None,
) -> None:
    """Serve the REST API (Ctrl-C stops it cleanly).

    With --workers N, N processes serve one port (uvicorn's supervisor replaces one
    that dies). They share the iceberg store and the Redis job queue, whose jobs
    'index-builder worker' runs; the duckdb file serves one process only (refused
    with the way to scale)."""
    update = {"api_host": host, "api_port": port, "api_workers": workers}
    settings = STATE.settings.model_copy(update={k: v for k, v in update.items() if v is not None})
    from index_builder.api.server import run_server, workers_problem  # uvicorn, limits
    from index_builder.services.queue import queue_problem

    problem = workers_problem(settings, settings.api_workers) or queue_problem(settings)
    if problem is not None:
        _fail(InvalidInputError(problem, field="workers"))
    _check_database_free(settings)
    configure_logging(settings)  # auto: JSON lines unless stderr is a terminal
    if settings.metrics_dir is not None:  # multiprocess metrics: before any metric exists
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(settings.metrics_dir))
    elif settings.api_workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # the processes' metrics add up in one fresh folder (GET /metrics on any of them)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="index-builder-metrics-")

    url = f"http://{settings.api_host}:{settings.api_port}"
    processes = f", {settings.api_workers} processes" if settings.api_workers > 1 else ""
    out.print(
        f"Index Builder API on {url}  (dashboard: {url}/, docs: {url}/docs, "
        f"storage: {storage_label(describe_settings(settings))}{processes})"
    )
    run_server(settings, log_level="warning" if STATE.quiet else None, workers=settings.api_workers)


def _check_database_free(settings: Settings) -> None:
    """On duckdb: fail in one line when another process holds the file (one process
    serves it), instead of a lock error in the server's startup log."""
    if settings.storage != "duckdb" or not settings.database.exists():
        return
    import duckdb

    try:
        duckdb.connect(str(settings.database)).close()
    except duckdb.Error as exc:
        if "lock" not in str(exc).lower():
            return  # the server's startup reports anything else with its context
        _fail(
            StorageError(
                f"{settings.database} is held by another process: the duckdb file is served "
                "by one process only (stop it, or scale out with INDEX_BUILDER_STORAGE=iceberg)"
            )
        )


# ---------------------------------------------------------------------------- worker
@app.command()
def worker(
    burst: Annotated[
        bool, typer.Option("--burst", help="Run the jobs queued now, then exit.")
    ] = False,
    name: Annotated[
        str | None, typer.Option(help="Worker name (default: host, process id and a suffix).")
    ] = None,
) -> None:
    """Run jobs (builds, exports) from the Redis queue, one at a time, until Ctrl-C or
    SIGTERM (the running job finishes first; twice: it is interrupted).

    Needs INDEX_BUILDER_REDIS_URL and INDEX_BUILDER_STORAGE=iceberg (the store every
    API process reads); start as many workers as wanted. A job submitted on any API
    process runs once; its state, progress and result are in Redis for every process.
    A worker killed mid-job leaves it 'interrupted' after INDEX_BUILDER_JOB_LEASE_SECONDS
    (POST /jobs/{id}/retry runs it again)."""
    settings = STATE.settings
    if settings.storage != "iceberg":
        _fail(
            InvalidInputError(
                "the worker needs a store several processes share: INDEX_BUILDER_STORAGE="
                "iceberg (with the duckdb file, jobs run inside 'index-builder serve')",
                field="storage",
            )
        )
    if not settings.redis_url or settings.job_queue == "process":
        _fail(
            InvalidInputError(
                "the worker takes its jobs from Redis: set INDEX_BUILDER_REDIS_URL (and "
                "INDEX_BUILDER_JOB_QUEUE=auto or redis)",
                field="redis_url",
            )
        )
    assert settings.redis_url is not None
    configure_logging(settings)
    if settings.metrics_dir is not None:  # multiprocess metrics: before any metric exists
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(settings.metrics_dir))
    from index_builder.export.files import ExportFiles
    from index_builder.services.jobs import JobRunner
    from index_builder.services.queue import QueueWorker, RedisQueue

    with _errors(), _store() as store:
        runner = JobRunner(
            store,
            store.calendar,
            flags=settings.feature_flags(),
            exports=ExportFiles(
                settings.export_folder, dt.timedelta(hours=settings.export_retention_hours)
            ),
        )
        queue = RedisQueue(
            settings.redis_url,
            keep=settings.jobs_keep,
            lease_seconds=settings.job_lease_seconds,
        )
        runner_worker = QueueWorker(queue, runner, name=name)
        err.print(
            f"index-builder worker {runner_worker.name}: jobs from {_redis_label(settings)}, "
            f"storage: {storage_label(describe_settings(settings))}",
            highlight=False,
            soft_wrap=True,
        )
        try:
            runner_worker.work(burst=burst)
        finally:
            queue.shutdown()


def _redis_label(settings: Settings) -> str:
    """The Redis URL without its password."""
    from urllib.parse import urlsplit

    url = urlsplit(settings.redis_url or "")
    host = url.hostname or ""
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{host}{port}{url.path}"


# ---------------------------------------------------------------------------- schedule
CYCLE_COLUMNS = [
    "cycle_id",
    "session",
    "cycle_status",
    "step",
    "status",
    "attempts",
    "started_at",
    "finished_at",
    "duration_ms",
    "message",
]


def _cycle_record(result: CycleResult) -> dict[str, Any]:
    return {
        "cycle_id": result.cycle_id,
        "session": result.session,
        "status": result.status,
        "steps": [_step_row(result, st) for st in result.steps],
        "backfilled": result.backfilled,
        "builds": [r.as_dict() for r in result.builds],
    }


def _step_row(result: CycleResult, st: ScheduleStep) -> dict[str, Any]:
    return {
        "cycle_id": result.cycle_id,
        "session": result.session,
        "cycle_status": result.status,
        "step": st.step,
        "status": st.status,
        "attempts": st.attempts,
        "started_at": st.started_at,
        "finished_at": st.finished_at,
        "duration_ms": st.duration_ms,
        "message": st.message,
    }


def _print_cycle(
    result: CycleResult,
    fmt: OutputFormat = OutputFormat.table,
    *,
    stream: bool = False,
    header: bool = True,
) -> None:
    """A cycle as a table, a JSON object (one line each when ``stream``: the
    scheduler's JSON Lines) or CSV rows, one per step (``header``: with the header)."""
    if fmt is OutputFormat.json:
        write_json(_cycle_record(result), indent=None if stream else 2)
    elif fmt is OutputFormat.csv:
        rows = [_step_row(result, st) for st in result.steps] or [
            {"cycle_id": result.cycle_id, "session": result.session, "cycle_status": result.status}
        ]  # a cycle with nothing to do: one row that says so
        render(rows, CYCLE_COLUMNS, fmt, header=header)
    if fmt is not OutputFormat.table:
        sys.stdout.flush()
        return
    if result.cycle_id is None:
        what = "no session has closed yet" if result.session is None else "nothing to do"
        out.print(f"daily cycle: {result.status} ({what}; latest session {result.session})")
        return
    rows = [
        {
            "step": st.step,
            "status": st.status,
            "attempts": st.attempts,
            "duration_ms": round(st.duration_ms, 1),
            "message": st.message,
        }
        for st in result.steps
    ]
    title = f"Daily cycle {result.cycle_id} for {result.session}: {result.status}"
    render(
        rows,
        ["step", "status", "attempts", "duration_ms", "message"],
        OutputFormat.table,
        title=title,
        console=out,
    )


@app.command()
def daily(
    at: Annotated[
        str | None,
        typer.Option(help="Run as if at this moment (ISO 8601, no offset = UTC) [default: now]."),
    ] = None,
    fmt: Annotated[
        OutputFormat,
        typer.Option(
            "--format",
            "-f",
            help="table; json: the cycle as one object (steps, backfilled sessions, builds); "
            "csv: one row per step.",
        ),
    ] = OutputFormat.table,
) -> None:
    """Run the daily cycle once (for cron or a Kubernetes CronJob): backfill missing
    sessions, ingest the latest closed one, build every index. Exit code 1 when a
    step still fails after its retries, or when an index cannot be built (the
    others are built and published; the build step's message names it)."""
    with _errors():
        config = config_from_settings(STATE.settings)
        now = parse_as_of(at, label="--at").replace(tzinfo=dt.UTC) if at else None
        with _standalone_store() as store:
            result = run_daily_cycle(
                store,
                config,
                now=now or dt.datetime.now(dt.UTC),
                flags=STATE.settings.feature_flags(),
            )
        _print_cycle(result, fmt)
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def scheduler(
    fmt: Annotated[
        OutputFormat,
        typer.Option(
            "--format",
            "-f",
            help="table; json: one line per cycle (JSON Lines); csv: one row per step "
            "(one header).",
        ),
    ] = OutputFormat.table,
) -> None:
    """Run the daily cycle after every XNYS session close + the offset, forever
    (Ctrl-C stops it). Standalone: no server may hold the database; to schedule
    inside the API set INDEX_BUILDER_SCHEDULER_ENABLED=true instead."""
    cycles = 0

    def printed(result: CycleResult) -> CycleResult:
        nonlocal cycles
        _print_cycle(result, fmt, stream=True, header=cycles == 0)
        cycles += 1
        return result

    with _errors():
        config = config_from_settings(STATE.settings)
        flags = STATE.settings.feature_flags()
        try:
            with _standalone_store() as store:
                run_scheduler(
                    lambda now: printed(run_daily_cycle(store, config, now=now, flags=flags)),
                    store.calendar,
                    config.offset,
                )
        except KeyboardInterrupt:
            err.print("scheduler stopped")


@contextmanager
def _standalone_store() -> Iterator[DuckDBStore]:
    """The store, with a clear error when a server (or another job) holds the database."""
    try:
        with _store() as store:
            yield store
    except StorageError as exc:
        if "lock" in exc.message.lower():
            raise StorageError(
                f"{STATE.settings.database} is held by another process (is 'index-builder "
                "serve' running? Set INDEX_BUILDER_SCHEDULER_ENABLED=true to run the daily "
                "schedule inside the server instead)"
            ) from exc
        raise


# ---------------------------------------------------------------------------- backup
BACKUP_COLUMNS = ["backup", "table", "rows", "bytes", "file", "sha256"]


@app.command()
def backup(
    dest: Annotated[
        str,
        typer.Argument(
            help="Folder (created if missing) or s3://bucket/prefix (AWS_* environment "
            "variables); the backup is a new folder <UTC time>-<source version> in it."
        ),
    ],
    keep: Annotated[
        int | None,
        typer.Option(
            "--keep", min=1, help="Then delete the older complete backups in DEST beyond N."
        ),
    ] = None,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Back up the whole store: one Parquet file per table, read from one snapshot,
    and manifest.json (rows, SHA-256 per file) written last."""
    with _errors(), _standalone_store() as store:
        manifest = write_backup(store, dest, keep=keep)
    _print_backup(manifest, fmt, f"backup written to {manifest.location}")
    for folder in manifest.removed:
        typer.echo(f"removed old backup {folder}", err=fmt is not OutputFormat.table)


@app.command()
def restore(
    src: Annotated[
        str,
        typer.Argument(
            help="A backup folder (holding manifest.json), or a folder of backups (the "
            "newest complete one is restored); local or s3://."
        ),
    ],
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace a database holding data (its file is kept as <db>.before-restore).",
        ),
    ] = False,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Restore a backup into the database (--db): every file's checksum and row count
    is verified first, the tables are loaded into <db>.restoring and checked, which
    then replaces the database. A refused backup (exit code 2) changes nothing."""
    with _errors():
        manifest = verify_backup(src)  # before the database is even opened
        with _standalone_store() as store:
            restore_backup(src, store, force=force, verified=manifest)
    _print_backup(manifest, fmt, f"restored {manifest.location} into {storage_label(_where())}")


def _print_backup(manifest: Manifest, fmt: OutputFormat, summary: str) -> None:
    """One row per table; the summary under the table (on stderr with csv / json)."""
    rows = [
        {"backup": manifest.location, "table": name, **entry.__dict__}
        for name, entry in manifest.tables.items()
    ]
    source = manifest.source_version.get("label", "")
    line = (
        f"{summary}: {len(rows)} tables, {manifest.total_rows:,} rows, "
        f"{manifest.total_bytes:,} bytes (source {source}, "
        f"taken {manifest.created_at:%Y-%m-%d %H:%M:%S} UTC)"
    )
    if fmt is OutputFormat.table:
        render(rows, ["table", "rows", "bytes"], fmt, console=out)
        out.print(line, highlight=False, soft_wrap=True)
    else:
        render(rows, BACKUP_COLUMNS, fmt)
        typer.echo(line, err=True)


# ---------------------------------------------------------------------------- migrate-storage
class StorageBackend(StrEnum):
    """The storage backends (``INDEX_BUILDER_STORAGE``)."""

    duckdb = "duckdb"
    iceberg = "iceberg"


MIGRATION_COLUMNS = [
    "table",
    "source_rows",
    "target_rows",
    "source_checksum",
    "target_checksum",
    "ok",
    "problem",
]


@app.command("migrate-storage")
def migrate_storage(
    to: Annotated[
        StorageBackend,
        typer.Option(
            "--to",
            help="The backend to copy the store into: the other one than "
            "INDEX_BUILDER_STORAGE, where the same settings put it (duckdb: "
            "INDEX_BUILDER_DATABASE / --db; iceberg: INDEX_BUILDER_WAREHOUSE, "
            "INDEX_BUILDER_CATALOG_URI, INDEX_BUILDER_LAKE_NAMESPACE).",
            show_default=False,
        ),
    ],
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace a DuckDB target holding data (copied and verified in "
            "<db>.migrating first; the old file is kept as <db>.before-migrate). A lake "
            "target holding data is always refused.",
        ),
    ] = False,
    verify_only: Annotated[
        bool,
        typer.Option(
            "--verify-only",
            help="Copy nothing: compare the target with the current store table by table "
            "(rows and content checksums, leaving out the columns each backend stamps "
            "itself), e.g. before switching the primary after a shadow phase.",
        ),
    ] = False,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Copy the whole store to the other backend and verify the copy: every table read
    from one snapshot of the current store (INDEX_BUILDER_STORAGE), loaded into the
    empty target, then row counts and content checksums compared table by table. The
    migration is recorded as a version (kind restore) in both stores. Exit 2: refused,
    nothing written (the target holds data, --to names the current backend); exit 1:
    the copy differs from the source (do not use the target) or storage failed.
    --verify-only compares without copying (exit 1 on any difference).
    Stop the server first: DuckDB has one process. See docs/operations.md."""
    settings = STATE.settings
    with _errors():
        if to.value == settings.storage:
            raise InvalidInputError(
                f"--to {to.value}: the store is on {settings.storage} already "
                "(INDEX_BUILDER_STORAGE); --to names the backend to copy it into: "
                f"{other_backend(settings.storage)}",
                field="to",
            )
        if verify_only and force:
            raise InvalidInputError(
                "--force: --verify-only copies nothing, so there is nothing to replace",
                field="force",
            )
        calendar = get_calendar(settings.calendar, settings.calendar_start)
        source = make_backend(settings, settings.storage, calendar)
        target = make_backend(settings, to.value, calendar)
        with (
            _migration_side(source, "source"),
            _migration_side(target, "target"),
            _progress("migrate-storage") as step,
        ):
            if verify_only:
                report = verify_stores(source, target, progress=step)
            else:
                report = migrate_store(source, target, force=force, progress=step)
    _print_migration(report, fmt)
    if not report.ok:
        _fail(
            StorageError(
                f"the copy in {storage_label(report.target)} differs from the source in "
                f"{', '.join(report.mismatched)}: the target is not to be used (remove it "
                "and run migrate-storage again)"
            )
        )


@contextmanager
def _migration_side(store: DuckDBStore, role: str) -> Iterator[DuckDBStore]:
    """One store of a migration, opened (a lock held by another process: one clear line)."""
    try:
        store.open()
    except StorageError as exc:
        if "lock" in exc.message.lower():
            raise StorageError(
                f"the {role} {storage_label(store.describe())} is held by another process "
                "(stop 'index-builder serve' before migrating)"
            ) from exc
        raise
    try:
        yield store
    finally:
        store.close()


def _print_migration(report: MigrationReport, fmt: OutputFormat) -> None:
    """One row per table; the summary under the table (on stderr with csv / json)."""
    rows = [check.as_row() for check in report.tables]
    verdict = "verified" if report.ok else f"MISMATCH in {', '.join(report.mismatched)}"
    done = "migrated {} to {}" if report.copied else "compared {} with {}"
    version = f"version {report.version_id}, " if report.version_id is not None else ""
    line = (
        f"{done.format(storage_label(report.source), storage_label(report.target))}: "
        f"{len(rows)} tables, {report.rows:,} rows, {verdict} ({version}"
        f"{report.seconds:.1f} s)"
    )
    if report.replaced:
        line += f"; the previous target is kept as {report.replaced}"
    if fmt is OutputFormat.table:
        shown = [
            {
                "table": r["table"],
                "rows": r["source_rows"],
                "checksum": r["source_checksum"][-16:],
                "ok": "ok" if r["ok"] else _mismatch_cell(r),
            }
            for r in rows
        ]
        render(shown, ["table", "rows", "checksum", "ok"], fmt, console=out)
        out.print(line, highlight=False, soft_wrap=True)
    else:
        render(rows, MIGRATION_COLUMNS, fmt)
        typer.echo(line, err=True)


def _mismatch_cell(row: dict[str, Any]) -> str:
    """What differs in the target, for the table format."""
    if row["problem"]:
        return f"MISMATCH: {row['problem']}"
    if row["target_rows"] != row["source_rows"]:
        return f"MISMATCH: {row['target_rows']} rows in the target"
    return "MISMATCH: content checksum"


# ---------------------------------------------------------------------------- quickstart
QUICKSTART_COLUMNS = [
    "index",
    "base",
    "through",
    "total_return",
    "annualized_return",
    "annualized_volatility",
    "sharpe",
    "max_drawdown",
    "turnover",
    "build",
]


# ---------------------------------------------------------------------------- lake
@contextmanager
def _lake() -> Iterator[IcebergStore]:
    """The lake store (exit 2 when the settings name another backend)."""
    from index_builder.storage.iceberg.store import IcebergStore  # pyiceberg: on demand

    if STATE.settings.storage != "iceberg":
        raise InvalidInputError(
            "lake commands work on the Iceberg backend: set INDEX_BUILDER_STORAGE=iceberg "
            f"(the settings name {STATE.settings.storage})",
            field="storage",
        )
    with _store(shadow=False) as store:  # upkeep of the lake itself, never of a shadow
        assert isinstance(store, IcebergStore)
        yield store


@lake_app.command("compact")
def lake_compact(
    min_files: Annotated[
        int, typer.Option(min=2, help="Rewrite a partition holding at least this many files.")
    ] = 2,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Rewrite the small files daily appends leave (bar history, quarantine) as one
    sorted file per partition, as one version; rows are checked unchanged."""
    from index_builder.storage.iceberg.maintenance import compact

    with _errors(), _lake() as store:
        tables = compact(store, min_files)
    rows = [t.__dict__ for t in tables]
    render(
        rows,
        ["table", "partitions", "files_before", "files_after", "rows"],
        fmt,
        title="Compaction",
    )


@lake_app.command("expire")
def lake_expire(
    older_than: Annotated[
        str,
        typer.Option("--older-than", help="Keep the versions newer than this age (30d, 12h, 2w)."),
    ] = "30d",
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Expire the snapshots no version newer than --older-than (nor the newest) needs,
    and delete the data files only they referenced. Rollback and reads as of a version
    do not need them (they work on the run ids stored on every row)."""
    from index_builder.storage.iceberg.maintenance import expire, parse_age

    with _errors():
        age = parse_age(older_than)
        with _lake() as store:
            report = expire(store, age)
    rows = [t.__dict__ for t in report.tables]
    cols = ["table", "snapshots_before", "snapshots_expired", "files_deleted", "bytes_deleted"]
    render(rows, cols, fmt, title=f"Expired before {report.cutoff:%Y-%m-%d %H:%M} UTC")
    err.print(
        f"versions kept: {report.versions_kept}; commit-log rows removed: {report.commits_removed}"
    )


# ---------------------------------------------------------------------------- status
@app.command()
def status(fmt: FormatOpt = OutputFormat.table) -> None:
    """Where the data lives (backend, database or warehouse and catalog), whether the
    storage answers, the newest version, data and builds."""
    with _errors(), _store() as store:
        record = _status_record(store)
    if fmt is OutputFormat.json:
        write_json(record)
    else:
        rows = [{"field": k, "value": v} for k, v in record.items()]
        render(rows, ["field", "value"], fmt, title="Index Builder status")


@app.command()
def migrate(
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Only say what this release would change, writing nothing: exit 0 when "
            "the store is up to date, 1 when migrations are pending or the store is newer "
            "than this release.",
        ),
    ] = False,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Bring the store's schema to this release (forward only; every process also does
    it when it opens the store). With --check, a rollout gate: what would change."""
    with _errors():
        before = schema_status(STATE.settings)
        if not check and not before.newer:
            with _standalone_store():
                pass  # opening applies the pending migrations, one transaction each
        after = before if check else schema_status(STATE.settings)
    record = {**after.as_dict(), "applied": [] if check else before.pending}
    if fmt is OutputFormat.json:
        write_json(record)
    else:
        rows = [{"field": k, "value": v} for k, v in record.items()]
        render(rows, ["field", "value"], fmt, title="Schema")
    typer.echo(after.summary(), err=fmt is not OutputFormat.table)
    if not after.up_to_date:
        raise typer.Exit(1)


def _status_record(store: DuckDBStore) -> dict[str, Any]:
    record: dict[str, Any] = dict(store.describe())
    try:
        record["schema_version"] = store.ping()
        record["storage"] = "ok"
    except StorageError as exc:
        record["storage"] = f"down: {exc.message}"
    head = getattr(store, "head", None)
    if head is not None:
        record["lake_commit"] = head.commit_id
        record["lake_commit_at"] = head.created_at
        record["lake_commit_by"] = head.writer
    newest = store.versions(limit=1)
    record["version"] = newest[0].version_id if newest else None
    record["version_kind"] = newest[0].kind if newest else None
    record["version_at"] = newest[0].created_at if newest else None
    record["last_trading_day"] = store.last_trading_day()
    run = store.last_ingest_run()
    record["last_run"] = None if run is None else run["run_id"]
    record["last_run_status"] = None if run is None else run["status"]
    definitions = store.list_definitions()
    record["indices"] = len(definitions)
    record["indices_built"] = len(store.current_build_states())
    record["definitions_broken"] = len(store.broken_definitions())
    return record


@app.command()
def quickstart(
    symbols: Annotated[
        int, typer.Option(help="Securities in the synthetic market.")
    ] = DEFAULT_SYMBOLS,
    days: Annotated[int, typer.Option(help="Sessions in the synthetic market.")] = DEFAULT_DAYS,
    fmt: Annotated[
        OutputFormat,
        typer.Option(
            "--format",
            "-f",
            help="table; csv or json: one record per index (a failed one with its reason) "
            "and nothing else on stdout.",
        ),
    ] = OutputFormat.table,
) -> None:
    """Ingest the embedded synthetic market if the store is empty, build every index,
    and print a summary (what ``make run`` does). An index that cannot be built is
    listed as failed (with the reason) after the others; exit code 1 then."""
    table = fmt is OutputFormat.table
    with _errors(), _store() as store:
        if not store.trading_days():
            with _progress("ingest (synthetic)") as step:
                report = run_ingestion(
                    store,
                    "synthetic",
                    {"seed": DEFAULT_SEED, "symbols": symbols, "days": days},
                    progress=step,
                )
            if table:
                _print_ingest(report, _where())
            else:
                typer.echo(
                    f"ingested run {report.run_id} ({report.provider}): {report.status}, "
                    f"{report.rows_accepted} rows accepted, {report.rows_rejected} rejected",
                    err=True,
                )
        builder = _builder(store)
        ids = _buildable(builder, [d.id for d, _ in store.list_definitions()])
        with _progress("build") as step:
            results = builder.build(ids, on_index=lambda r: step(f"{r.index_id} {r.outcome}"))
        reader = IndexReader(store, store.calendar)
        rows = []
        for r in results:
            if r.failed:
                continue
            s = reader.performance(r.index_id).summary
            rows.append(
                {
                    "index": r.index_id,
                    "base": r.base_date,
                    "through": r.end_date,
                    "total_return": s.total_return,
                    "annualized_return": s.annualized_return,
                    "annualized_volatility": s.annualized_volatility,
                    "sharpe": s.sharpe,
                    "max_drawdown": s.max_drawdown,
                    "turnover": s.turnover,
                    "build": r.mode,
                }
            )
    failed = [r for r in results if r.failed]
    if not table:  # every index, a failed one with its reason; the notes on stderr
        rows += [{"index": r.index_id, "build": "failed", "reason": r.reason} for r in failed]
        render(rows, [*QUICKSTART_COLUMNS, "reason"], fmt)
        typer.echo(f"data lives in {storage_label(_where())}", err=True)
        if failed:
            typer.echo(build_summary(results), err=True)
            raise typer.Exit(1)
        return
    if rows:
        render(rows, QUICKSTART_COLUMNS, fmt, title="Indices", console=out)
    width = max((len(r.index_id) for r in failed), default=0)
    for r in failed:  # the same line as 'index-builder build'
        typer.echo(_styled(build_line(r, width), r.outcome))
    out.print(f"data lives in {storage_label(_where())}")
    out.print("next: index-builder performance --index ew100 | composition | changes")
    if failed:
        typer.echo(build_summary(results), err=True)
        raise typer.Exit(1)


# ---------------------------------------------------------------------------- warehouse
SchemaOpt = Annotated[
    str, typer.Option("--schema", help="Warehouse schema (BigQuery: dataset) of tables and views.")
]


@warehouse_app.command("ddl")
def warehouse_ddl(
    dialect: Annotated[
        str, typer.Option(help="bigquery | snowflake | redshift | postgres | duckdb.")
    ],
    schema: SchemaOpt = "index_builder",
    source: Annotated[
        str | None,
        typer.Option(
            help="lake: register the Iceberg lake's tables (default for bigquery, snowflake, "
            "redshift); publish: plain tables 'warehouse publish' fills (default for postgres, "
            "duckdb; snowflake too).",
            show_default=False,
        ),
    ] = None,
    catalog: Annotated[
        str | None, typer.Option(help="BigQuery project / Snowflake database.", show_default=False)
    ] = None,
    warehouse: Annotated[
        str | None,
        typer.Option(help="The lake's location (s3://..., gs://...).", show_default=False),
    ] = None,
    connection: Annotated[
        str | None,
        typer.Option(help="BigQuery: the connection, PROJECT.REGION.NAME.", show_default=False),
    ] = None,
    external_volume: Annotated[
        str | None, typer.Option(help="Snowflake: the external volume.", show_default=False)
    ] = None,
    catalog_integration: Annotated[
        str | None, typer.Option(help="Snowflake: the catalog integration.", show_default=False)
    ] = None,
    lake_schema: Annotated[
        str | None,
        typer.Option(
            help="Redshift: the external schema (default SCHEMA_lake).", show_default=False
        ),
    ] = None,
    glue_database: Annotated[
        str | None, typer.Option(help="Redshift: the Glue database.", show_default=False)
    ] = None,
    iam_role: Annotated[
        str | None, typer.Option(help="Redshift: the IAM role ARN.", show_default=False)
    ] = None,
    region: Annotated[
        str | None, typer.Option(help="Redshift: the Glue catalog's region.", show_default=False)
    ] = None,
    views_only: Annotated[
        bool,
        typer.Option("--views-only", help="Print the CREATE OR REPLACE VIEW statements only."),
    ] = False,
    from_lake: Annotated[
        bool,
        typer.Option(
            "--from-lake",
            help="Read the lake's current metadata files and location from the configured "
            "Iceberg store (INDEX_BUILDER_STORAGE=iceberg) instead of placeholders.",
        ),
    ] = False,
) -> None:
    """Print the SQL that registers the lake's tables in a warehouse (BigLake Iceberg
    tables, Snowflake externally managed Iceberg tables, Redshift Spectrum over Glue) or
    creates the tables 'warehouse publish' fills, then the analytics views: daily levels
    of every variant, composition on every day from the spells, changes, sector weights.
    Values not given print as <PLACEHOLDER>."""
    from dataclasses import replace

    from index_builder.warehouse.ddl import DdlOptions, check_options, lake_metadata, render

    with _errors():
        options = DdlOptions(
            dialect=dialect,
            schema=schema,
            source=source,  # type: ignore[arg-type]  # checked by check_options
            catalog=catalog,
            warehouse=warehouse,
            lake_schema=lake_schema,
            connection=connection,
            external_volume=external_volume,
            catalog_integration=catalog_integration,
            glue_database=glue_database,
            iam_role=iam_role,
            region=region,
            views_only=views_only,
        )
        check_options(options)
        if from_lake:
            with _lake() as store:
                location, metadata = lake_metadata(store)
            options = replace(options, warehouse=warehouse or location, metadata=metadata)
        text = render(options)
    sys.stdout.write(text)


@warehouse_app.command("publish")
def warehouse_publish(
    target: Annotated[
        str,
        typer.Option(
            help="duckdb:///PATH (duckdb:////abs/path), postgresql://USER[:PW]@HOST:PORT/DB or "
            "snowflake://USER[:PW]@ACCOUNT/DATABASE[?warehouse=W&role=R]."
        ),
    ],
    schema: SchemaOpt = "index_builder",
    index: Annotated[
        list[str] | None,
        typer.Option("--index", "-i", help="Index id (repeatable; default every built index)."),
    ] = None,
    full: Annotated[
        bool,
        typer.Option(help="Recompute and merge every index, even those the target holds."),
    ] = False,
    checksum: Annotated[
        bool, typer.Option(help="Print each table's row count and checksum afterwards.")
    ] = False,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Load the results (definitions, builds, levels, spells, changes, holdings,
    constituent prices, securities) into a warehouse schema, merging on each table's
    keys: changed rows are updated, new ones inserted, gone ones deleted. A rerun
    changes nothing; an index whose build the target holds is skipped (--full: merged
    again). Creates the tables and views when missing."""
    from index_builder.warehouse.ddl import DdlOptions, check_options
    from index_builder.warehouse.publish import parse_target, publish

    with _errors():
        parsed = parse_target(target)
        check_options(DdlOptions(parsed.dialect, schema=schema, source="publish"))
        with _store() as store, _progress("publish") as step:
            report = publish(
                store,
                IndexReader(store, store.calendar),
                parsed,
                schema=schema,
                index_ids=index,
                full=full,
                checksums=checksum,
                progress=step,
            )
    rows = [{**t.__dict__, "checksum": report.checksums.get(t.table)} for t in report.tables]
    columns = ["table", "inserted", "updated", "deleted", "rows"]
    if checksum:
        columns.append("checksum")
    render(rows, columns, fmt, title=f"Published to {report.target} ({report.schema})")
    err.print(
        f"published {len(report.published)} indices, skipped {len(report.skipped)} "
        f"(build unchanged); {report.changed} rows changed in {report.seconds:.1f} s",
        highlight=False,
    )


if __name__ == "__main__":  # pragma: no cover
    app()
