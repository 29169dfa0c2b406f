"""Admin endpoints: the feature flags in force, and an immediate reload."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from index_builder.api.deps import ServicesDep
from index_builder.api.responses import json_response
from index_builder.api.routers.common import problems
from index_builder.api.schemas import FlagsResponse
from index_builder.errors import NotFoundError

router = APIRouter(prefix="/admin", tags=["admin"])


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
async def list_flags(services: ServicesDep) -> Response:
    """Every flag with its value, default, type, where the value comes from
    (`default`, `env` or `file`) and what it switches."""
    return json_response(_flags_payload(services))


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
