"""The Host header allow-list (``INDEX_BUILDER_ALLOWED_HOSTS``).

The API never builds a URL from the Host header (``status_url`` and ``Location``
are relative paths), so the default, ``*``, is safe. Naming the hosts
(``api.example.com``, ``*.example.com``) refuses every other Host with ``400``
problem+json (code ``invalid-host``) before the request reaches anything else,
which also keeps Starlette's own absolute redirects (a trailing slash) and
anything a proxy or cache keys by host on the names you serve. Like
Starlette's ``TrustedHostMiddleware``, but answering problem+json and without
its ``www.`` redirect.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from index_builder.api.problems import problem_response


def host_name(value: str) -> str:
    """The name of a Host header value, without its port, lower case
    (``[::1]:8000`` -> ``::1``)."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    name, _, _ = value.partition(":")
    return name


class AllowedHostsMiddleware:
    """Answers ``400`` problem+json when the Host header is not an allowed name."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        patterns = [a.strip().lower().strip("[]") for a in allowed if a.strip()]  # [::1]: ::1
        self.names = frozenset(p for p in patterns if not p.startswith("*"))
        self.suffixes = tuple(p[1:] for p in patterns if p.startswith("*."))

    def allows(self, host: str) -> bool:
        """True when ``host`` (a name without port) is allowed."""
        return host in self.names or (bool(host) and host.endswith(self.suffixes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # the API has no WebSocket routes
            await self.app(scope, receive, send)
            return
        raw = next((v for k, v in scope["headers"] if k == b"host"), b"")
        host = host_name(raw.decode("latin-1"))
        if self.allows(host):
            await self.app(scope, receive, send)
            return
        response = problem_response(
            400,
            "invalid-host",
            "the Host header does not name this server (INDEX_BUILDER_ALLOWED_HOSTS)",
            instance=scope.get("path"),
        )
        await response(scope, receive, send)
