"""HTTP caching of reads: strong ``ETag``, ``Cache-Control`` and ``304 Not Modified``.

A read's entity tag names exactly the bytes it would answer:

* results (performance, composition, changes) hash the published build version of
  the index and the query (the same key the response cache uses), so a ``304``
  is answered without reading the store or the cache, and a rebuild changes the tag;
* other reads (indices, flags, versions, providers) hash their body.

``Cache-Control`` says how long a shared cache may reuse an answer without asking
(``INDEX_BUILDER_HTTP_MAX_AGE_SECONDS``, default 0: ``no-cache``, i.e. always
revalidate, which costs a ``304`` and no body). Job states are ``no-store``.
"""

from __future__ import annotations

import hashlib

from fastapi import Request
from fastapi.responses import Response

NO_STORE = "no-store"


def strong_etag(*parts: str | bytes) -> str:
    """A quoted strong entity tag over ``parts`` (128 bits of SHA-256)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\x00")
    return f'"{digest.hexdigest()[:32]}"'


def if_none_match(request: Request, etag: str) -> bool:
    """True when the client's ``If-None-Match`` names ``etag`` (or is ``*``).

    The comparison is the weak one RFC 9110 prescribes for ``If-None-Match``:
    ``W/"x"`` matches ``"x"``.
    """
    return etag_matches(request.headers.get("if-none-match"), etag)


def etag_matches(header: str | None, etag: str) -> bool:
    """True when an ``If-None-Match`` value names ``etag`` or is ``*`` (weak comparison)."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


def read_cache_control(max_age_seconds: int) -> str:
    """``Cache-Control`` of a public read: revalidate always (0) or after ``max_age``."""
    if max_age_seconds <= 0:
        return "public, no-cache"
    return f"public, max-age={max_age_seconds}, must-revalidate"


def not_modified(etag: str, cache_control: str, **headers: str) -> Response:
    """``304`` with the validators the ``200`` would carry, and no body."""
    return Response(
        status_code=304, headers={"ETag": etag, "Cache-Control": cache_control, **headers}
    )
