"""The Host header allow-list (``INDEX_BUILDER_ALLOWED_HOSTS``).

The API never builds a URL from the Host header (``status_url`` and ``Location``
are relative paths), so the default, ``*``, is safe. Naming the hosts
(``api.example.com``, ``*.example.com``) refuses every other Host with ``400``
problem+json (code ``invalid-host``) before the request reaches anything else,
which also keeps Starlette's own absolute redirects (a trailing slash) and
anything a proxy or cache keys by host on the names you serve. Like
Starlette's ``TrustedHostMiddleware``, but answering problem+json and without
its ``www.`` redirect. The request layer checks it first
(:class:`~index_builder.ops.middleware.RequestMiddleware`).
"""

from __future__ import annotations


def host_name(value: str) -> str:
    """The name of a Host header value, without its port, lower case
    (``[::1]:8000`` -> ``::1``)."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    name, _, _ = value.partition(":")
    return name
