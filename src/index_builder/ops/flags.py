"""Feature flags: named, typed switches that change without a restart.

Every flag is a field of :class:`FeatureFlags` (type, default, description).
Values come from, in increasing precedence:

1. the defaults below;
2. ``INDEX_BUILDER_FLAGS``: a JSON object in the environment (deploy time);
3. ``INDEX_BUILDER_FLAGS_FILE``: a YAML or JSON file (run time). The file is
   checked for changes at most every ``INDEX_BUILDER_FLAGS_RELOAD_SECONDS`` when
   a flag is read, so every process of a deployment picks up an edit on its own;
   ``POST /admin/flags/reload`` reloads at once.

A file that cannot be read or validated never half-applies: the last good
values stay in force, the error is logged once per change of the file, and
readiness reports the flags as ``degraded`` with the reason.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from index_builder.engine.definitions import IndexDefinition
from index_builder.errors import ConflictError, InvalidInputError

log = logging.getLogger("index_builder.ops.flags")

DEFAULT_RETURN_TYPE = IndexDefinition.model_fields["return_type"].default
DEFAULT_TAX = IndexDefinition.model_fields["tax"].default


class FeatureFlags(BaseModel):
    """The flags and their defaults (the defaults are the product's normal behaviour)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    async_builds: bool = Field(
        default=True,
        description="POST /build-index may run as a background job (202), and POST /builds "
        "(always a job) is allowed. Off: every build runs in the request, 'async: true' is "
        "refused with 409, and so is POST /builds.",
    )
    methodology_part2: bool = Field(
        default=True,
        description="The part 2 methodology rules (selection buffer, aggregate cap, "
        "effective lag, company ranking, non-default return type or tax). Off: definitions "
        "using them are refused when added and when built (409).",
    )
    weighting_sqrt_market_cap: bool = Field(
        default=False,
        description="The new 'sqrt_market_cap' weighting (weights proportional to the square "
        "root of market cap). Off: definitions using it are refused when added and built.",
    )
    shadow_storage: bool = Field(
        default=False,
        description="Write to both storage backends: the primary (INDEX_BUILDER_STORAGE) "
        "serves every read, the other one (the shadow) takes every write too and answers a "
        "sample of the reads (INDEX_BUILDER_SHADOW_SAMPLE_RATE) for comparison; mismatches "
        "and shadow failures are counted and logged, never fail a request. Read when the "
        "process starts: a change needs a restart (docs/operations.md).",
    )


FLAG_NAMES = tuple(FeatureFlags.model_fields)


class FlagStore:
    """The flags in force in this process, reloaded from the flags file on change."""

    def __init__(
        self,
        env_json: str | None = None,
        path: Path | None = None,
        *,
        reload_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._env = _parse_env(env_json)
        self._path = path
        self._reload_seconds = reload_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._checked_at = -float("inf")
        self._file_stamp: tuple[float, int] | None = None
        self._file_values: dict[str, Any] = {}
        self._error: str | None = None
        self._loaded_at: dt.datetime | None = None
        self._flags = FeatureFlags(**self._env)
        self.reload()

    # ------------------------------------------------------------------ reading
    @property
    def current(self) -> FeatureFlags:
        """The flags in force (checks the file when the reload interval has passed)."""
        if self._path is not None and self._clock() - self._checked_at >= self._reload_seconds:
            self._check_file()
        return self._flags

    def enabled(self, name: str) -> bool:
        """The value of a boolean flag."""
        return bool(getattr(self.current, name))

    def describe(self) -> list[dict[str, Any]]:
        """Every flag with its value, default, type, source and description."""
        flags = self.current
        out = []
        for name, info in FeatureFlags.model_fields.items():
            source = (
                "file" if name in self._file_values else "env" if name in self._env else "default"
            )
            out.append(
                {
                    "name": name,
                    "value": getattr(flags, name),
                    "default": info.default,
                    "type": type(info.default).__name__,
                    "source": source,
                    "description": info.description,
                }
            )
        return out

    def health(self) -> dict[str, object]:
        """Readiness component: the flags in force, degraded while the file is invalid."""
        flags = self.current
        body: dict[str, object] = {
            "status": "degraded" if self._error else "ok",
            "flags": flags.model_dump(),
            "file": str(self._path) if self._path else None,
            "loaded_at": self._loaded_at.isoformat() if self._loaded_at else None,
        }
        if self._error:
            body["error"] = self._error
        return body

    # ------------------------------------------------------------------ loading
    def reload(self) -> FeatureFlags:
        """Read the flags file now (if any). Invalid content keeps the last good flags."""
        with self._lock:
            self._checked_at = self._clock()
            self._file_stamp = _stamp(self._path)
            self._load()
        return self._flags

    def _check_file(self) -> None:
        with self._lock:
            self._checked_at = self._clock()
            stamp = _stamp(self._path)
            if stamp == self._file_stamp:
                return
            self._file_stamp = stamp
            self._load()

    def _load(self) -> None:
        try:
            values = _read_file(self._path) if self._path is not None else {}
            flags = FeatureFlags(**{**self._env, **values})
        except (OSError, ValueError, ValidationError, yaml.YAMLError) as exc:
            error = f"flags file {self._path}: {_one_line(exc)}"
            if error != self._error:
                log.error("feature flags not reloaded, keeping the last good values: %s", error)
            self._error = error
            return
        changed = flags != self._flags
        self._flags, self._file_values, self._error = flags, values, None
        self._loaded_at = dt.datetime.now(dt.UTC)
        if changed:
            log.info("feature flags in force: %s", flags.model_dump())


def _parse_env(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        values = json.loads(text)
        if not isinstance(values, dict):
            raise ValueError("expected a JSON object of flag names to values")
        FeatureFlags(**values)
    except (ValueError, ValidationError) as exc:
        raise InvalidInputError(f"INDEX_BUILDER_FLAGS: {_one_line(exc)}", field="flags") from None
    return values


def _read_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}  # no file: the environment and the defaults
    text = path.read_text(encoding="utf-8")
    values = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError("expected a mapping of flag names to values")
    return values


def _stamp(path: Path | None) -> tuple[float, int] | None:
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime, st.st_size)


def _one_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"{where}: {first['msg']}"
    return " ".join(str(exc).split())


def require(flags: FlagStore | None, name: str, what: str) -> None:
    """Refuse (409) what a disabled flag switches off; no flag store: everything on."""
    if flags is not None and not flags.enabled(name):
        raise ConflictError(f"{what} is switched off by the feature flag {name!r}", field=name)


def definition_gates(definition: IndexDefinition) -> list[tuple[str, str]]:
    """(flag, what) for every flagged feature a definition uses."""
    gates = []
    part2 = [
        ("buffer", definition.buffer is not None),
        ("group_cap", definition.group_cap is not None),
        ("effective_lag", definition.effective_lag > 0),
        ("rank_by: company", definition.rank_by == "company"),
        ("return_type", definition.return_type != DEFAULT_RETURN_TYPE),
        ("tax", definition.tax != DEFAULT_TAX),
    ]
    used = [name for name, uses in part2 if uses]
    if used:
        gates.append(("methodology_part2", f"{definition.id}: {', '.join(used)} (part 2 rules)"))
    if definition.weighting == "sqrt_market_cap":
        gates.append(("weighting_sqrt_market_cap", f"{definition.id}: weighting sqrt_market_cap"))
    return gates


def check_definition(flags: FlagStore | None, definition: IndexDefinition) -> None:
    """Refuse (409) a definition that uses a feature switched off by a flag."""
    for name, what in definition_gates(definition):
        require(flags, name, what)
