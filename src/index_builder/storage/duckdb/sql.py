"""Named SQL queries kept in ``queries/*.sql``.

A file holds blocks that start with a ``-- name: <query_name>`` line; the text
up to the next marker is the query (one or more statements). Queries take bound
parameters (``?`` or ``$name``), never string-formatted values.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_MARKER = re.compile(r"^--\s*name:\s*(?P<name>[a-z0-9_]+)\s*$", re.MULTILINE)


@cache
def _all_queries() -> dict[str, str]:
    queries: dict[str, str] = {}
    folder = resources.files("index_builder.storage.duckdb") / "queries"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        text = entry.read_text(encoding="utf-8")
        marks = list(_MARKER.finditer(text))
        for i, mark in enumerate(marks):
            end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
            name = mark.group("name")
            if name in queries:
                raise RuntimeError(f"duplicate query name {name!r} in {entry.name}")
            queries[name] = text[mark.end() : end].strip()
    return queries


def query(name: str) -> str:
    """The SQL text of a named query."""
    try:
        return _all_queries()[name]
    except KeyError:
        raise KeyError(f"no SQL query named {name!r}") from None


def names(prefix: str = "") -> list[str]:
    """Query names starting with ``prefix``, in file order."""
    return [n for n in _all_queries() if n.startswith(prefix)]


def statements(name: str) -> list[str]:
    """The statements of a multi-statement query, split on ``;`` at line ends."""
    parts = re.split(r";\s*$", query(name), flags=re.MULTILINE)
    return [p.strip() for p in parts if p.strip() and not _only_comments(p)]


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in text.splitlines())
