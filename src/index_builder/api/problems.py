"""One error model for the API: RFC 9457 problem details (``application/problem+json``).

Every error response has ``type``, ``title``, ``status``, ``detail`` and, where
one input is to blame, ``field``. The same :class:`IndexBuilderError` classes the
CLI prints as one line map to their HTTP status here.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from index_builder.errors import IndexBuilderError

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "urn:index-builder:problem:"
"""Problem types are URNs: stable identifiers, listed in the README, not web pages."""

log = logging.getLogger("index_builder.api")


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field(description="URI of the problem type.", examples=[PROBLEM_BASE + "not-found"])
    title: str = Field(description="Short summary of the problem type.", examples=["Not Found"])
    status: int = Field(description="HTTP status code.", examples=[404])
    detail: str = Field(
        description="What went wrong for this request, and how to fix it.",
        examples=["unknown index 'nope' (known: ew100, ew-tech50)"],
    )
    field: str | None = Field(
        default=None,
        description="The request field at fault, when there is one.",
        examples=["index"],
    )
    instance: str | None = Field(default=None, description="The request path.")


TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def problem_response(
    status: int, code: str, detail: str, *, field: str | None = None, instance: str | None = None
) -> Response:
    """A problem+json response."""
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if field is not None:
        body["field"] = field
    if instance is not None:
        body["instance"] = instance
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE)


def _validation_field(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def install_problem_handlers(app: FastAPI) -> None:
    """Map every error to problem+json."""

    @app.exception_handler(IndexBuilderError)
    async def _domain(request: Request, exc: IndexBuilderError) -> Response:
        if exc.http_status >= 500:
            log.warning("service error on %s: %s", request.url.path, exc.message)
        return problem_response(
            exc.http_status, exc.code, exc.message, field=exc.field, instance=request.url.path
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        field = _validation_field(tuple(first.get("loc", ())))
        where = f"{field}: " if field else ""
        return problem_response(
            422,
            "invalid-input",
            f"{where}{first.get('msg', 'invalid value')}",
            field=field,
            instance=request.url.path,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = TITLES.get(exc.status_code, "error").lower().replace(" ", "-")
        return problem_response(exc.status_code, code, str(exc.detail), instance=request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        response = problem_response(
            500,
            "internal-error",
            "an unexpected error occurred; it has been logged",
            instance=request.url.path,
        )
        request_id = getattr(request.state, "request_id", None)  # set by the ops middleware
        if request_id is not None:
            response.headers["X-Request-ID"] = request_id
        return response
