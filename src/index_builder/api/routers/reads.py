"""GET performance, composition and composition changes (cached)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from index_builder.api.deps import ServicesDep
from index_builder.api.responses import cached_json
from index_builder.api.routers.common import (
    DEFAULT_INDEX,
    EndQuery,
    IndexQuery,
    StartQuery,
    problems,
)
from index_builder.api.schemas import (
    AnnouncementResponse,
    ChangesResponse,
    CompositionResponse,
    PerformanceResponse,
)

router = APIRouter(tags=["indices: read"])

CONSTITUENT_FIELDS = ("rank", "symbol", "name", "sector", "weight", "market_cap", "price", "units")


@router.get(
    "/index-performance",
    response_model=PerformanceResponse,
    responses=problems(404, 422),
    summary="Levels, daily and cumulative returns, and summary statistics",
)
async def index_performance(
    services: ServicesDep,
    index: IndexQuery = DEFAULT_INDEX,
    start_date: StartQuery = None,
    end_date: EndQuery = None,
    return_type: Annotated[
        Literal["price", "total", "net_total"] | None,
        Query(
            description="Return variant (default: the definition's headline, usually "
            "total). Every row also carries all three variants' levels."
        ),
    ] = None,
) -> Response:
    """Every trading day of the window with `level`, `daily_return` and
    `cumulative_return` (since the window's first trading day), plus the summary."""

    def produce() -> dict[str, Any]:
        perf = services.reader.performance(index, start_date, end_date, return_type)
        return {
            "index": index,
            "return_type": perf.return_type,
            "start_date": perf.window.start,
            "end_date": perf.window.end,
            "data": perf.rows,
            "summary": perf.summary.as_dict(),
        }

    params = {"start_date": start_date, "end_date": end_date, "return_type": return_type}
    return await cached_json(services, "performance", index, params, produce)


@router.get(
    "/index-composition",
    response_model=CompositionResponse,
    responses=problems(404, 422),
    summary="Constituents after the close of a date",
)
async def index_composition(
    services: ServicesDep,
    index: IndexQuery = DEFAULT_INDEX,
    date: Annotated[
        dt.date | None,
        Query(
            description="YYYY-MM-DD; a non-trading day resolves to the previous trading day "
            "(default: the last built day)."
        ),
    ] = None,
) -> Response:
    """The constituents in force after the close of `date` (those that earn the next
    trading day's returns), by rank."""

    def produce() -> dict[str, Any]:
        comp = services.reader.composition(index, date)
        return {
            "index": index,
            "date": comp.requested_date,
            "effective_date": comp.effective_date,
            "constituents": [{k: row[k] for k in CONSTITUENT_FIELDS} for row in comp.rows()],
        }

    return await cached_json(services, "composition", index, {"date": date}, produce)


@router.get(
    "/index-composition/next",
    response_model=AnnouncementResponse,
    responses=problems(404, 422),
    summary="The next composition: announced, not yet in force (pro-forma)",
)
async def next_composition(services: ServicesDep, index: IndexQuery = DEFAULT_INDEX) -> Response:
    """For an index with an `effective_lag`: the composition selected at the last
    reference date that takes effect at a later close, with target weights, the
    weights in force now, entries, exits and expected one-way turnover. `404` when
    nothing is announced (for instance with `effective_lag` 0)."""

    def produce() -> dict[str, Any]:
        a = services.reader.announcement(index)
        return {
            "index": index,
            "reference_date": a.reference_date,
            "effective_date": a.effective_date,
            "sessions_ahead": a.sessions_ahead,
            "last_close": a.last_close,
            "expected_turnover": a.expected_turnover,
            "entered": a.entered,
            "exited": a.exited,
            "later_announcements": a.later_announcements,
            "constituents": a.constituents,
        }

    return await cached_json(services, "announcement", index, {}, produce)


@router.get(
    "/composition-changes",
    response_model=ChangesResponse,
    responses=problems(404, 422),
    summary="Constituents entered and exited at each rebalance",
)
async def composition_changes(
    services: ServicesDep,
    index: IndexQuery = DEFAULT_INDEX,
    start_date: StartQuery = None,
    end_date: EndQuery = None,
) -> Response:
    """For each rebalance in the window whose constituents changed: `entered` and
    `exited` symbols, each sorted."""

    def produce() -> dict[str, Any]:
        window, changes = services.reader.changes(index, start_date, end_date)
        return {
            "index": index,
            "start_date": window.start,
            "end_date": window.end,
            "changes": [
                {"date": c.date, "entered": list(c.entered), "exited": list(c.exited)}
                for c in changes
            ],
        }

    params = {"start_date": start_date, "end_date": end_date}
    return await cached_json(services, "changes", index, params, produce)
