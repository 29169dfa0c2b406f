"""``GET /providers``: the market data providers and what they can give."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from index_builder.api.responses import read_json
from index_builder.api.routers.common import READ_PROBLEMS, problems
from index_builder.api.schemas import ProvidersResponse
from index_builder.ops.protection import OPTIONAL_API_KEY, ReadServices
from index_builder.providers.listing import describe_providers

router = APIRouter(tags=["providers"])


@router.get(
    "/providers",
    response_model=ProvidersResponse,
    responses=problems(*READ_PROBLEMS),
    openapi_extra=OPTIONAL_API_KEY,
    summary="Market data providers: capabilities, rate limit, auth, configured",
)
async def list_providers(request: Request, services: ReadServices) -> Response:
    """Every provider with what it can give, its client-side rate limit, how it
    authenticates and whether it is configured (its API key is set). Keys are
    never shown."""
    return read_json(request, services, {"providers": describe_providers(services.settings)})
