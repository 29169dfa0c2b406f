"""Wiring of the protection layer: rate limits, API keys and request limits.

* :func:`install_protection` (in ``create_app``): the problem handler of
  :class:`~index_builder.ops.errors.ProblemError` and the request layer
  (:mod:`index_builder.ops.middleware`: the Host allow-list when
  ``INDEX_BUILDER_ALLOWED_HOSTS`` names hosts, body size, read timeout,
  ``RateLimit-*`` headers, request ids and records).
* :func:`attach_protection` (in ``build_services``): the per-process
  :class:`~index_builder.ops.auth.ApiKeyAuth` and
  :class:`~index_builder.ops.ratelimit.RateLimiter` on ``Services`` (both
  have ``health()``).
* ``ReadServices``, ``BuildServices``, ``ExportServices`` (in the routers): the
  ``services`` parameter of a protected route, in place of ``ServicesDep``: the
  rate limit first (so failed authentications spend the caller's budget too),
  then the scope check (failed keys throttled per client address), then the
  services.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Security

from index_builder.api.deps import Services
from index_builder.ops.auth import API_KEY_HEADER, ApiKeyAuth, Scope, get_auth
from index_builder.ops.errors import install_problem_error_handler
from index_builder.ops.middleware import RequestMiddleware
from index_builder.ops.ratelimit import (
    Category,
    RateLimiter,
    enforce_rate_limit,
)
from index_builder.settings import Settings


async def _read_services(request: Request) -> Services:
    await enforce_rate_limit(request, "reads")
    await get_auth(request).check(request, "read")
    services: Services = request.app.state.services
    return services


def _guarded(category: Category, scope: Scope) -> Callable[..., Awaitable[Services]]:
    async def dependency(
        request: Request,
        _key: Annotated[str | None, Security(API_KEY_HEADER)] = None,
    ) -> Services:
        await enforce_rate_limit(request, category)
        await get_auth(request).check(request, scope)
        services: Services = request.app.state.services
        return services

    dependency.__name__ = f"{category}_services"
    return dependency


ReadServices = Annotated[Services, Depends(_read_services)]
"""The services of a read (GET): the reads budget spent, and the ``read`` scope
checked when ``INDEX_BUILDER_READS_REQUIRE_KEY`` is set. It replaces ``ServicesDep``
(one dependency, not two: each costs FastAPI about 12 us a request, and reads are
the hot path). Reads also take ``openapi_extra=OPTIONAL_API_KEY``."""
BuildServices = Annotated[Services, Depends(_guarded("builds", "build"))]
"""The services of a build or definition change: the builds budget, the ``build`` scope."""
ExportServices = Annotated[Services, Depends(_guarded("exports", "export"))]
"""The services of an export: the exports budget, the ``export`` scope."""

OPTIONAL_API_KEY: dict[str, Any] = {"security": [{API_KEY_HEADER.scheme_name: []}, {}]}
"""``openapi_extra`` of the reads: the key is optional (reads are open unless configured
otherwise; builds and exports document theirs through their ``Security`` parameter)."""


def install_protection(app: FastAPI, settings: Settings) -> None:
    """Add the error handler and the request layer to ``app``: one pure ASGI layer
    (:class:`~index_builder.ops.middleware.RequestMiddleware`, added last: the
    outermost) for the Host allow-list, the read timeout, the body limit, the
    ``RateLimit-*`` headers and, unless ``INDEX_BUILDER_REQUEST_MIDDLEWARE`` is off,
    the request id and the request's record (access line and metrics)."""
    install_problem_error_handler(app)
    app.add_middleware(
        RequestMiddleware,
        max_body_bytes=settings.max_body_bytes,
        timeout_seconds=settings.request_timeout_seconds,
        observe=settings.request_middleware,
        allowed_hosts=None if settings.allowed_hosts == "*" else settings.allowed_hosts.split(","),
    )


def attach_protection(services: Services) -> None:
    """Create the API key checks and the rate limiter of one process (logs the mode)."""
    services.rate_limiter = RateLimiter.from_settings(services.settings)
    services.auth = ApiKeyAuth.from_settings(services.settings, services.rate_limiter)


async def close_protection(services: Services) -> None:
    """Release the rate limiter's Redis connections."""
    if services.rate_limiter is not None:
        await services.rate_limiter.close()
