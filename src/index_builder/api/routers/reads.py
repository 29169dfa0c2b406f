"""GET performance, composition and composition changes (cached).

Every read takes ``as_of``: the results of the build as of that moment, or
``as_of_version``: those of the build as of that version (not both: 400). Cache
keys then name that build's result key and version, and include both.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from index_builder.api.responses import cached_json
from index_builder.api.routers.common import (
    DEFAULT_INDEX,
    READ_PROBLEMS,
    AsOfQuery,
    AsOfVersionQuery,
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
from index_builder.ops.protection import OPTIONAL_API_KEY, ReadServices
from index_builder.ops.request_limits import check_window, page_limit
from index_builder.point_in_time import format_as_of, result_key

router = APIRouter(tags=["indices: read"])

CONSTITUENT_FIELDS = ("rank", "symbol", "name", "sector", "weight", "market_cap", "price", "units")


@router.get(
    "/index-performance",
    response_model=PerformanceResponse,
    responses=problems(400, 404, 422, *READ_PROBLEMS),
    openapi_extra=OPTIONAL_API_KEY,
    summary="Levels, daily and cumulative returns, and summary statistics",
)
async def index_performance(
    request: Request,
    services: ReadServices,
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
    as_of: AsOfQuery = None,
    as_of_version: AsOfVersionQuery = None,
) -> Response:
    """Every trading day of the window with `level`, `daily_return` and
    `cumulative_return` (since the window's first trading day), plus the summary.
    With `as_of`: those of the build as of that moment; with `as_of_version`: those of
    the build as of that version."""
    key = result_key(index, as_of, as_of_version)  # both given: 400
    check_window(start_date, end_date, services.settings.max_window_days)

    def produce() -> dict[str, Any]:
        perf = services.reader.performance(
            index, start_date, end_date, return_type, as_of, as_of_version
        )
        return {
            "index": index,
            "return_type": perf.return_type,
            "start_date": perf.window.start,
            "end_date": perf.window.end,
            "as_of": _echo(as_of),
            "as_of_version": as_of_version,
            "data": perf.rows,
            "summary": perf.summary.as_dict(),
        }

    params = {
        "start_date": start_date,
        "end_date": end_date,
        "return_type": return_type,
        "as_of": as_of,
        "as_of_version": as_of_version,
    }
    return await cached_json(request, services, "performance", key, params, produce)


@router.get(
    "/index-composition",
    response_model=CompositionResponse,
    responses=problems(400, 404, 422, *READ_PROBLEMS),
    openapi_extra=OPTIONAL_API_KEY,
    summary="Constituents after the close of a date",
)
async def index_composition(
    request: Request,
    services: ReadServices,
    index: IndexQuery = DEFAULT_INDEX,
    date: Annotated[
        dt.date | None,
        Query(
            description="YYYY-MM-DD; a non-trading day resolves to the previous trading day "
            "(default: the last built day)."
        ),
    ] = None,
    as_of: AsOfQuery = None,
    as_of_version: AsOfVersionQuery = None,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            description="Constituents per page (default and largest: "
            "INDEX_BUILDER_MAX_PAGE_SIZE, 1000 unless configured).",
        ),
    ] = None,
    offset: Annotated[
        int, Query(ge=0, description="Constituents to skip (by rank) before the page.")
    ] = 0,
) -> Response:
    """The constituents in force after the close of `date` (those that earn the next
    trading day's returns), by rank. With `as_of`: in the build as of that moment; with
    `as_of_version`: in the build as of that version. Paged with `limit` and `offset`;
    `total` counts every constituent."""
    key = result_key(index, as_of, as_of_version)  # both given: 400
    size = page_limit(limit, services.settings.max_page_size)

    def produce() -> dict[str, Any]:
        comp = services.reader.composition(index, date, as_of, as_of_version)
        rows = comp.rows()
        return {
            "index": index,
            "date": comp.requested_date,
            "effective_date": comp.effective_date,
            "as_of": _echo(as_of),
            "as_of_version": as_of_version,
            "total": len(rows),
            "limit": size,
            "offset": offset,
            "constituents": [
                {k: row[k] for k in CONSTITUENT_FIELDS} for row in rows[offset : offset + size]
            ],
        }

    params = {
        "date": date,
        "as_of": as_of,
        "as_of_version": as_of_version,
        "limit": size,
        "offset": offset,
    }
    return await cached_json(request, services, "composition", key, params, produce)


@router.get(
    "/index-composition/next",
    response_model=AnnouncementResponse,
    responses=problems(404, 422, *READ_PROBLEMS),
    openapi_extra=OPTIONAL_API_KEY,
    summary="The next composition: announced, not yet in force (pro-forma)",
)
async def next_composition(
    request: Request, services: ReadServices, index: IndexQuery = DEFAULT_INDEX
) -> Response:
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
            "pending_selections": a.pending_selections,
            "constituents": a.constituents,
        }

    return await cached_json(request, services, "announcement", index, {}, produce)


@router.get(
    "/composition-changes",
    response_model=ChangesResponse,
    responses=problems(400, 404, 422, *READ_PROBLEMS),
    openapi_extra=OPTIONAL_API_KEY,
    summary="Constituents entered and exited at each rebalance",
)
async def composition_changes(
    request: Request,
    services: ReadServices,
    index: IndexQuery = DEFAULT_INDEX,
    start_date: StartQuery = None,
    end_date: EndQuery = None,
    as_of: AsOfQuery = None,
    as_of_version: AsOfVersionQuery = None,
) -> Response:
    """For each rebalance in the window whose constituents changed: `entered` and
    `exited` symbols, each sorted. With `as_of`: in the build as of that moment; with
    `as_of_version`: in the build as of that version."""
    key = result_key(index, as_of, as_of_version)  # both given: 400
    check_window(start_date, end_date, services.settings.max_window_days)

    def produce() -> dict[str, Any]:
        window, changes = services.reader.changes(index, start_date, end_date, as_of, as_of_version)
        return {
            "index": index,
            "start_date": window.start,
            "end_date": window.end,
            "as_of": _echo(as_of),
            "as_of_version": as_of_version,
            "changes": [
                {"date": c.date, "entered": list(c.entered), "exited": list(c.exited)}
                for c in changes
            ],
        }

    params = {
        "start_date": start_date,
        "end_date": end_date,
        "as_of": as_of,
        "as_of_version": as_of_version,
    }
    return await cached_json(request, services, "changes", key, params, produce)


def _echo(as_of: dt.datetime | None) -> str | None:
    """The as-of moment of a response, ISO 8601 UTC with a Z (null: current results)."""
    return None if as_of is None else format_as_of(as_of)
