"""Shared route pieces: query parameters and documented error responses."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import Path, Query

from index_builder.api.problems import PROBLEM_MEDIA_TYPE, Problem
from index_builder.api.schemas import (
    AS_OF_DESCRIPTION,
    AS_OF_EXAMPLES,
    AS_OF_VERSION_DESCRIPTION,
    AsOf,
)
from index_builder.engine.definitions import DEFAULT_INDEX_ID, INDEX_ID_PATTERN


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for problem+json error responses."""
    descriptions = {
        401: "No API key, or an unknown one, in `X-API-Key` (`WWW-Authenticate: ApiKey`). "
        "Reads need a key only with INDEX_BUILDER_READS_REQUIRE_KEY.",
        403: "The API key lacks the scope this route needs.",
        400: "Malformed request, e.g. `as_of` and `as_of_version` given together "
        "(`conflicting-options`, `field` names one of them).",
        404: "Unknown index, or no built data in the window (the detail says what is built "
        "and how to build it), or an unknown `as_of_version`.",
        409: "Conflicts with the current state (e.g. a built-in index), or uses a feature "
        "switched off by a feature flag (`field` names the flag).",
        422: "Invalid input: bad date or timestamp, end before start, a window before the "
        "base date, an `as_of` in the future, malformed body, a window longer than "
        "INDEX_BUILDER_MAX_WINDOW_DAYS. `field` names the input.",
        413: "The request body is larger than INDEX_BUILDER_MAX_BODY_BYTES.",
        429: "The caller's budget for this kind of request is spent: retry after "
        "`Retry-After` seconds (`RateLimit-*` headers describe the budget).",
        504: "No answer within INDEX_BUILDER_REQUEST_TIMEOUT_SECONDS; the work still "
        "finishes and a cached read keeps its answer: retry shortly.",
    }
    return {
        status: {
            "model": Problem,
            "description": descriptions.get(status, "Error."),
            "content": {PROBLEM_MEDIA_TYPE: {}},
        }
        for status in statuses
    }


READ_PROBLEMS = (401, 403, 429, 504)
"""Problems every read can answer (keys only with INDEX_BUILDER_READS_REQUIRE_KEY)."""
WRITE_PROBLEMS = (401, 403, 413, 429)
"""Problems every build, definition change and export can answer."""

IndexQuery = Annotated[
    str,
    Query(
        pattern=INDEX_ID_PATTERN,
        max_length=63,
        description="Index id (see GET /indices): lower-case letters, digits and '-'.",
        examples=["ew100"],
    ),
]
IndexPath = Annotated[
    str,
    Path(
        pattern=INDEX_ID_PATTERN,
        max_length=63,
        description="Index id: lower-case letters, digits and '-'.",
        examples=["ew100"],
    ),
]
StartQuery = Annotated[
    dt.date | None,
    Query(description="First date of the window, YYYY-MM-DD (default: the base date)."),
]
EndQuery = Annotated[
    dt.date | None,
    Query(description="Last date of the window, YYYY-MM-DD (default: the last built day)."),
]
AsOfQuery = Annotated[AsOf | None, Query(description=AS_OF_DESCRIPTION, examples=AS_OF_EXAMPLES)]
AsOfVersionQuery = Annotated[
    int | None, Query(ge=1, description=AS_OF_VERSION_DESCRIPTION, examples=[12])
]
DEFAULT_INDEX = DEFAULT_INDEX_ID
