"""Cached reads answered before routing: the same bytes and headers, a fraction of the work.

A cached read through FastAPI spends most of its time on the framework, not on
the answer: matching the route, then parsing and validating six query parameters
and solving the route's dependencies (about 150 us of 240 us a request in
process), all to compute a cache key it already computed for the same URL the
time before. :class:`FastReadMiddleware` remembers, for each URL (path and query
string) a read answered through :func:`~index_builder.api.responses.cached_json`,
what that validation produced: the route, the result key and the parameters
(:class:`KnownReads`). The next ``GET`` of the same URL is answered here when
everything the route would do can be done without it:

* the result key's build version is in memory (:class:`~index_builder.api.deps.
  BuildVersions`; a build, a definition change, a removal or a newer store version
  forgets it, and the read goes through the route again);
* the caller needs no key check beyond a valid key's digest (no key, or a valid
  one when reads are open; with ``INDEX_BUILDER_READS_REQUIRE_KEY`` a valid key
  with the ``read`` scope); an invalid key, or an address whose failed keys are
  throttled, goes through the route (which counts and refuses it);
* the answer is in the response cache (in-process tier or Redis).

Then, in the route's order: the reads budget is counted (``429`` problem+json with
``Retry-After`` when spent, as the route answers it), ``If-None-Match`` is
compared with the ``ETag`` (``304``), and the cached bytes are sent with the
route's headers (``Cache-Control``, ``ETag``, ``X-Cache: HIT``). Request ids,
access lines, metrics (the route label is the route's), ``RateLimit-*`` headers
and the read timeout come from the outer middleware as for any request; the
store's freshness (:class:`~index_builder.api.deps.FreshnessMiddleware`) is
ensured before this layer runs. Anything else, including every first request of
a URL, goes to the route unchanged.

A remembered URL is valid until the end of its UTC day (a window without an end
date is checked against today's date), and at most :data:`MAX_ENTRIES` are kept
(the oldest are forgotten first).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from index_builder.api.cache import cache_key
from index_builder.api.http_cache import etag_matches, read_cache_control, strong_etag
from index_builder.api.problems import problem_response
from index_builder.ops.auth import HEADER as KEY_HEADER
from index_builder.ops.metrics import CACHE_REQUESTS, RATE_LIMITED
from index_builder.ops.ratelimit import STATE_KEY, rate_limited

log = logging.getLogger("index_builder.api.fast_reads")

MAX_ENTRIES = 8192
"""URLs remembered per process (each a few hundred bytes)."""
STATE_KEY_KNOWN = "known_reads"
"""Where this layer leaves its :class:`KnownReads` (``scope["state"]``) for ``cached_json``."""
_DAY = 86400
_KEY_HEADER = KEY_HEADER.lower().encode()
_HIT = CACHE_REQUESTS.labels(result="hit")
_READS_LIMITED = RATE_LIMITED.labels("reads")
_JSON = b"application/json"


class _Known:
    """What the route computed for one URL, and the headers of its current version."""

    __slots__ = ("day", "etag", "headers", "index_id", "key", "name", "params", "route", "version")

    def __init__(
        self, route: Any, name: str, index_id: str, params: dict[str, Any], day: int
    ) -> None:
        self.route = route
        self.name = name
        self.index_id = index_id
        self.params = params
        self.day = day
        self.version: int | None = None
        self.key = ""
        self.etag = b""
        self.headers: list[tuple[bytes, bytes]] = []

    def at(self, version: int, cache_control: bytes) -> None:
        """Compute the cache key, ETag and response headers of ``version`` (once per version)."""
        self.key = cache_key(self.name, self.index_id, version, self.params)
        self.etag = strong_etag(self.key).encode("latin-1")
        self.headers = [
            (b"cache-control", cache_control),
            (b"etag", self.etag),
            (b"x-cache", b"HIT"),
        ]
        self.version = version


class KnownReads:
    """URLs (path and query string) of cached reads the route validated, bounded."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: dict[tuple[str, bytes], _Known] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def remember(
        self, scope: Scope, route_name: str, index_id: str, params: dict[str, Any]
    ) -> None:
        """Record what the route computed for the URL of ``scope`` (``cached_json``)."""
        route = scope.get("route")
        if route is None or scope.get("method") != "GET":
            return
        url = (scope["path"], scope.get("query_string", b""))
        entries = self._entries
        if url in entries:
            return
        if len(entries) >= self.max_entries:
            del entries[next(iter(entries))]  # the oldest
        entries[url] = _Known(route, route_name, index_id, dict(params), _today())

    def get(self, path: str, query: bytes) -> _Known | None:
        """The entry of a URL, when it is remembered and from today (UTC)."""
        known = self._entries.get((path, query))
        if known is None:
            return None
        if known.day != _today():
            del self._entries[(path, query)]
            return None
        return known

    def clear(self) -> None:
        """Forget every URL."""
        self._entries.clear()


def _today() -> int:
    """The UTC day number (days since 1970-01-01)."""
    return int(time.time() // _DAY)


class FastReadMiddleware:
    """Answers remembered cached reads from the response cache (see the module)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.known = KnownReads()
        self._cache_control: tuple[int, bytes] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state[STATE_KEY_KNOWN] = self.known
        known = self.known.get(scope["path"], scope["query_string"])
        if known is None or not await self._answer(known, scope, receive, send, state):
            await self.app(scope, receive, send)

    def _cache_control_of(self, max_age: int) -> bytes:
        cached = self._cache_control
        if cached is None or cached[0] != max_age:
            cached = self._cache_control = (max_age, read_cache_control(max_age).encode())
        return cached[1]

    async def _answer(
        self, known: _Known, scope: Scope, receive: Receive, send: Send, state: dict[str, Any]
    ) -> bool:
        """Answer the request as the route would; False (nothing sent): the route must."""
        services = getattr(scope["app"].state, "services", None)
        if services is None:
            return False
        versions = services.versions
        if not versions.known(known.index_id):
            return False
        version = versions.get(known.index_id)
        if version is None:
            return False
        if known.version != version:
            known.at(version, self._cache_control_of(services.settings.http_max_age_seconds))

        # the caller, as the reads' dependency identifies it (no key check here but a
        # valid key's digest: anything else is the route's to count and refuse)
        limiter = services.rate_limiter
        auth = services.auth
        caller_key = None
        if auth is not None and auth.enabled:
            presented = None
            for name, value in scope["headers"]:
                if name == _KEY_HEADER:
                    presented = value.decode("latin-1")
                    break
            caller = auth.match(presented)
            if caller.presented:
                if caller.key is None:
                    return False  # an invalid key: counted and refused by the route
                if (
                    limiter is not None
                    and limiter.auth_failures is not None
                    and limiter.auth_blocked(limiter.client_of(scope))
                ):
                    return False  # this address's keys are refused for now
            if auth.reads_require_key and (caller.key is None or not caller.key.allows("read")):
                return False
            caller_key = caller.key

        headers = scope["headers"]
        body = await services.cache.get(known.key)
        if body is None:
            return False  # not cached (any more): the route produces it

        scope["route"] = known.route  # the route label of the access line and metrics
        if limiter is not None and limiter.enabled:
            who = (
                f"key:{caller_key.name}"
                if caller_key is not None
                else f"ip:{limiter.client_of(scope)}"
            )
            quota = await limiter.hit("reads", who)
            state[STATE_KEY] = quota
            if not quota.allowed:
                _READS_LIMITED.inc()
                log.debug("rate limited: GET %s (%s)", scope["path"], who)
                problem = rate_limited("reads", quota)
                response = problem_response(
                    problem.status, problem.code, problem.detail, instance=scope["path"]
                )
                response.headers.update(problem.headers)
                await response(scope, receive, send)
                return True

        for name, value in headers:
            if name == b"if-none-match":
                if etag_matches(value.decode("latin-1"), known.etag.decode("latin-1")):
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 304,
                            "headers": [(b"etag", known.etag), known.headers[0]],
                        }
                    )
                    await send({"type": "http.response.body", "body": b""})
                    return True
                break

        _HIT.inc()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    *known.headers,
                    (b"content-length", b"%d" % len(body)),
                    (b"content-type", _JSON),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return True
