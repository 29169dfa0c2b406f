"""``index-builder build`` and ``quickstart`` when one index cannot be built: the
others are built, every index gets its line (or JSON record), exit code 1."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from cli_runner import run

BROKEN = "cli-no-sector"
"""A user index whose universe matches no security: nothing eligible on its base date."""


def _add_broken(db: Path, folder: Path) -> None:
    definition = folder / "broken.json"
    definition.write_text(
        json.dumps(
            {"id": BROKEN, "name": "Nothing", "top_n": 5, "universe": {"sectors": ["No Such"]}}
        )
    )
    code, _, err = run(db, "indices", "add", str(definition))
    assert code == 0, err


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic market, nothing built, and the broken index added."""
    folder = tmp_path_factory.mktemp("build-outcomes")
    path = folder / "cli.duckdb"
    code, _, err = run(path, "ingest", "--symbols", "250", "--days", "45", "--start", "2023-01-03")
    assert code == 0, err
    _add_broken(path, folder)
    return path


def _fields(line: str) -> list[str]:
    return line.split()


def test_one_failing_index_does_not_stop_the_others(db: Path) -> None:
    code, out, err = run(db, "build")
    assert code == 1, err
    lines = out.splitlines()
    by_index = {_fields(line)[1]: line for line in lines}
    assert len(by_index) == len(lines) > 10  # one line per index, nothing else
    failed = by_index.pop(BROKEN)
    assert _fields(failed)[0] == "failed"
    assert "  no eligible security on the base date 2023-01-03" in failed  # no id prefix
    for line in by_index.values():
        outcome, _, mode, window, *_ = _fields(line)
        assert outcome == "built" and mode == "full", line
        assert window.endswith("..2023-03-08"), line
        assert " days written  version " in line and line.endswith(" ms")
    assert "ew100" in by_index and "ew-sector-energy" in by_index
    assert err.splitlines()[-1] == f"{len(by_index)} built, 0 unchanged, 1 failed"

    # the second build: nothing new for the others, the same failure, as JSON
    code, out, err = run(db, "build", "--format", "json")
    assert code == 1, err
    records = json.loads(out)  # stdout is the JSON list and nothing else
    assert [r["index"] for r in records] == [_fields(line)[1] for line in lines]
    outcomes = {r["index"]: r for r in records}
    broken = outcomes.pop(BROKEN)
    assert broken["outcome"] == "failed" and broken["mode"] == "failed"
    assert broken["error_code"] == "build-failed" and broken["version"] is None
    assert "no eligible security on the base date" in broken["reason"]
    assert {r["outcome"] for r in outcomes.values()} == {"unchanged"}
    assert {r["mode"] for r in outcomes.values()} == {"up-to-date"}
    assert {r["end_date"] for r in outcomes.values()} == {"2023-03-08"}
    assert all(r["reason"] is None and r["trading_days"] == 0 for r in outcomes.values())


def test_the_lines_for_named_indices_and_the_exit_codes(db: Path) -> None:
    run(db, "build", "-i", "ew100")
    code, out, _ = run(db, "build", "-i", "ew100", "-i", "ew100")  # named twice: built once
    assert code == 0
    (line,) = out.splitlines()
    assert _fields(line)[:4] == ["unchanged", "ew100", "built", "through"]
    assert "built through 2023-03-08  version " in line

    code, out, err = run(db, "build", "-i", "ew-tech50", "-i", BROKEN)
    assert code == 1
    assert [_fields(line)[0] for line in out.splitlines()] == ["unchanged", "failed"]
    assert "Traceback" not in out + err

    code, out, _ = run(db, "build", "-i", BROKEN, "--format", "csv")
    assert code == 1
    (row,) = csv.DictReader(io.StringIO(out))
    assert row["index"] == BROKEN and row["outcome"] == "failed" and row["reason"]

    # bad input is still one line on stderr, exit code 2, nothing built
    code, out, err = run(db, "build", "-i", "nope", "-i", "ew100")
    assert code == 2 and out == "" and "unknown index 'nope'" in err


def test_quickstart_lists_the_failed_index_after_the_others(tmp_path: Path) -> None:
    db = tmp_path / "q.duckdb"
    _add_broken(db, tmp_path)
    code, out, err = run(db, "quickstart", "--symbols", "300", "--days", "30")
    assert code == 1, err
    assert "ew100" in out and "ew-sector-energy" in out  # the summary table
    (failed,) = [line for line in out.splitlines() if line.startswith("failed")]
    assert _fields(failed)[1] == BROKEN and "no eligible security" in failed
    assert str(db.resolve()) in out.replace("\n", "")
    assert err.splitlines()[-1].endswith("built, 0 unchanged, 1 failed")
