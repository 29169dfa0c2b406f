"""Admin endpoints: the feature flags in force and an immediate reload; the versions
of the store and a rollback of the market data to one.

Every admin endpoint needs an API key with the ``admin`` scope (when API keys
are enabled; see the README, Protection).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from index_builder.api.deps import ServicesDep
from index_builder.api.responses import json_response, read_json
from index_builder.api.routers.common import problems
from index_builder.api.schemas import (
    FlagsResponse,
    RollbackRequest,
    RollbackResponse,
    VersionsResponse,
)
from index_builder.errors import NotFoundError
from index_builder.ops.auth import require_scope
from index_builder.services.rollback import rollback
from index_builder.storage.base import VERSION_KINDS

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_scope("admin"))])


def _flags_payload(services: Any) -> dict[str, Any]:
    if services.flags is None:  # pragma: no cover - the app always has a flag store
        raise NotFoundError("no feature flags in this process")
    health = services.flags.health()
    return {
        "status": health["status"],
        "file": health["file"],
        "loaded_at": health["loaded_at"],
        "error": health.get("error"),
        "flags": services.flags.describe(),
    }


@router.get(
    "/flags",
    response_model=FlagsResponse,
    responses=problems(401, 403),
    summary="Feature flags in force in this process",
)
async def list_flags(request: Request, services: ServicesDep) -> Response:
    """Every flag with its value, default, type, where the value comes from
    (`default`, `env` or `file`) and what it switches."""
    return read_json(request, services, _flags_payload(services), public=False)


@router.post(
    "/flags/reload",
    response_model=FlagsResponse,
    responses=problems(401, 403),
    summary="Re-read the flags file now",
)
async def reload_flags(services: ServicesDep) -> Response:
    """Re-read `INDEX_BUILDER_FLAGS_FILE` at once (it is also re-read on its own
    within `INDEX_BUILDER_FLAGS_RELOAD_SECONDS` of a change). An invalid file keeps
    the last good flags and answers with `status: degraded` and the error."""
    if services.flags is not None:
        await run_in_threadpool(services.flags.reload)
    return json_response(_flags_payload(services))


@router.get(
    "/versions",
    response_model=VersionsResponse,
    responses=problems(401, 403, 422),
    summary="Versions of the store: every change of its content, newest first",
)
async def list_versions(
    request: Request,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=10000, description="How many, newest first.")] = 50,
    kind: Annotated[
        str | None,
        Query(
            pattern="^(" + "|".join(VERSION_KINDS) + ")$",
            description="Only this kind: " + ", ".join(VERSION_KINDS) + ".",
        ),
    ] = None,
) -> Response:
    """Ingestion runs (succeeded or partial), builds stored, definition changes,
    rollbacks and restores, each a version. `data_run_id` is the newest ingestion run
    in force after the change: `as_of_version` reads the data as they stood then, and
    POST /admin/rollback brings them back."""

    def produce() -> dict[str, Any]:
        return {"versions": [v.as_dict() for v in services.store.versions(limit, kind)]}

    return read_json(request, services, await run_in_threadpool(produce), public=False)


@router.post(
    "/rollback",
    response_model=RollbackResponse,
    responses=problems(401, 403, 404, 422),
    summary="Roll the market data back to a version (and restate the indices built since)",
)
async def rollback_data(body: RollbackRequest, services: ServicesDep) -> Response:
    """Revert the market data to their state right after `to_version`, as one new
    ingestion run recorded as a `rollback` version (row level: the values written since
    move to the history, those in force then are current again; nothing is deleted),
    then (`build`, default true) rebuild every index whose current build saw the undone
    data: it restates from the first changed day, earlier days stay as published. One
    index that cannot be built is a `failed` outcome, not an error. A version whose data
    are those in force answers `nothing_to_undo` (nothing changed or recorded); an
    unknown version is 404. Runs while no build or daily cycle writes (the write gate)."""

    def run() -> dict[str, Any]:
        with services.jobs.write_gate:
            try:
                outcome = rollback(
                    services.store,
                    services.store.calendar,
                    body.to_version,
                    build=body.build,
                    flags=services.flags,
                )
            finally:
                services.invalidate_caches()  # reads restate from the rebuilt indices
        services.record_builds(outcome.builds)
        return outcome.as_dict()

    return json_response(await run_in_threadpool(run))
