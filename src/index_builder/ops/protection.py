"""Wiring of the protection layer: rate limits, API keys and request limits.

* :func:`install_protection` (in ``create_app``): the problem handler of
  :class:`~index_builder.ops.errors.ProblemError` and the middleware
  (``RateLimit-*`` headers, body size, read timeout).
* :func:`attach_protection` (in ``build_services``): the per-process
  :class:`~index_builder.ops.auth.ApiKeyAuth` and
  :class:`~index_builder.ops.ratelimit.RateLimiter` on ``Services`` (both
  have ``health()``).
* :func:`protect` (in the routers): the dependencies of a route category,
  rate limit first (so failed authentications spend the caller's budget too),
  then the scope check.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Literal

from fastapi import Depends, FastAPI
from fastapi.params import Depends as DependsParam

from index_builder.ops.auth import ApiKeyAuth, Scope, require_scope
from index_builder.ops.errors import install_problem_error_handler
from index_builder.ops.ratelimit import Category, RateLimiter, RateLimitHeaders, rate_limit
from index_builder.ops.request_limits import BodySizeLimit, RequestTimeout, drain
from index_builder.settings import Settings

if TYPE_CHECKING:
    from index_builder.api.deps import Services

RouteKind = Literal["read", "build", "export"]
_CATEGORIES: dict[RouteKind, tuple[Category, Scope]] = {
    "read": ("reads", "read"),
    "build": ("builds", "build"),
    "export": ("exports", "export"),
}
_DEPENDENCIES: dict[RouteKind, list[DependsParam]] = {
    kind: [Depends(rate_limit(category)), Depends(require_scope(scope))]
    for kind, (category, scope) in _CATEGORIES.items()
}


def protect(kind: RouteKind) -> list[DependsParam]:
    """Route dependencies: the ``kind`` budget, then its scope.

    ``read``: GET endpoints (open unless ``INDEX_BUILDER_READS_REQUIRE_KEY``);
    ``build``: builds and definition changes; ``export``: exports.
    """
    return _DEPENDENCIES[kind]


def install_protection(app: FastAPI, settings: Settings) -> None:
    """Add the protection middleware and error handler to ``app``."""
    install_problem_error_handler(app)
    background: set[asyncio.Task[None]] = set()
    app.state.timed_out_requests = background  # drained by close_protection
    # added innermost first: the headers wrap the others, so a 504 carries them too
    app.add_middleware(
        RequestTimeout, seconds=settings.request_timeout_seconds, background=background
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RateLimitHeaders)


def attach_protection(services: Services) -> None:
    """Create the API key checks and the rate limiter of one process (logs the mode)."""
    services.auth = ApiKeyAuth.from_settings(services.settings)
    services.rate_limiter = RateLimiter.from_settings(services.settings)


async def close_protection(app: FastAPI, services: Services) -> None:
    """At shutdown, before the store closes: let timed-out reads still running in the
    background finish (at most 10 s), then release the rate limiter's connections."""
    await drain(getattr(app.state, "timed_out_requests", set()), timeout=10)
    if services.rate_limiter is not None:
        await services.rate_limiter.close()
