"""Cache-aside for API responses in Redis, degrading gracefully.

Keys carry the index's build version, so a rebuild can never serve stale data:
the new version simply misses. With no Redis configured, or Redis down or slow
(every call has a short timeout), reads go to the database; the outage is
logged once, Redis is skipped for ``retry_after`` seconds, then tried again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("index_builder.cache")

KEY_PREFIX = "ib:v1"


def cache_key(route: str, index_id: str, version: int, params: dict[str, Any]) -> str:
    """``ib:v1:<route>:<index>:<version>:<hash of the other parameters>``."""
    digest = hashlib.sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS)).hexdigest()[:20]
    return f"{KEY_PREFIX}:{route}:{index_id}:{version}:{digest}"


class LocalCache:
    """A small in-process LRU of response bytes in front of Redis.

    Safe for the same reason as the Redis keys: a key names one build version,
    and versions are never reused, so an entry can never become stale; it only
    stops being asked for. Bounded by entries and bytes.
    """

    def __init__(self, max_entries: int = 512, max_bytes: int = 64 << 20) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0

    def get(self, key: str) -> bytes | None:
        """The bytes, refreshed as most recently used, or None."""
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def clear(self) -> None:
        """Drop every entry."""
        self._items.clear()
        self._bytes = 0

    def put(self, key: str, value: bytes) -> None:
        """Store, evicting the least recently used entries beyond the bounds."""
        if self.max_entries <= 0 or len(value) > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= len(old)
        self._items[key] = value
        self._bytes += len(value)
        while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self._bytes -= len(evicted)


class ResponseCache:
    """Byte responses in Redis with timeouts and an outage breaker (plus an
    optional in-process :class:`LocalCache` in front)."""

    def __init__(
        self,
        url: str | None,
        *,
        ttl_seconds: int = 3600,
        timeout_seconds: float = 0.25,
        retry_seconds: float = 5.0,
        connect_timeout_seconds: float = 0.5,
        max_connections: int = 16,
        local_entries: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.ttl = ttl_seconds
        self.timeout = timeout_seconds
        self.retry_seconds = retry_seconds
        self.connect_timeout = connect_timeout_seconds
        self.local = LocalCache(local_entries) if local_entries > 0 else None
        self._clock = clock
        self._down_until = 0.0
        self._in_outage = False
        self._client: aioredis.Redis | None = None
        if url:
            # A bounded pool: a burst of requests waits briefly for a connection
            # instead of opening dozens at once (which is slow on a busy machine).
            pool = aioredis.BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=connect_timeout_seconds,
                socket_timeout=timeout_seconds,
                socket_connect_timeout=connect_timeout_seconds,
                retry_on_timeout=False,
                health_check_interval=0,
            )
            self._client = aioredis.Redis(connection_pool=pool)

    @property
    def status(self) -> str:
        """``disabled`` (no Redis configured), ``up`` or ``down``."""
        if self._client is None:
            return "disabled"
        return "down" if self._in_outage else "up"

    def _usable(self) -> bool:
        return self._client is not None and self._clock() >= self._down_until

    def _failed(self, exc: BaseException) -> None:
        self._down_until = self._clock() + self.retry_seconds
        if not self._in_outage:
            self._in_outage = True
            log.warning(
                "redis unavailable (%s: %s); serving from the database, retrying every %.0f s",
                type(exc).__name__,
                exc,
                self.retry_seconds,
            )

    def _succeeded(self) -> None:
        if self._in_outage:
            self._in_outage = False
            log.warning("redis is available again; caching resumed")

    async def _call(self, operation: Callable[[aioredis.Redis], Any]) -> Any:
        if not self._usable():
            return None
        assert self._client is not None
        try:
            # the client's socket timeouts bound each call; wait_for is the backstop
            result = await asyncio.wait_for(
                operation(self._client), self.timeout + self.connect_timeout + 0.05
            )
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            return None
        self._succeeded()
        return result

    async def get(self, key: str) -> bytes | None:
        """The cached bytes, or None (miss, no Redis, or Redis unavailable)."""
        if self.local is not None:
            local = self.local.get(key)
            if local is not None:
                return local
        value = await self._call(lambda c: c.get(key))
        if not isinstance(value, bytes):
            return None
        if self.local is not None:
            self.local.put(key, value)
        return value

    async def set(self, key: str, value: bytes) -> None:
        """Store bytes with the TTL (Redis skipped silently when unavailable)."""
        if self.local is not None:
            self.local.put(key, value)
        await self._call(lambda c: c.set(key, value, ex=self.ttl))

    async def ping(self) -> None:
        """Check Redis now, updating :attr:`status` (no call while an outage is being
        skipped, nor without Redis)."""
        await self._call(lambda c: c.ping())

    def health(self) -> dict[str, object]:
        """Readiness of the cache: ``ok`` (Redis up), ``degraded`` (down: reads come
        from the database) or ``disabled`` (no Redis configured)."""
        status = self.status
        component: dict[str, object] = {
            "status": {"up": "ok", "down": "degraded", "disabled": "disabled"}[status],
            "redis": status,
        }
        if status == "down":
            component["detail"] = (
                f"redis unavailable: serving from the database, retrying every "
                f"{self.retry_seconds:g} s"
            )
        return component

    async def close(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            await self._client.aclose()
