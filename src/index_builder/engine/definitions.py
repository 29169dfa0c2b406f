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

Weighting = Literal["equal", "market_cap", "capped_market_cap", "sqrt_market_cap"]
ReturnType = Literal["price", "total", "net_total"]
Rebalance = Literal["daily", "weekly", "monthly", "quarterly"]


# Every number a definition accepts is finite (no NaN, no infinity: JSON's 1e309
# overflows to infinity, YAML has .inf and .nan) and bounded so that levels stay
# finite and returns non-zero.
STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
MAX_PRICE = 1e12
"""Largest ``min_price`` (USD per share)."""
MAX_MARKET_CAP = 1e18
"""Largest ``min_market_cap`` (USD)."""
BASE_VALUE_RANGE = (1e-3, 1e9)
"""``base_value`` bounds: levels stay finite and their ratios exact enough over decades."""


class Universe(BaseModel):
    """Eligibility filters. Lists match ignoring case and surrounding spaces; ``None``
    means no filter."""

    model_config = STRICT

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
        default=None,
        ge=0,
        le=MAX_PRICE,
        description="Minimum unadjusted close on the rebalance date (USD, inclusive).",
    )
    min_market_cap: float | None = Field(
        default=None,
        ge=0,
        le=MAX_MARKET_CAP,
        description="Minimum market cap on the rebalance date (USD, inclusive).",
    )

    @field_validator("sectors", "exchanges", "types")
    @classmethod
    def _non_empty(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and len(value) == 0:
            raise ValueError("must not be an empty list (omit it to include everything)")
        if value is not None and len(value) > 200:
            raise ValueError("at most 200 values")
        if value is not None and any(not v.strip() or len(v) > 200 for v in value):
            raise ValueError("every value must be 1 to 200 characters, not blank")
        return value


class Buffer(BaseModel):
    """Selection buffer (METHODOLOGY part 2): members stay while ranked within
    ``exit_rank``; non-members enter when ranked within ``entry_rank``."""

    model_config = STRICT

    entry_rank: int = Field(
        ge=1, le=10_000, description="A non-member enters when ranked at or above this."
    )
    exit_rank: int = Field(
        ge=1, le=10_000, description="A member stays while ranked at or above this."
    )


class GroupCap(BaseModel):
    """Aggregate cap: the weights above ``threshold`` may sum to at most ``limit``
    (UCITS 5/10/40: cap 0.10, threshold 0.05, limit 0.40)."""

    model_config = STRICT

    threshold: float = Field(gt=0, le=1, description="Weights above this count toward the limit.")
    limit: float = Field(gt=0, le=1, description="Largest allowed sum of those weights.")


class IndexDefinition(BaseModel):
    """A rules-based index. See ``docs/methodology.md`` for every field's meaning."""

    model_config = STRICT

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
    base_value: float = Field(
        default=1000.0,
        ge=BASE_VALUE_RANGE[0],
        le=BASE_VALUE_RANGE[1],
        description="Index level on the base date (0.001 to 1e9).",
    )
    universe: Universe = Field(default_factory=Universe, description="Eligibility filters.")
    return_type: ReturnType = Field(
        default="total",
        description="Headline variant: price, total (default; the part 1 price where a "
        "security has no dividend or split data) or net_total.",
    )
    tax: float = Field(
        default=0.30, ge=0, le=1, description="Withholding tax on dividends for net_total."
    )
    rank_by: Literal["security", "company"] = Field(
        default="security",
        description="Rank securities, or companies (the sum of their eligible share "
        "classes' market caps, represented by the class with the highest volume).",
    )
    buffer: Buffer | None = Field(
        default=None, description="Selection buffer (default: none, plain top N)."
    )
    group_cap: GroupCap | None = Field(
        default=None, description="Aggregate cap on large weights (capped_market_cap only)."
    )
    effective_lag: int = Field(
        default=0,
        ge=0,
        le=60,
        description="Trading days from a rebalance's reference date (the data it is selected "
        "with) to its effective date (the close where it takes effect); 0: the same day.",
    )
    description: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _cap_matches_weighting(self) -> IndexDefinition:
        if self.weighting == "capped_market_cap" and self.cap is None:
            raise ValueError("cap: required when weighting is 'capped_market_cap'")
        if self.weighting != "capped_market_cap" and self.cap is not None:
            raise ValueError("cap: only allowed with weighting 'capped_market_cap'")
        if self.buffer is not None and not (
            self.buffer.entry_rank <= self.top_n <= self.buffer.exit_rank
        ):
            raise ValueError("buffer: needs entry_rank <= top_n <= exit_rank")
        if self.group_cap is not None:
            if self.weighting != "capped_market_cap":
                raise ValueError("group_cap: only allowed with weighting 'capped_market_cap'")
            if self.cap is not None and self.group_cap.threshold > self.cap:
                raise ValueError("group_cap: threshold must not exceed cap")
            if self.group_cap.limit < self.group_cap.threshold:
                raise ValueError("group_cap: limit must be at least threshold")
        return self

    def fingerprint(self) -> str:
        """A hash of the fields that change results (not ``name``/``description``)."""
        payload = self.model_dump(mode="json", exclude={"name", "description"}, exclude_none=True)
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
    """The built-in indices: ``ew100`` (default), ``ew-tech50``, ``ew100-buffer``,
    ``mcap50-ucits`` and one equal-weight index per GICS sector."""
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
    defs.append(
        IndexDefinition(
            id="ew100-buffer",
            name="Equal-Weight US Top 100, 90/110 buffer",
            top_n=100,
            universe=common,
            buffer=Buffer(entry_rank=90, exit_rank=110),
            description="ew100 with a selection buffer: members stay while ranked within 110, "
            "non-members enter within 90 (lower turnover).",
        )
    )
    defs.append(
        IndexDefinition(
            id="mcap50-ucits",
            name="US Top 50, UCITS 10/5/40 capped",
            top_n=50,
            weighting="capped_market_cap",
            cap=0.10,
            group_cap=GroupCap(threshold=0.05, limit=0.40),
            rebalance="quarterly",
            universe=common,
            rank_by="company",
            effective_lag=5,
            description="Top 50 companies (share classes combined), market-cap weighted, no "
            "weight above 10% and the weights above 5% summing to at most 40%; selected on the "
            "last session of each quarter, effective 5 sessions later (announced in between).",
        )
    )
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
