"""Warehouse fixtures: one built market, what the API answers for it, a real PostgreSQL
server, fakesnow, and the market published once into each engine."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from index_builder.services.queries import IndexReader
from index_builder.storage.duckdb.store import DuckDBStore

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from postgres_server import PostgresServer  # noqa: E402
from templates import build_template  # noqa: E402
from warehouse_fixtures import ENGINES, INDICES, Answers, Warehouse, engine_url  # noqa: E402

# fakesnow 0.12 with DuckDB 2 and pandas 3: deprecation notices of its own calls
FAKESNOW_NOISE = (
    "ignore:Arrow output on a DB-API result:UserWarning",
    "ignore:For backward compatibility, 'str' dtypes",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The warehouse tests ignore fakesnow's deprecation notices (nothing else)."""
    for item in items:
        if Path(str(item.fspath)).resolve().parent == Path(HERE):
            for rule in FAKESNOW_NOISE:
                item.add_marker(pytest.mark.filterwarnings(rule))


@pytest.fixture(scope="session")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database with a 120 x 80 synthetic market and INDICES built."""
    path = tmp_path_factory.mktemp("warehouse-market") / "market.duckdb"
    return build_template(path, symbols=120, days=80, indices=list(INDICES))


@pytest.fixture(scope="session")
def opened(market: Path) -> Iterator[tuple[DuckDBStore, IndexReader]]:
    """The market's store, open for the session, and the reader the API uses."""
    with DuckDBStore(market, threads=2) as store:
        yield store, IndexReader(store, store.calendar)


@pytest.fixture(scope="session")
def api(opened: tuple[DuckDBStore, IndexReader]) -> Answers:
    _, reader = opened
    answers = Answers()
    for index_id in INDICES:
        for variant in ("price", "total", "net_total"):
            answers.performance[index_id, variant] = reader.performance(
                index_id, None, None, variant
            ).rows
        answers.headline[index_id] = reader.performance(index_id).return_type
        answers.compositions[index_id] = {
            c.effective_date: c.rows() for c in reader.compositions(index_id)
        }
        _, changes = reader.changes(index_id)
        answers.changes[index_id] = sorted(
            (c.date, s, kind)
            for c in changes
            for kind, symbols in (("entered", c.entered), ("exited", c.exited))
            for s in symbols
        )
    return answers


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on a free loopback port, for the session (per worker)."""
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fakesnow_patch() -> Iterator[None]:
    """snowflake.connector.connect (and write_pandas) answered by fakesnow, in memory
    (one DuckDB database shared by every connection of the session)."""
    import fakesnow

    with fakesnow.patch():
        yield


@pytest.fixture(scope="session")
def published(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    opened: tuple[DuckDBStore, IndexReader],
) -> Callable[[str], Warehouse]:
    """The market published into an engine, once per session and engine (with the
    views): ``published("postgres")``."""
    made: dict[str, Warehouse] = {}

    def get(engine: str) -> Warehouse:
        if engine not in made:
            pg = request.getfixturevalue("postgres") if engine == "postgres" else None
            if engine == "snowflake":
                request.getfixturevalue("fakesnow_patch")
            folder = tmp_path_factory.mktemp(f"wh-{engine}")
            wh = Warehouse(engine, engine_url(engine, folder, pg, "views"))
            report = wh.publish(opened)
            assert sorted(report.published) == sorted(INDICES)
            made[engine] = wh
        return made[engine]

    return get


@pytest.fixture(params=ENGINES)
def warehouse(request: pytest.FixtureRequest, published: Callable[[str], Warehouse]) -> Warehouse:
    """The market published into each engine (DuckDB, PostgreSQL, fakesnow)."""
    return published(request.param)
