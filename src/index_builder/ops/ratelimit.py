"""Rate limits shared by every worker through Redis, per API key or client address.

Three budgets (``INDEX_BUILDER_RATE_LIMIT_READS``, ``..._BUILDS``,
``..._EXPORTS``; ``600/minute``-style strings parsed by the ``limits``
library) are counted per caller: the name of a valid API key, else the client
address (``request.client.host``; ``X-Forwarded-For`` only when the peer is one
of ``INDEX_BUILDER_TRUSTED_PROXIES``, the list ``index-builder serve`` also gives
uvicorn: :mod:`index_builder.api.server`).

Strategy: **fixed windows aligned to the clock**, counted with the ``limits``
library's storages (``RedisStorage`` over ``redis.asyncio``, ``MemoryStorage``
in process). Why not the library's moving window or sliding-window counter:
they need a second round trip per request for the ``RateLimit-Remaining`` and
``RateLimit-Reset`` headers (acquire, then read the window), and the moving
window keeps one entry per request. Here the window number is part of the key,
so one ``INCRBY`` + ``EXPIRE`` script call (one round trip) returns the count,
and the reset time follows from the clock: at most one Redis call and one
small key per caller and window. The price of fixed windows is a possible burst
of up to twice the limit across a window boundary; for protecting a service
that is acceptable. Each caller's windows are shifted by a hash of the caller,
so windows do not all reset at the same instant.

Batches: one Redis round trip costs about 0.2 ms of client time, a third of a
cached read, so a process reserves request numbers in batches of 1% of the
budget (1 to 1000; budgets under 200 one at a time, exactly) and hands them out
from memory. A window known to be spent is refused without asking Redis. With
several processes a caller may therefore be refused up to 1% of the budget per
process early, and ``RateLimit-Remaining`` may not yet show the other
processes' requests.

Redis down (or slower than ``INDEX_BUILDER_REDIS_TIMEOUT_SECONDS``): each
process counts in its own memory (so N processes allow up to N times the
budget), ``index_builder_rate_limiter_degraded`` is 1, health says
``degraded``, a warning is logged once per outage, and Redis is tried again
after ``INDEX_BUILDER_REDIS_RETRY_SECONDS``; when it answers, limits are shared
again (the local counts are dropped).

Failed API keys have a budget of their own per client address
(``INDEX_BUILDER_AUTH_FAILURE_LIMIT``, :meth:`RateLimiter.auth_failed`), counted
the same way (also when the rate limits are off); once a process has counted
the last one of a window, it refuses that address's keys without a Redis call
until the window ends (:meth:`RateLimiter.auth_blocked`; see
:meth:`index_builder.ops.auth.ApiKeyAuth.check`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import redis.asyncio as aioredis
from fastapi import Request
from limits import RateLimitItem
from limits import parse as parse_rate_limit
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.errors import StorageError
from redis.exceptions import RedisError
from starlette.types import Message, Scope

from index_builder.ops.errors import ProblemError
from index_builder.ops.metrics import RATE_LIMITED, RATE_LIMITER_DEGRADED
from index_builder.settings import Settings

log = logging.getLogger("index_builder.ops.ratelimit")

Category = Literal["reads", "builds", "exports"]
AUTH_FAILURES = "auth_failures"
"""The budget of failed API keys per client address (``INDEX_BUILDER_AUTH_FAILURE_LIMIT``)."""
KEY_PREFIX = "ib:rl"
STATE_KEY = "rate_limit"
"""Where a request's :class:`Quota` is kept (``scope["state"]``) for the headers."""


class Quota(NamedTuple):
    """The outcome of one hit: the budget, what is left, and when the window resets."""

    category: str
    limit: int
    window_seconds: int
    remaining: int
    reset_seconds: int
    allowed: bool

    def header_items(self) -> list[tuple[bytes, bytes]]:
        """``RateLimit-Limit``, ``-Remaining``, ``-Reset`` (seconds) and ``-Policy``."""
        return [
            (b"ratelimit-limit", b"%d" % self.limit),
            (b"ratelimit-remaining", b"%d" % self.remaining),
            (b"ratelimit-reset", b"%d" % self.reset_seconds),
            (b"ratelimit-policy", b"%d;w=%d" % (self.limit, self.window_seconds)),
        ]


def add_rate_limit_headers(message: Message, state: dict[str, Any]) -> None:
    """Add the request's ``RateLimit-*`` headers (if it was counted) to a response start."""
    quota = state.get(STATE_KEY)
    if quota is not None:
        message["headers"] = [*message.get("headers", ()), *quota.header_items()]


SWEEP_AT = 4096
"""Leases kept before those of past windows are swept."""


def batch_size(limit: int) -> int:
    """How many request numbers a process reserves in Redis at once: 1% of the budget,
    1 to 1000. Budgets under 200 are counted one request at a time, exactly."""
    return max(1, min(1000, limit // 100))


@dataclass(slots=True)
class _Lease:
    """Request numbers ``next..last`` of one caller's window reserved by this process."""

    window: int
    ends: float
    limit: int
    period: int
    next: int = 1
    last: int = 0
    local: bool = False
    refill: asyncio.Future[None] | None = None


def _redis_uri(url: str) -> str:
    """The ``limits`` storage URI of a redis-py URL (``async+redis://...``)."""
    if url.startswith("unix://"):
        return "async+redis+unix://" + url.removeprefix("unix://")
    return "async+" + url


class RateLimiter:
    """Counts hits per category and caller in Redis, or in memory while Redis is down."""

    def __init__(
        self,
        limits: Mapping[str, RateLimitItem],
        redis_url: str | None,
        *,
        enabled: bool = True,
        auth_failures: RateLimitItem | None = None,
        trusted_proxies: str = "",
        timeout_seconds: float = 0.25,
        retry_seconds: float = 5.0,
        connect_timeout_seconds: float = 0.5,
        max_connections: int = 16,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = dict(limits)
        self.enabled = enabled
        self.auth_failures = auth_failures
        if auth_failures is not None:  # counted like a budget, whether or not limits apply
            self.limits[AUTH_FAILURES] = auth_failures
        self.redis_url = redis_url
        self.retry_seconds = retry_seconds
        self._backstop = timeout_seconds + connect_timeout_seconds + 0.05
        self._clock = clock
        self._monotonic = monotonic
        self._proxies = [
            ipaddress.ip_network(p.strip(), strict=False)
            for p in trusted_proxies.split(",")
            if p.strip()
        ]
        self._memory = MemoryStorage()
        self._leases: dict[str, _Lease] = {}
        self._sweep_at = SWEEP_AT
        self._redis: RedisStorage | None = None
        self._pool: aioredis.BlockingConnectionPool | None = None
        self._down_until = 0.0
        self._outage_since: float | None = None
        self._outage_reason = ""
        if (enabled or auth_failures is not None) and redis_url:
            # the same bounded pool and timeouts as the response cache
            self._pool = pool = aioredis.BlockingConnectionPool.from_url(
                redis_url,
                max_connections=max_connections,
                timeout=connect_timeout_seconds,
                socket_timeout=timeout_seconds,
                socket_connect_timeout=connect_timeout_seconds,
                retry_on_timeout=False,
                health_check_interval=0,
            )
            self._redis = RedisStorage(
                _redis_uri(redis_url),
                implementation="redispy",
                key_prefix=KEY_PREFIX,
                connection_pool=pool,  # type: ignore[arg-type]
            )
        RATE_LIMITER_DEGRADED.set(0)

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter:
        """The limiter of ``settings`` (budgets, Redis, proxies, timeouts)."""
        return cls(
            {
                "reads": parse_rate_limit(settings.rate_limit_reads),
                "builds": parse_rate_limit(settings.rate_limit_builds),
                "exports": parse_rate_limit(settings.rate_limit_exports),
            },
            settings.redis_url,
            enabled=settings.rate_limit_enabled,
            auth_failures=None
            if settings.auth_failure_limit == "off"
            else parse_rate_limit(settings.auth_failure_limit),
            trusted_proxies=settings.trusted_proxies,
            timeout_seconds=settings.redis_timeout_seconds,
            retry_seconds=settings.redis_retry_seconds,
        )

    @property
    def shared(self) -> bool:
        """True while counts are shared through Redis."""
        return self._redis is not None and self._outage_since is None

    async def hit(self, category: str, caller: str) -> Quota:
        """Count one request of ``caller`` against the ``category`` budget."""
        now = self._clock()
        lease = self._leases.get(f"{category}:{caller}")
        if lease is not None and now < lease.ends and lease.next <= lease.last and not lease.local:
            # the hot path: a number left in this window's lease (no hashing, no await)
            number = lease.next
            lease.next = number + 1
            limit = lease.limit
            return Quota(
                category,
                limit,
                lease.period,
                max(0, limit - number),
                max(1, math.ceil(lease.ends - now)),
                number <= limit,
            )
        item = self.limits[category]
        limit, period = item.amount, item.get_expiry()
        # shift each caller's windows by a stable hash so they do not all reset at once
        shifted = now + zlib.crc32(caller.encode()) % period
        window = int(shifted // period)
        left = (window + 1) * period - shifted
        number = await self._take(f"{category}:{caller}", window, now + left, limit, period)
        return Quota(
            category,
            limit,
            period,
            max(0, limit - number),
            max(1, math.ceil(left)),
            number <= limit,
        )

    async def _take(self, key: str, window: int, ends: float, limit: int, period: int) -> int:
        """The number of this request in the caller's window (allowed while <= limit).

        Numbers are reserved in Redis in batches of :func:`batch_size` and handed
        out from this process's lease; a window known to be spent is refused
        without asking Redis again.
        """
        while True:
            lease = self._leases.get(key)
            if lease is None or lease.window != window or (lease.local and self._redis_due()):
                lease = self._new_lease(key, window, ends, limit, period)
            if lease.next <= lease.last:
                lease.next += 1
                return lease.next - 1
            if lease.last >= limit:
                return lease.last + 1  # spent: counts only grow within a window
            if lease.refill is not None:
                await asyncio.shield(lease.refill)  # another request is reserving: share it
                continue
            size = min(batch_size(limit), limit - lease.last)
            lease.refill = asyncio.get_running_loop().create_future()
            try:
                total, lease.local = await self._incr(f"{key}:{window}", period, size)
                lease.next, lease.last = total - size + 1, total
            finally:
                lease.refill.set_result(None)
                lease.refill = None

    def _new_lease(self, key: str, window: int, ends: float, limit: int, period: int) -> _Lease:
        if len(self._leases) >= self._sweep_at:  # forget the leases of past windows
            now = self._clock()
            self._leases = {k: v for k, v in self._leases.items() if v.ends > now}
            self._sweep_at = max(SWEEP_AT, 2 * len(self._leases))
        lease = self._leases[key] = _Lease(window, ends, limit, period)
        return lease

    def _redis_due(self) -> bool:
        """True when Redis is configured and not in its retry pause."""
        return self._redis is not None and self._monotonic() >= self._down_until

    async def _incr(self, key: str, expiry: int, amount: int) -> tuple[int, bool]:
        """Add ``amount`` to ``key``: the new count and whether it is local (not Redis)."""
        if self._redis is not None and self._redis_due():
            try:
                async with asyncio.timeout(self._backstop):
                    count = await self._redis.incr(key, expiry, amount)
            except (RedisError, StorageError, OSError, TimeoutError) as exc:
                self._failed(exc)
            else:
                self._succeeded()
                return count, False
        return await self._memory.incr(key, expiry, amount), True

    def _failed(self, exc: BaseException) -> None:
        self._down_until = self._monotonic() + self.retry_seconds
        if self._outage_since is None:
            self._outage_since = self._clock()
            self._outage_reason = f"{type(exc).__name__}: {exc}"
            RATE_LIMITER_DEGRADED.set(1)
            log.warning(
                "rate limiter: Redis is down (%s); limiting per process in memory "
                "(not shared by the workers), retrying every %.0f s",
                self._outage_reason,
                self.retry_seconds,
            )

    def _succeeded(self) -> None:
        if self._outage_since is not None:
            self._outage_since = None
            self._outage_reason = ""
            RATE_LIMITER_DEGRADED.set(0)
            log.warning("rate limiter: Redis is back; limits are shared again")
            self._memory = MemoryStorage()  # drop the local counts

    async def probe(self) -> None:
        """During an outage, once the retry pause is over: ping Redis, and share the
        limits again if it answers (readiness calls this, so recovery shows without
        traffic)."""
        if self._outage_since is None or self._redis is None or not self._redis_due():
            return
        try:
            async with asyncio.timeout(self._backstop):
                await aioredis.Redis(connection_pool=self._pool).ping()
        except (RedisError, StorageError, OSError, TimeoutError) as exc:
            self._failed(exc)
        else:
            self._succeeded()

    def auth_blocked(self, client: str) -> int:
        """Seconds until ``client`` may send a key again when this process knows its
        failed-key budget is spent in the current window (0: not known to be)."""
        lease = self._leases.get(f"{AUTH_FAILURES}:{client}")
        if lease is None or lease.next <= lease.limit:
            return 0
        left = lease.ends - self._clock()
        return math.ceil(left) if left > 0 else 0

    async def auth_failed(self, client: str) -> Quota:
        """Count one failed API key of ``client`` (shared through Redis like the budgets);
        ``allowed`` is false once the address has spent its failed-key budget."""
        return await self.hit(AUTH_FAILURES, client)

    def client_address(self, request: Request) -> str:
        """The peer address, or the client named by ``X-Forwarded-For`` when the peer
        (and each proxy before it) is a trusted proxy: the right-most untrusted entry."""
        return self.client_of(request.scope)

    def client_of(self, scope: Scope) -> str:
        """:meth:`client_address` from an ASGI scope (raw headers)."""
        client = scope.get("client")
        host: str = client[0] if client else "unknown"
        if not self._proxies or not self._trusted(host):
            return host
        forwarded = ""
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                forwarded = value.decode("latin-1")
                break
        for entry in reversed(forwarded.split(",")):
            address = entry.strip()
            if not address:
                continue
            if not self._trusted(address):
                return address
            host = address
        return host

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._proxies)

    def health(self) -> dict[str, object]:
        """``ok`` (shared through Redis, or no Redis configured), ``degraded`` while
        limiting per process because Redis is down."""
        if not self.enabled and self.auth_failures is None:
            return {"status": "ok", "enabled": False}
        details: dict[str, object] = {
            "enabled": self.enabled,  # false: only failed keys are counted
            "limits": {c: f"{i.amount}/{i.get_expiry()}s" for c, i in self.limits.items()},
            "backend": "redis" if self.shared else "memory",
            "shared": self.shared,
        }
        if self._redis is None:
            return {"status": "ok", **details, "detail": "no Redis configured: per process"}
        if self._outage_since is not None:
            return {
                "status": "degraded",
                **details,
                "detail": f"Redis unavailable ({self._outage_reason}); limiting per process",
                "since": self._outage_since,
            }
        return {"status": "ok", **details}

    async def close(self) -> None:
        """Close the Redis connections."""
        if self._pool is not None:
            await self._pool.disconnect()


async def enforce_rate_limit(request: Request, category: Category) -> None:
    """Count ``request`` against the ``category`` budget of its caller; 429 when spent.

    The caller is the valid API key's name (``key:<name>``) or the client
    address (``ip:<address>``). The :class:`Quota` is kept in the request's
    state for the ``RateLimit-*`` headers (:func:`add_rate_limit_headers`).
    """
    services = request.app.state.services
    limiter: RateLimiter | None = services.rate_limiter
    if limiter is None or not limiter.enabled:
        return
    auth = services.auth
    key = auth.identify(request).key if auth is not None and auth.enabled else None
    caller = f"key:{key.name}" if key is not None else f"ip:{limiter.client_address(request)}"
    quota = await limiter.hit(category, caller)
    request.scope.setdefault("state", {})[STATE_KEY] = quota
    if not quota.allowed:
        RATE_LIMITED.labels(category).inc()
        log.debug("rate limited: %s %s (%s)", request.method, request.url.path, caller)
        raise rate_limited(category, quota)


def rate_limited(category: str, quota: Quota) -> ProblemError:
    """The ``429`` of a request over the ``category`` budget (``Retry-After`` set)."""
    return ProblemError(
        429,
        "rate-limited",
        f"the {category} budget of {quota.limit} requests per {quota.window_seconds} s "
        f"is spent; retry in {quota.reset_seconds} s",
        headers={"Retry-After": str(quota.reset_seconds)},
    )


def rate_limit(category: Category) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency: :func:`enforce_rate_limit` for ``category``."""

    async def dependency(request: Request) -> None:
        await enforce_rate_limit(request, category)

    dependency.__name__ = f"rate_limit_{category}"
    return dependency
