"""Run ``index-builder`` commands in process against one database (CLI tests)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from index_builder.cli.main import app
from index_builder.settings import get_settings


def run(db: Path, *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``index-builder --db DB -q ARGS``."""
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["--db", str(db), "-q", *args])
    return result.exit_code, result.stdout, result.stderr


def ok(db: Path, *args: str) -> str:
    """The stdout of a command that must succeed (its stderr in the failure)."""
    code, out, err = run(db, *args)
    assert code == 0, (args, out, err)
    return out
