"""The command line: happy paths, output columns, and one-line errors with exit code 2."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from index_builder.cli.main import app

from cli_runner import run


@pytest.fixture(scope="module")
def built_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("cli") / "cli.duckdb"
    runner = CliRunner()
    r = runner.invoke(
        app,
        [
            "--db",
            str(db),
            "-q",
            "ingest",
            "--symbols",
            "250",
            "--days",
            "45",
            "--start",
            "2023-01-03",
        ],
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["--db", str(db), "-q", "build", "-i", "ew100", "-i", "ew-tech50"])
    assert r.exit_code == 0, r.output
    return db


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_performance_csv_has_the_methodology_columns(built_db: Path) -> None:
    code, out, _ = run(built_db, "performance", "--index", "ew100", "--format", "csv")
    assert code == 0
    rows = _csv(out)
    assert list(rows[0]) == ["date", "level", "daily_return", "cumulative_return"]
    assert float(rows[0]["level"]) == 1000.0 and float(rows[0]["daily_return"]) == 0.0
    last = rows[-1]
    assert abs(float(last["cumulative_return"]) - (float(last["level"]) / 1000.0 - 1)) < 1e-12


def test_composition_and_changes_outputs(built_db: Path) -> None:
    code, out, _ = run(
        built_db, "composition", "-i", "ew-tech50", "--date", "2023-01-10", "-f", "csv"
    )
    assert code == 0
    rows = _csv(out)
    assert list(rows[0]) == [
        "date",
        "symbol",
        "rank",
        "weight",
        "market_cap",
        "price",
        "units",
        "sector",
    ]
    # 250 synthetic securities hold fewer than 50 IT stocks: all eligible are in
    assert 10 < len(rows) <= 50 and {r["sector"] for r in rows} == {"Information Technology"}
    assert [int(r["rank"]) for r in rows] == sorted(int(r["rank"]) for r in rows)
    assert abs(sum(float(r["weight"]) for r in rows) - 1) < 1e-9
    code, out, _ = run(built_db, "changes", "-i", "ew100", "-f", "csv")
    assert code == 0
    rows = _csv(out)
    assert list(rows[0]) == ["date", "entered", "exited"]
    assert all(r["entered"] or r["exited"] for r in rows)
    code, out, _ = run(built_db, "changes", "-i", "ew100", "-f", "json")
    assert isinstance(json.loads(out)[0]["entered"], list)


def test_composition_on_a_weekend_resolves_to_the_previous_session(built_db: Path) -> None:
    code, out, _ = run(built_db, "composition", "--date", "2023-01-14", "-f", "json")
    assert code == 0
    assert {row["date"] for row in json.loads(out)} == {"2023-01-13"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["performance", "--start", "2023-02-30"], "is not a date"),
        (["performance", "-i", "nope"], "unknown index 'nope'"),
        (["performance", "--start", "2022-12-01"], "before the base date"),
        (["performance", "--start", "2023-02-01", "--end", "2023-01-20"], "before start date"),
        (["composition", "--date", "2030-01-02"], "nothing on or after 2030-01-02"),
        (["build", "-i", "nope"], "unknown index"),
        (["build", "-i", "ew100", "--start", "2022-12-01"], "before the base date"),
        (["build", "--start", "2023-02-01", "--end", "2023-01-02"], "is before start_date"),
        (["indices", "remove", "ew100"], "built-in index"),
        (
            ["ingest", "--provider", "file", "--securities", "x.csv", "--prices", "y.csv"],
            "file not found",
        ),
        (["ingest", "--provider", "carrier-pigeon"], "unknown provider"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(
    built_db: Path, args: list[str], message: str
) -> None:
    code, _, err = run(built_db, *args)
    assert code == 2
    assert message in err
    assert err.strip().count("\n") == 0  # one line
    assert "Traceback" not in err


def test_user_definitions_add_show_list_remove(built_db: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: my-idx\nname: Mine\ntop_n: 0\n")
    code, _, err = run(built_db, "indices", "add", str(bad))
    assert code == 2 and "top_n" in err
    capped = tmp_path / "capped.yaml"
    capped.write_text("id: my-capped\nname: Mine\ntop_n: 10\nweighting: capped_market_cap\n")
    code, _, err = run(built_db, "indices", "add", str(capped))
    assert code == 2 and "cap" in err
    good = tmp_path / "good.json"
    good.write_text(
        json.dumps(
            {
                "id": "my-idx",
                "name": "Mine",
                "top_n": 10,
                "weighting": "capped_market_cap",
                "cap": 0.2,
                "rebalance": "monthly",
                "universe": {"sectors": ["Health Care"]},
            }
        )
    )
    assert run(built_db, "indices", "add", str(good))[0] == 0
    code, _, err = run(built_db, "indices", "add", str(good))
    assert code == 2 and "already exists" in err
    code, out, _ = run(built_db, "indices", "show", "my-idx")
    assert json.loads(out)["definition"]["cap"] == 0.2
    assert run(built_db, "build", "-i", "my-idx")[0] == 0
    code, out, _ = run(built_db, "indices", "list")
    assert "my-idx" in out
    assert run(built_db, "indices", "remove", "my-idx")[0] == 0
    assert run(built_db, "performance", "-i", "my-idx")[0] == 2


def test_quickstart_builds_every_builtin_and_says_where_data_lives(tmp_path: Path) -> None:
    db = tmp_path / "q.duckdb"
    code, out, _ = run(db, "quickstart", "--symbols", "300", "--days", "30")
    assert code == 0
    assert "ew100" in out and "ew-tech50" in out and "ew-sector-energy" in out
    assert str(db.resolve()) in out.replace("\n", "")


def test_proforma_shows_the_announced_composition(built_db: Path, tmp_path: Path) -> None:
    lagged = tmp_path / "lagged.yaml"
    lagged.write_text("id: cli-lag1\nname: Lagged\ntop_n: 12\neffective_lag: 1\n")
    assert run(built_db, "indices", "add", str(lagged))[0] == 0
    try:
        assert run(built_db, "build", "-i", "cli-lag1")[0] == 0
        code, out, _ = run(built_db, "proforma", "--index", "cli-lag1", "--format", "csv")
        assert code == 0
        rows = _csv(out)
        assert list(rows[0]) == [
            "rank",
            "symbol",
            "weight",
            "current_weight",
            "market_cap",
            "sector",
        ]
        assert len(rows) == 12
        assert all(abs(float(r["weight"]) - 1 / 12) < 1e-12 for r in rows)
        _, table, _ = run(built_db, "proforma", "--index", "cli-lag1")
        assert "expected one-way turnover" in table and "reference date" in table
        code, _, err = run(built_db, "proforma", "--index", "ew100")
        assert code == 2 and len(err.strip().splitlines()) == 1
        assert "no announced composition" in err
    finally:
        run(built_db, "indices", "remove", "cli-lag1")


def test_feature_flags_switch_off_part_2_indices(
    built_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INDEX_BUILDER_FLAGS", '{"methodology_part2": false}')
    code, out, err = run(built_db, "build")
    assert code == 0
    skipped = [line for line in err.splitlines() if line.startswith("skipped:")]
    assert len(skipped) == 2 and "ew100-buffer" in err and "mcap50-ucits" in err
    assert "ew100-buffer" not in out and "ew-sector-energy" in out
    code, _, err = run(built_db, "build", "-i", "ew100-buffer")
    assert code == 2 and "switched off by the feature flag 'methodology_part2'" in err
    lagged = tmp_path / "lagged.yaml"
    lagged.write_text("id: cli-flagged\nname: Lagged\ntop_n: 12\neffective_lag: 1\n")
    code, _, err = run(built_db, "indices", "add", str(lagged))
    assert code == 2 and "methodology_part2" in err
    monkeypatch.setenv("INDEX_BUILDER_FLAGS", "{broken")
    code, _, err = run(built_db, "build", "-i", "ew100")
    assert code == 2 and "INDEX_BUILDER_FLAGS" in err
