"""Whether a hostile request or a fault left the database intact: every table's row
count and a checksum of its rows, before and after."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

Fingerprint = dict[str, tuple[int, int]]

VOLATILE = frozenset({"build_version_counter"})
"""Tables a refused build may still touch: a build version is handed out before the
build is stored (versions are never reused, so a gap is harmless)."""


def fingerprint(con: Any, *, skip: frozenset[str] = frozenset()) -> Fingerprint:
    """{table: (rows, checksum)} of every table of the main schema, through an open
    connection or cursor (the in-process store's ``cursor()``)."""
    tables = [
        row[0]
        for row in con.execute(
            "SELECT table_name FROM duckdb_tables()"
            " WHERE schema_name = 'main' AND NOT temporary ORDER BY table_name"
        ).fetchall()
    ]
    out: Fingerprint = {}
    for table in tables:
        if table in skip:
            continue
        # identifiers come from the catalogue itself, quoted: nothing user-given
        count, checksum = con.execute(
            f'SELECT count(*), coalesce(bit_xor(hash(t)), 0) FROM "{table}" t'
        ).fetchall()[0]
        out[table] = (int(count), int(checksum))
    return out


def file_fingerprint(path: Path, *, skip: frozenset[str] = frozenset()) -> Fingerprint:
    """The fingerprint of a database file no process holds (opened read-only)."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        return fingerprint(con, skip=skip)
    finally:
        con.close()


def changed_tables(before: Fingerprint, after: Fingerprint) -> list[str]:
    """Tables whose rows differ (or that appeared or went)."""
    return sorted(t for t in before.keys() | after.keys() if before.get(t) != after.get(t))
