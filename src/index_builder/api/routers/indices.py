"""Index definitions: list, show, add, remove."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from index_builder.api.responses import json_response, read_json
from index_builder.api.routers.common import READ_PROBLEMS, WRITE_PROBLEMS, IndexPath, problems
from index_builder.api.schemas import IndexInfo
from index_builder.engine.definitions import IndexDefinition, parse_definition
from index_builder.ops.protection import OPTIONAL_API_KEY, BuildServices, ReadServices
from index_builder.point_in_time import format_as_of
from index_builder.services.builds import data_waiting
from index_builder.services.catalog import add_definition, remove_definition
from index_builder.storage.base import BuildState, Storage

router = APIRouter(tags=["indices: definitions"])


def _infos(store: Storage, definitions: list[tuple[IndexDefinition, bool]]) -> list[dict[str, Any]]:
    """Each definition with its builds; whether newer data waits is one query per
    distinct ingestion run the builds saw, not one per index."""
    states = {d.id: store.build_state(d.id) for d, _ in definitions}
    waiting = data_waiting(store, [s for s in states.values() if s is not None])
    return [_info(store, d, b, states[d.id], waiting) for d, b in definitions]


def _info(
    store: Storage,
    definition: IndexDefinition,
    builtin: bool,
    state: BuildState | None,
    waiting: dict[str, dt.date],
) -> dict[str, Any]:
    return {
        "definition": definition.model_dump(mode="json", exclude_none=True),
        "builtin": builtin,
        "build": None if state is None else _build(state, waiting.get(definition.id)),
        "as_of_builds": [_build(s) for s in store.as_of_builds(definition.id)],
    }


def _build(state: BuildState, waiting: dt.date | None = None) -> dict[str, Any]:
    return {
        "version": state.version,
        "base_date": state.base_date,
        "built_through": state.built_through,
        "built_at": state.built_at,
        "as_of": None if state.as_of is None else format_as_of(state.as_of),
        "as_of_version": state.as_of_version,
        "data_waiting_from": waiting,
    }


@router.get(
    "/indices",
    response_model=list[IndexInfo],
    responses=problems(*READ_PROBLEMS),
    openapi_extra=OPTIONAL_API_KEY,
    summary="Every index definition",
)
async def list_indices(request: Request, services: ReadServices) -> Response:
    """Built-in and user-defined indices with their build state."""

    def produce() -> list[dict[str, Any]]:
        store = services.store
        return _infos(store, store.list_definitions())

    return read_json(request, services, await run_in_threadpool(produce))


@router.get(
    "/indices/{index_id}",
    response_model=IndexInfo,
    responses=problems(404, *READ_PROBLEMS),
    openapi_extra=OPTIONAL_API_KEY,
    summary="One index definition",
)
async def get_index(request: Request, index_id: IndexPath, services: ReadServices) -> Response:
    """The definition, whether it is built in, and its last build."""

    def produce() -> dict[str, Any]:
        definition = services.builder.definition(index_id)
        found = services.store.get_definition(index_id)
        (info,) = _infos(services.store, [(definition, bool(found and found[1]))])
        return info

    return read_json(request, services, await run_in_threadpool(produce))


@router.post(
    "/indices",
    response_model=IndexInfo,
    status_code=201,
    responses=problems(409, 422, *WRITE_PROBLEMS),
    summary="Add a user-defined index",
)
async def create_index(
    services: BuildServices,
    definition: Annotated[
        dict[str, Any],
        Body(
            description="An index definition (same fields and validation as "
            "`index-builder indices add`).",
            examples=[
                {
                    "id": "mcap-hc-20",
                    "name": "Capped Health Care 20",
                    "top_n": 20,
                    "weighting": "capped_market_cap",
                    "cap": 0.1,
                    "rebalance": "monthly",
                    "universe": {"sectors": ["Health Care"], "types": ["Common Stock"]},
                }
            ],
        ),
    ],
    replace: Annotated[
        bool,
        Query(
            description="Replace an existing user index. New rules (any field but name and "
            "description) remove its results, current and as of past moments, at once: reads "
            "answer 404 until it is built again, and a build of the old rules still running "
            "is discarded."
        ),
    ] = False,
) -> Response:
    """Validates the definition (the error names the field) and stores it. Build it
    with POST /build-index."""
    parsed = parse_definition(definition, source="body")

    def produce() -> dict[str, Any]:
        add_definition(services.store, parsed, replace=replace, flags=services.flags)
        services.versions.forget(parsed.id)
        if services.store.build_state(parsed.id) is None:  # new rules: no outcome of the old
            services.build_outcomes.forget(parsed.id)
        (info,) = _infos(services.store, [(parsed, False)])
        return info

    return json_response(await run_in_threadpool(produce), status_code=201)


@router.delete(
    "/indices/{index_id}",
    status_code=204,
    responses=problems(404, 409, *WRITE_PROBLEMS),
    summary="Remove a user-defined index and its results",
)
async def delete_index(index_id: IndexPath, services: BuildServices) -> Response:
    """Built-in indices cannot be removed (409)."""
    await run_in_threadpool(remove_definition, services.store, index_id)
    services.versions.forget(index_id)
    services.build_outcomes.forget(index_id)
    return Response(status_code=204)
