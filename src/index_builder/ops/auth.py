"""API keys: who may build, change definitions, export and administer.

Keys come from ``INDEX_BUILDER_API_KEYS`` (comma-separated entries) and/or the
secrets file ``INDEX_BUILDER_API_KEYS_FILE`` (one entry per line, ``#``
comments). An entry is ``name:scope+scope:key``:

* ``name``: letters, digits, ``_ . -`` (it is what logs and rate limits show);
* scopes: ``read``, ``build``, ``export``, ``admin`` (``admin`` implies all);
* ``key``: the secret, at least 16 characters, no whitespace or comma (it may
  contain ``:``).

Only SHA-256 digests of the keys are kept in memory; a presented key is hashed
and compared with every digest by :func:`hmac.compare_digest`. Neither a key
nor its digest is ever logged: logs name the key's ``name``.

Clients send the key in ``X-API-Key``. Missing or unknown: ``401`` (code
``unauthorized``, ``WWW-Authenticate: ApiKey``); known but without the scope:
``403`` (code ``forbidden``). Reads are open unless
``INDEX_BUILDER_READS_REQUIRE_KEY`` is set; a key sent on an open read must
still be valid (a client with a wrong key learns it at once).

Failed keys are throttled per client address (:meth:`ApiKeyAuth.check`): after
``INDEX_BUILDER_AUTH_FAILURE_LIMIT`` invalid keys in a window, every request of
that address that sends a key (even a right one) answers ``429`` with
``Retry-After`` until the window ends, without the key being checked. Requests
without a key are not affected (they have nothing to guess with).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, NoReturn, get_args

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from index_builder.ops.errors import ProblemError
from index_builder.ops.metrics import AUTH_BLOCKS, AUTH_FAILURES
from index_builder.ops.ratelimit import RateLimiter
from index_builder.settings import Settings

log = logging.getLogger("index_builder.ops.auth")

Scope = Literal["read", "build", "export", "admin"]
SCOPES: frozenset[str] = frozenset(get_args(Scope))
HEADER = "X-API-Key"
_HEADER_NAME = HEADER.lower().encode()
MIN_KEY_LENGTH = 16
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_CALLER = "api_caller"
"""Where the identified caller of a request is kept (``scope["state"]``)."""

API_KEY_HEADER = APIKeyHeader(
    name=HEADER,
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key (see the README: API keys). Required for builds, definition "
    "changes, exports and admin endpoints when keys are configured; for reads only with "
    "INDEX_BUILDER_READS_REQUIRE_KEY.",
)


class ApiKeyConfigError(ValueError):
    """A malformed key entry (the message names the entry, never the key)."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One configured key: its name, scopes and the SHA-256 digest of the secret."""

    name: str
    scopes: frozenset[str]
    digest: bytes

    def allows(self, scope: str) -> bool:
        """True when the key has ``scope`` (``admin`` implies every scope)."""
        return scope in self.scopes or "admin" in self.scopes

    def __repr__(self) -> str:
        return f"ApiKey(name={self.name!r}, scopes={sorted(self.scopes)})"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: ``key`` is the matching key; ``presented`` says a key was sent."""

    key: ApiKey | None
    presented: bool


ANONYMOUS = Caller(None, False)


def digest(secret: str) -> bytes:
    """The SHA-256 digest a key is kept as."""
    return hashlib.sha256(secret.encode("utf-8")).digest()


def parse_entry(entry: str, where: str) -> ApiKey:
    """Parse ``name:scope+scope:key``; errors name ``where``, never the key."""
    parts = entry.strip().split(":", 2)
    if len(parts) != 3:
        raise ApiKeyConfigError(f"{where}: expected 'name:scope+scope:key'")
    name, scopes_text, secret = parts
    if not _NAME.fullmatch(name):
        raise ApiKeyConfigError(f"{where}: the name must be 1-64 letters, digits, '_', '.' or '-'")
    scopes = frozenset(s.strip() for s in scopes_text.split("+") if s.strip())
    unknown = scopes - SCOPES
    if not scopes or unknown:
        raise ApiKeyConfigError(
            f"{where} ({name}): scopes must be one or more of {', '.join(sorted(SCOPES))} "
            f"joined with '+'" + (f" (unknown: {', '.join(sorted(unknown))})" if unknown else "")
        )
    if len(secret) < MIN_KEY_LENGTH or any(c.isspace() or c == "," for c in secret):
        raise ApiKeyConfigError(
            f"{where} ({name}): the key must be at least {MIN_KEY_LENGTH} characters "
            "without whitespace or commas"
        )
    return ApiKey(name, scopes, digest(secret))


def load_keys(settings: Settings) -> list[ApiKey]:
    """Every key of ``INDEX_BUILDER_API_KEYS`` and ``INDEX_BUILDER_API_KEYS_FILE``."""
    keys: list[ApiKey] = []
    if settings.api_keys is not None:
        entries = [e for e in settings.api_keys.get_secret_value().split(",") if e.strip()]
        keys += [
            parse_entry(e, f"INDEX_BUILDER_API_KEYS entry {i}") for i, e in enumerate(entries, 1)
        ]
    if settings.api_keys_file is not None:
        keys += _read_file(settings.api_keys_file)
    names = [k.name for k in keys]
    if duplicates := sorted({n for n in names if names.count(n) > 1}):
        raise ApiKeyConfigError(f"API key names must be unique: {', '.join(duplicates)}")
    digests = [k.digest for k in keys]
    if len(set(digests)) != len(digests):
        shared = sorted({k.name for k in keys if digests.count(k.digest) > 1})
        raise ApiKeyConfigError(f"API keys {', '.join(shared)} have the same secret")
    return keys


def _read_file(path: Path) -> list[ApiKey]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ApiKeyConfigError(
            f"INDEX_BUILDER_API_KEYS_FILE {path}: cannot read it ({exc.strerror})"
        ) from None
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.strip()  # whole-line comments only: a key may contain '#'
        if entry and not entry.startswith("#"):
            keys.append(parse_entry(entry, f"{path} line {number}"))
    return keys


class ApiKeyAuth:
    """Identifies callers by their key and enforces scopes (one per app)."""

    def __init__(
        self,
        keys: Iterable[ApiKey],
        *,
        enabled: bool,
        reads_require_key: bool = False,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.keys = tuple(keys)
        self.enabled = enabled
        self.reads_require_key = reads_require_key
        self.limiter = limiter
        """Client addresses and the failed-key budget (none: failures are not throttled)."""

    @classmethod
    def from_settings(cls, settings: Settings, limiter: RateLimiter | None = None) -> ApiKeyAuth:
        """Load the keys; enabled by default when any is configured (logged when not).
        ``limiter`` counts failed keys per client address (its ``auth_failures`` budget)."""
        keys = load_keys(settings)
        enabled = settings.auth_enabled if settings.auth_enabled is not None else bool(keys)
        auth = cls(
            keys, enabled=enabled, reads_require_key=settings.reads_require_key, limiter=limiter
        )
        if not enabled:
            log.warning(
                "API KEYS ARE NOT REQUIRED: authentication is disabled (%s); builds, "
                "definition changes, exports and admin endpoints are open to anyone who can "
                "reach the API. Configure INDEX_BUILDER_API_KEYS or INDEX_BUILDER_API_KEYS_FILE.",
                "no keys configured" if not keys else "INDEX_BUILDER_AUTH_ENABLED=false",
            )
        elif not keys:
            log.warning(
                "authentication is enabled but no API keys are configured: every protected "
                "route answers 401 until INDEX_BUILDER_API_KEYS or INDEX_BUILDER_API_KEYS_FILE "
                "is set"
            )
        else:
            log.info(
                "API keys required (%d keys: %s; reads %s)",
                len(keys),
                ", ".join(k.name for k in keys),
                "need a key" if auth.reads_require_key else "are open",
            )
        return auth

    def match(self, presented: str | None) -> Caller:
        """The caller for a presented key (compared with every digest, in constant time)."""
        if not presented or not presented.strip():
            return ANONYMOUS
        candidate = digest(presented.strip())
        found = None
        for key in self.keys:
            if hmac.compare_digest(key.digest, candidate):
                found = key
        return Caller(found, True)

    def identify(self, request: Request) -> Caller:
        """The caller of ``request`` (computed once per request; anonymous when disabled)."""
        if not self.enabled:
            return ANONYMOUS
        scope = request.scope
        state = scope.setdefault("state", {})
        caller: Caller | None = state.get(_CALLER)
        if caller is None:
            presented = None
            for name, value in scope["headers"]:  # raw headers: cheaper than request.headers
                if name == _HEADER_NAME:
                    presented = value.decode("latin-1")
                    break
            caller = state[_CALLER] = self.match(presented)
        return caller

    async def check(self, request: Request, scope: Scope) -> ApiKey | None:
        """:meth:`authorize` with failed keys throttled per client address.

        A request that sends a key from an address known to have spent its
        failed-key budget answers ``429`` before the key is checked; an invalid key
        is counted (shared through Redis when configured) and answers ``401``
        while the budget lasts, ``429`` once it is spent (with several processes,
        one that has not counted the address's last failure itself learns it from
        the next failure it counts). Requests without a key are not counted.
        """
        if not self.enabled:
            return None
        limiter = self.limiter
        if limiter is None or limiter.auth_failures is None:
            return self.authorize(request, scope)
        caller = self.identify(request)
        if not caller.presented:
            return self.authorize(request, scope)
        client = limiter.client_address(request)
        wait = limiter.auth_blocked(client)
        if wait:
            self._throttled(request, client, wait)
        if caller.key is None:
            quota = await limiter.auth_failed(client)
            if quota.allowed and quota.remaining == 0:  # this one spends the budget
                AUTH_BLOCKS.inc()
                log.warning(
                    "auth: %d invalid API keys from %s within %d s; its keys are refused for %d s",
                    quota.limit,
                    client,
                    quota.window_seconds,
                    quota.reset_seconds,
                )
            elif not quota.allowed:
                self._throttled(request, client, quota.reset_seconds)
        return self.authorize(request, scope)

    def _throttled(self, request: Request, client: str, wait: int) -> NoReturn:
        AUTH_FAILURES.labels("throttled").inc()
        log.debug("auth throttled: %s %s from %s", request.method, _route(request), client)
        raise ProblemError(
            429,
            "rate-limited",
            f"too many invalid API keys from this address: keys are refused for {wait} s",
            headers={"Retry-After": str(wait)},
        )

    def authorize(self, request: Request, scope: Scope) -> ApiKey | None:
        """The caller's key when it may use ``scope``; raises 401 or 403 otherwise."""
        if not self.enabled:
            return None
        caller = self.identify(request)
        if caller.presented and caller.key is None:
            self._refuse(request, "invalid", scope)
        if scope == "read" and not self.reads_require_key:
            return caller.key
        if caller.key is None:
            self._refuse(request, "missing", scope)
        elif not caller.key.allows(scope):
            self._refuse(request, "forbidden", scope, caller.key)
        else:
            log.debug("auth ok: %s %s (key %s)", request.method, _route(request), caller.key.name)
        return caller.key

    def _refuse(self, request: Request, reason: str, scope: str, key: ApiKey | None = None) -> None:
        AUTH_FAILURES.labels(reason).inc()
        log.warning(
            "auth %s: %s %s needs scope %r (%s) from %s",
            reason,
            request.method,
            _route(request),
            scope,
            f"key {key.name}" if key is not None else "no valid key",
            self._client(request),
        )
        if reason == "forbidden":
            assert key is not None
            raise ProblemError(
                403,
                "forbidden",
                f"the API key {key.name!r} lacks the {scope!r} scope this route needs",
            )
        if not self.keys:
            detail = (
                f"this route needs an API key with the {scope!r} scope, and none is "
                "configured: set INDEX_BUILDER_API_KEYS or INDEX_BUILDER_API_KEYS_FILE "
                "(or INDEX_BUILDER_AUTH_ENABLED=false for a private, single-user server)"
            )
        elif reason == "missing":
            detail = f"this route needs an API key with the {scope!r} scope in {HEADER}"
        else:
            detail = f"the API key in {HEADER} is not valid"
        raise ProblemError(401, "unauthorized", detail, headers={"WWW-Authenticate": "ApiKey"})

    def _client(self, request: Request) -> str:
        """The client address as the rate limits see it (the peer without a limiter)."""
        if self.limiter is not None:
            return self.limiter.client_address(request)
        client = request.scope.get("client")
        return str(client[0]) if client else "unknown"

    def health(self) -> dict[str, object]:
        """``ok``; ``degraded`` when keys are required but none is configured."""
        status = "degraded" if self.enabled and not self.keys else "ok"
        return {
            "status": status,
            "enabled": self.enabled,
            "keys": len(self.keys),
            "reads_require_key": self.reads_require_key,
        }


def _route(request: Request) -> str:
    """The route template (``/indices/{index_id}``) or, before routing, the path."""
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else request.url.path


def get_auth(request: Request) -> ApiKeyAuth:
    """The app's :class:`ApiKeyAuth` (on its services)."""
    auth: ApiKeyAuth | None = getattr(request.app.state.services, "auth", None)
    if auth is None:
        raise RuntimeError("the API key checks are not set up (attach_protection)")
    return auth


def require_scope(scope: Scope) -> Callable[..., Awaitable[ApiKey | None]]:
    """A FastAPI dependency: the caller's key must have ``scope`` (401/403 otherwise).

    ``read`` is only enforced with ``INDEX_BUILDER_READS_REQUIRE_KEY``. Use it as
    ``dependencies=[Depends(require_scope("admin"))]`` or as a parameter to get
    the caller's :class:`ApiKey` (None when authentication is disabled or the
    read is open and anonymous).
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def dependency(
        request: Request,
        _key: Annotated[str | None, Security(API_KEY_HEADER)] = None,
    ) -> ApiKey | None:
        return await get_auth(request).check(request, scope)

    dependency.__name__ = f"require_{scope}_scope"
    return dependency
