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
from index_builder.storage.failures import storage_failure

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "urn:index-builder:problem:"
RETRY_AFTER_SECONDS = 30
"""``Retry-After`` of a ``503`` (storage unavailable)."""
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
    415: "Unsupported Media Type",
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
    if instance is not None:  # the request path, bounded: a hostile path is not echoed whole
        body["instance"] = instance if len(instance) <= 256 else instance[:255] + "…"
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE)


def _validation_field(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


async def _body_problem(request: Request, error: Any) -> Response | None:
    """The problem of a request body that is not a JSON object at all: malformed JSON
    (400, where), another media type (415), or no body (422 naming it). None: the
    body is a JSON object whose fields are at fault (the caller names the field)."""
    path = request.url.path
    content_type = request.headers.get("content-type")
    body = await request.body()
    if error.get("type") == "json_invalid":
        position = error["loc"][1] if len(error["loc"]) > 1 else 0
        text = body.decode("utf-8", errors="replace")
        line = text.count("\n", 0, position) + 1
        column = position - text.rfind("\n", 0, position)
        why = str((error.get("ctx") or {}).get("error") or "not valid JSON")
        detail = f"invalid JSON at line {line}, column {column}: {why[:1].lower()}{why[1:]}"
        return problem_response(400, "invalid-json", detail, field="body", instance=path)
    if body and not _is_json(content_type):
        return problem_response(
            415,
            "unsupported-media-type",
            f"the request body must be JSON (Content-Type: application/json), got "
            f"{content_type or 'no Content-Type'}",
            field="body",
            instance=path,
        )
    if error.get("type") == "missing" and len(error.get("loc", ())) == 1:
        return problem_response(
            422,
            "invalid-input",
            "the request body is missing: send a JSON object (Content-Type: application/json)",
            field="body",
            instance=path,
        )
    if len(error.get("loc", ())) == 1 and error.get("type") in (
        "model_attributes_type",
        "dict_type",
        "model_type",
    ):
        got = type(error.get("input")).__name__
        kinds = {"list": "an array", "str": "a string", "int": "a number", "float": "a number"}
        return problem_response(
            422,
            "invalid-input",
            f"the request body must be a JSON object, got {kinds.get(got, got)}",
            field="body",
            instance=path,
        )
    return None


def install_problem_handlers(app: FastAPI) -> None:
    """Map every error to problem+json."""

    @app.exception_handler(IndexBuilderError)
    async def _domain(request: Request, exc: IndexBuilderError) -> Response:
        if exc.http_status >= 500:
            log.warning("service error on %s: %s", request.url.path, exc.message)
        response = problem_response(
            exc.http_status, exc.code, exc.message, field=exc.field, instance=request.url.path
        )
        if exc.http_status == 503:  # storage unavailable: worth trying again later
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        loc = tuple(first.get("loc", ()))
        if loc[:1] == ("body",):
            body_problem = await _body_problem(request, first)
            if body_problem is not None:
                return body_problem
        field = _validation_field(loc)
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
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            # FastAPI's answer to a body json cannot take (nested too deeply, bad UTF-8)
            return problem_response(
                400,
                "invalid-json",
                "the request body cannot be read as JSON (nested too deeply, or not UTF-8)",
                field="body",
                instance=request.url.path,
            )
        code = TITLES.get(exc.status_code, "error").lower().replace(" ", "-")
        return problem_response(exc.status_code, code, str(exc.detail), instance=request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        failure = storage_failure(exc)  # the storage's library error (DuckDB, S3, catalog)
        if failure is not None:
            log.warning("storage unavailable on %s: %s", request.url.path, failure.message)
            response = problem_response(
                failure.http_status, failure.code, failure.message, instance=request.url.path
            )
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        else:
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
