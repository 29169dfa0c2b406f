"""Wiring of the protection layer: rate limits, API keys and request limits.

* :func:`install_protection` (in ``create_app``): the problem handler of
  :class:`~index_builder.ops.errors.ProblemError` and the middleware
  (``RateLimit-*`` headers, body size, read timeout).
* :func:`attach_protection` (in ``build_services``): the per-process
  :class:`~index_builder.ops.auth.ApiKeyAuth` and
  :class:`~index_builder.ops.ratelimit.RateLimiter` on ``Services`` (both
  have ``health()``).
* :func:`protect` (in the routers): the dependency of a route category, one
  call (each dependency FastAPI solves costs a few microseconds): the rate
  limit first (so failed authentications spend the caller's budget too), then
  the scope check.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request, Security
from fastapi.params import Depends as DependsParam

from index_builder.ops.auth import API_KEY_HEADER, ApiKeyAuth, Scope, get_auth
from index_builder.ops.errors import install_problem_error_handler
from index_builder.ops.ratelimit import (
    Category,
    RateLimiter,
    RateLimitHeaders,
    enforce_rate_limit,
)
from index_builder.ops.request_limits import BodySizeLimit, RequestTimeout
from index_builder.settings import Settings

if TYPE_CHECKING:
    from index_builder.api.deps import Services

RouteKind = Literal["read", "build", "export"]
_CATEGORIES: dict[RouteKind, tuple[Category, Scope]] = {
    "read": ("reads", "read"),
    "build": ("builds", "build"),
    "export": ("exports", "export"),
}


def _guard(category: Category, scope: Scope) -> Callable[..., Awaitable[None]]:
    """The dependency of one route kind. Reads (the hot path) do without the
    ``Security`` parameter, a sub-dependency that costs FastAPI about 12 us a request
    (their OpenAPI security is declared by :func:`protect` instead)."""
    if scope == "read":

        async def read_dependency(request: Request) -> None:
            await enforce_rate_limit(request, category)
            get_auth(request).authorize(request, scope)

        return read_dependency

    async def dependency(
        request: Request,
        _key: Annotated[str | None, Security(API_KEY_HEADER)] = None,
    ) -> None:
        await enforce_rate_limit(request, category)
        get_auth(request).authorize(request, scope)

    dependency.__name__ = f"protect_{category}"
    return dependency


_DEPENDENCIES: dict[RouteKind, list[DependsParam]] = {
    kind: [Depends(_guard(category, scope))] for kind, (category, scope) in _CATEGORIES.items()
}


_OPTIONAL_KEY: dict[str, Any] = {"security": [{API_KEY_HEADER.scheme_name: []}, {}]}
"""OpenAPI: the key is optional (reads are open unless configured otherwise)."""


def protect(kind: RouteKind) -> dict[str, Any]:
    """Route decorator arguments (``**protect("read")``): the dependency that spends
    the ``kind`` budget and checks its scope, and for reads the OpenAPI note that the
    key is optional.

    ``read``: GET endpoints (open unless ``INDEX_BUILDER_READS_REQUIRE_KEY``);
    ``build``: builds and definition changes; ``export``: exports.
    """
    if kind == "read":
        return {"dependencies": _DEPENDENCIES[kind], "openapi_extra": _OPTIONAL_KEY}
    return {"dependencies": _DEPENDENCIES[kind]}


def install_protection(app: FastAPI, settings: Settings) -> None:
    """Add the protection middleware and error handler to ``app``."""
    install_problem_error_handler(app)
    # added innermost first: the headers wrap the others, so a 504 carries them too
    app.add_middleware(RequestTimeout, seconds=settings.request_timeout_seconds)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RateLimitHeaders)


def attach_protection(services: Services) -> None:
    """Create the API key checks and the rate limiter of one process (logs the mode)."""
    services.auth = ApiKeyAuth.from_settings(services.settings)
    services.rate_limiter = RateLimiter.from_settings(services.settings)


async def close_protection(services: Services) -> None:
    """Release the rate limiter's Redis connections."""
    if services.rate_limiter is not None:
        await services.rate_limiter.close()
