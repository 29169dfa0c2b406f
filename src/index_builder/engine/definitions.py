"""Index definitions: data, validated with pydantic, loaded from YAML or JSON.

A definition names the rules (selection size, weighting, rebalance schedule,
universe filters); the strategies that implement each rule live in registries
(:mod:`index_builder.engine.weighting`, :mod:`index_builder.engine.schedules`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from index_builder.errors import InvalidInputError
from index_builder.providers.schema import COMMON_STOCK, GICS_SECTORS

INDEX_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
DEFAULT_INDEX_ID = "ew100"

Weighting = Literal["equal", "market_cap", "capped_market_cap"]
Rebalance = Literal["daily", "weekly", "monthly", "quarterly"]


class Universe(BaseModel):
    """Eligibility filters. Lists match case-insensitively; ``None`` means no filter."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sectors: tuple[str, ...] | None = Field(
        default=None, description="GICS sectors to include.", examples=[["Information Technology"]]
    )
    exchanges: tuple[str, ...] | None = Field(
        default=None, description="Exchange MIC codes to include.", examples=[["XNYS", "XNAS"]]
    )
    types: tuple[str, ...] | None = Field(
        default=None, description="Security types to include.", examples=[[COMMON_STOCK]]
    )
    min_price: float | None = Field(
        default=None, ge=0, description="Minimum unadjusted close on the rebalance date (USD)."
    )
    min_market_cap: float | None = Field(
        default=None, ge=0, description="Minimum market cap on the rebalance date (USD)."
    )

    @field_validator("sectors", "exchanges", "types")
    @classmethod
    def _non_empty(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and len(value) == 0:
            raise ValueError("must not be an empty list (omit it to include everything)")
        return value


class IndexDefinition(BaseModel):
    """A rules-based index. See ``docs/methodology.md`` for every field's meaning."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=INDEX_ID_PATTERN, description="Identifier: lower-case, digits, '-'.")
    name: str = Field(min_length=1, max_length=200, description="Display name.")
    top_n: int = Field(ge=1, le=10_000, description="Number of constituents selected.")
    weighting: Weighting = Field(default="equal", description="Weighting scheme.")
    cap: float | None = Field(
        default=None, gt=0, le=1, description="Single-name weight cap (capped_market_cap only)."
    )
    rebalance: Rebalance = Field(default="daily", description="Reconstitution schedule.")
    base_date: dt.date | None = Field(
        default=None, description="First index date (default: first trading day in the data)."
    )
    base_value: float = Field(default=1000.0, gt=0, description="Index level on the base date.")
    universe: Universe = Field(default_factory=Universe, description="Eligibility filters.")
    description: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _cap_matches_weighting(self) -> IndexDefinition:
        if self.weighting == "capped_market_cap" and self.cap is None:
            raise ValueError("cap: required when weighting is 'capped_market_cap'")
        if self.weighting != "capped_market_cap" and self.cap is not None:
            raise ValueError("cap: only allowed with weighting 'capped_market_cap'")
        return self

    def fingerprint(self) -> str:
        """A hash of the fields that change results (not ``name``/``description``)."""
        payload = self.model_dump(mode="json", exclude={"name", "description"})
        text = json.dumps(payload, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_json(self) -> str:
        """Canonical JSON (what the store keeps)."""
        return self.model_dump_json(exclude_none=True)


def parse_definition(data: Any, *, source: str = "definition") -> IndexDefinition:
    """Validate a mapping into a definition; errors name the offending field."""
    if not isinstance(data, dict):
        raise InvalidInputError(
            f"{source}: expected a mapping of fields, got {type(data).__name__}"
        )
    try:
        return IndexDefinition.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        msg = first["msg"].removeprefix("Value error, ")
        if field is None and ":" in msg:  # model-level validators name the field first
            field = msg.split(":", 1)[0]
        where = f"field '{field}'" if field else "definition"
        raise InvalidInputError(f"{source}: {where}: {msg}", field=field) from None


def load_definition_file(path: Path) -> IndexDefinition:
    """Read a YAML (``.yaml``/``.yml``) or JSON definition file."""
    if not path.is_file():
        raise InvalidInputError(f"definition file not found: {path}", field="file")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InvalidInputError(f"{path}: not valid {path.suffix.lstrip('.')}: {exc}") from None
    return parse_definition(data, source=str(path))


def sector_slug(sector: str) -> str:
    """``Information Technology`` -> ``information-technology``."""
    return re.sub(r"[^a-z0-9]+", "-", sector.lower()).strip("-")


def builtin_definitions() -> list[IndexDefinition]:
    """The built-in indices: ``ew100`` (default), ``ew-tech50`` and one per GICS sector."""
    common = Universe(types=(COMMON_STOCK,))
    defs = [
        IndexDefinition(
            id=DEFAULT_INDEX_ID,
            name="Equal-Weight US Top 100",
            top_n=100,
            universe=common,
            description="Top 100 US common stocks by market cap, equal weight, daily rebalance.",
        ),
        IndexDefinition(
            id="ew-tech50",
            name="Equal-Weight US Tech 50",
            top_n=50,
            universe=Universe(types=(COMMON_STOCK,), sectors=("Information Technology",)),
            description="Top 50 Information Technology common stocks, equal weight, daily.",
        ),
    ]
    for sector in GICS_SECTORS:
        defs.append(
            IndexDefinition(
                id=f"ew-sector-{sector_slug(sector)}",
                name=f"Equal-Weight US {sector} 50",
                top_n=50,
                universe=Universe(types=(COMMON_STOCK,), sectors=(sector,)),
                description=f"Top 50 {sector} common stocks by market cap, equal weight, daily.",
            )
        )
    return defs


BUILTIN_IDS = frozenset(d.id for d in builtin_definitions())
