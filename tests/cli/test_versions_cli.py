"""`index-builder versions`, `rollback` and `--as-of-version` through the command line:
a bad correction rolled back and rolled forward again, every publication exactly as
before each time."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from cli_runner import ok, run
from rollback_market import USER_INDEX, Market, make_market

INDICES = ("ew100", "mine")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The good market and the bad correction as CSV files, and the user index."""
    folder = tmp_path_factory.mktemp("versions-files")
    market: Market = make_market()
    paths = {
        "securities": folder / "securities.csv",
        "prices": folder / "prices.csv",
        "bad_securities": folder / "bad-securities.csv",
        "bad_prices": folder / "bad-prices.csv",
        "mine": folder / "mine.json",
    }
    market.securities.to_pandas().to_csv(paths["securities"], index=False)
    market.prices.to_pandas().to_csv(paths["prices"], index=False)
    market.bad_securities.to_pandas().to_csv(paths["bad_securities"], index=False)
    market.bad_prices.to_pandas().to_csv(paths["bad_prices"], index=False)
    paths["mine"].write_text(json.dumps(USER_INDEX))
    return paths


def _ingest(db: Path, securities: Path, prices: Path) -> None:
    ok(db, "ingest", "--provider", "file", "--securities", str(securities), "--prices", str(prices))


def _publication(db: Path, *point: str) -> dict[str, str]:
    """The read commands' outputs (CSV and JSON: every value in full)."""
    out = {}
    for index in INDICES:
        out[f"{index} performance"] = ok(db, "performance", "-i", index, "-f", "csv", *point)
        for day in ("2023-01-20", "2023-02-08", "2023-02-28"):
            out[f"{index} {day}"] = ok(
                db, "composition", "-i", index, "--date", day, "-f", "json", *point
            )
        out[f"{index} changes"] = ok(db, "changes", "-i", index, "-f", "json", *point)
    return out


def _versions(db: Path, *args: str) -> list[dict[str, object]]:
    records = json.loads(ok(db, "versions", "-f", "json", *args))
    assert isinstance(records, list)
    return records


@pytest.fixture(scope="module")
def built(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The good data ingested, ew100 and the user index built."""
    db = tmp_path_factory.mktemp("versions-db") / "v.duckdb"
    ok(db, "indices", "add", str(files["mine"]))
    _ingest(db, files["securities"], files["prices"])
    ok(db, "build", "-i", "ew100", "-i", "mine")
    return db


@pytest.fixture
def db(built: Path, tmp_path: Path) -> Path:
    path = tmp_path / "v.duckdb"
    shutil.copy(built, path)
    return path


def test_rollback_and_its_rollback_give_every_publication_back(
    db: Path, files: dict[str, Path]
) -> None:
    good = _publication(db)
    after_first_build = _versions(db, "--limit", "1")[0]["version_id"]
    assert after_first_build == 4  # the definition, the ingestion, two builds
    _ingest(db, files["bad_securities"], files["bad_prices"])
    ok(db, "build", "-i", "ew100", "-i", "mine")
    bad = _publication(db)
    assert all(bad[k] != good[k] for k in ("ew100 performance", "mine performance"))

    code, out, err = run(db, "rollback", "--to", "4")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(
        "rolled back the data to version 4 (ingestion run 1) as run 3, recorded as version 8: "
        "15 price rows restored, 36 withdrawn; 0 securities restored, 1 withdrawn;"
    )
    assert lines[0].endswith("runs undone: 2; runs re-done: none")
    assert [line.split()[:3] for line in lines[1:]] == [
        ["built", "ew100", "restated"],
        ["built", "mine", "restated"],
    ]
    assert "indices rebuilt: 2 built, 0 unchanged, 0 failed" in err
    assert _publication(db) == good  # exactly the earlier numbers
    rollback, *_ = _versions(db, "--kind", "rollback")
    assert (rollback["version_id"], rollback["run_id"], rollback["data_run_id"]) == (8, 3, 3)
    runs = {r["run_id"]: r for r in json.loads(ok(db, "runs", "-f", "json"))}
    assert runs[3]["provider"] == "rollback" and runs[3]["rows_updated"] == 15
    assert runs[2]["rolled_back_by"] == 3

    # the rollback of the rollback: the version before it, i.e. the data it undid
    record = json.loads(ok(db, "rollback", "--to", "7", "-f", "json"))
    assert (record["version_id"], record["runs_undone"], record["runs_redone"]) == (11, [3], [2])
    assert [b["mode"] for b in record["builds"]] == ["restated", "restated"]
    assert _publication(db) == bad

    # nothing to undo: said, exit 0, nothing recorded
    newest = _versions(db, "--limit", "1")[0]["version_id"]
    code, out, err = run(db, "rollback", "--to", str(newest))
    assert code == 0 and out.startswith("nothing to undo") and not err
    assert _versions(db, "--limit", "1")[0]["version_id"] == newest


def test_rollback_without_build_leaves_the_restatement_to_the_next_build(
    db: Path, files: dict[str, Path]
) -> None:
    good = _publication(db)
    _ingest(db, files["bad_securities"], files["bad_prices"])
    ok(db, "build", "-i", "ew100", "-i", "mine")
    code, out, err = run(db, "rollback", "--to", "4", "--no-build", "-f", "csv")
    assert code == 0, err
    (row,) = list(csv.DictReader(io.StringIO(out)))
    assert row["run_id"] == "3" and row["indices_built"] == "0" and row["prices_restored"] == "15"
    assert "not rebuilt (--no-build): ew100, mine;" in err
    listed = {r["id"]: r for r in json.loads(ok(db, "indices", "list", "-f", "json"))}
    assert listed["ew100"]["data_waiting_from"] is not None
    assert "restated" in ok(db, "build", "-i", "ew100", "-i", "mine")
    assert _publication(db) == good


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["rollback", "--to", "999"], "--to: unknown version 999 (the newest is 4;"),
        (["rollback", "--to", "abc"], "--to: 'abc' is not a version id"),
        (["rollback", "--to", "0"], "--to: '0' is not a version id"),
        (["rollback", "--to", "1.5"], "--to: '1.5' is not a version id"),
        (["versions", "--limit", "0"], "--limit: '0' is not a positive integer"),
        (["versions", "--kind", "builds"], "--kind: 'builds' is not a kind of version"),
        (["build", "--as-of-version", "x"], "--as-of-version: 'x' is not a version id"),
        (["performance", "--as-of-version", "99"], "as_of_version 99 is not a version"),
        (
            ["changes", "--as-of", "2024-01-01", "--as-of-version", "2"],
            "--as-of and --as-of-version cannot be given together",
        ),
        (
            ["performance", "-i", "mine", "--as-of-version", "2"],
            "mine has no build as of version 2: run 'index-builder build --index mine "
            "--as-of-version 2'",
        ),
    ],
)
def test_refusals_are_one_line_with_exit_code_2(built: Path, args: list[str], named: str) -> None:
    before = _versions(built)
    code, out, err = run(built, *args)
    assert code == 2 and not out
    assert err.count("\n") == 1 and named in " ".join(err.split()), err
    assert _versions(built) == before


def test_versions_in_each_format(built: Path) -> None:
    table = ok(built, "versions")
    assert "Versions (newest first)" in table and "definition" in table
    rows = list(csv.DictReader(io.StringIO(ok(built, "versions", "-f", "csv"))))
    records = _versions(built)
    assert (
        [int(r["version_id"]) for r in rows] == [r["version_id"] for r in records] == [4, 3, 2, 1]
    )
    assert [r["kind"] for r in rows] == ["build", "build", "ingest", "definition"]
    assert list(rows[0]) == list(records[0])
    assert json.loads(rows[0]["detail"]) == records[0]["detail"]
    assert records[2]["detail"]["provider"] == "file"  # type: ignore[index]
    assert records[0]["index_id"] == "mine" and records[0]["snapshots"] is None
    builds = _versions(built, "--kind", "build", "--limit", "1")
    assert [r["index_id"] for r in builds] == ["mine"]


def test_build_and_read_as_of_a_version(db: Path, files: dict[str, Path], tmp_path: Path) -> None:
    good = _publication(db)
    _ingest(db, files["bad_securities"], files["bad_prices"])
    ok(db, "build")
    lines = ok(db, "build", "-i", "ew100", "-i", "mine", "--as-of-version", "2").splitlines()
    assert [line.split()[:3] for line in lines] == [
        ["built", "ew100", "full"],
        ["built", "mine", "full"],
    ]
    assert all(line.endswith("as of version 2") for line in lines)
    assert _publication(db, "--as-of-version", "2") == good  # the data after version 2
    assert _publication(db) != good
    shown = json.loads(ok(db, "indices", "show", "ew100"))
    assert [b.get("as_of_version") for b in shown["as_of_builds"]] == [2]
    (record,) = json.loads(ok(db, "build", "-i", "ew100", "--as-of-version", "2", "-f", "json"))
    assert record["as_of_version"] == 2 and record["mode"] == "full"
    title = ok(db, "performance", "--as-of-version", "2")
    assert "ew100 performance as of version 2" in " ".join(title.split())
    target = tmp_path / "ew100.zip"
    out = ok(db, "export", "--as-of-version", "2", "-f", "csv", "-o", str(target))
    assert out.startswith(f"wrote {target}") and target.stat().st_size > 0


def test_an_index_that_cannot_be_rebuilt_fails_alone_with_exit_code_1(
    db: Path, files: dict[str, Path], tmp_path: Path
) -> None:
    """An index of the bogus security only: after the rollback nothing is eligible on
    its base date; the other indices are rebuilt, and the data rollback stands."""
    securities = pd.read_csv(files["bad_securities"])
    securities["type"] = "Bogus Type"
    securities.to_csv(tmp_path / "bogus.csv", index=False)
    days = sorted(pd.read_csv(files["bad_prices"])["date"].unique())
    bogus = {
        "id": "bogus-only",
        "name": "Bogus",
        "top_n": 5,
        "base_date": days[5],  # a day with a bar of the bogus security
        "universe": {"types": ["Bogus Type"]},
    }
    (tmp_path / "bogus.json").write_text(json.dumps(bogus))
    ok(db, "indices", "add", str(tmp_path / "bogus.json"))
    _ingest(db, tmp_path / "bogus.csv", files["bad_prices"])
    ok(db, "build", "-i", "ew100", "-i", "mine", "-i", "bogus-only")
    version = _versions(db, "--kind", "build")[-1]["version_id"]
    code, out, err = run(db, "rollback", "--to", str(version))
    assert code == 1, err
    outcomes = {line.split()[1]: line.split()[0] for line in out.splitlines()[1:]}
    assert outcomes == {"ew100": "built", "mine": "built", "bogus-only": "failed"}
    assert "indices rebuilt: 2 built, 0 unchanged, 1 failed" in err
    assert _versions(db, "--limit", "3")[2]["kind"] == "rollback"  # the rollback stands
