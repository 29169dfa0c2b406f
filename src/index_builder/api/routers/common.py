"""Shared route pieces: query parameters and documented error responses."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import Query

from index_builder.api.problems import PROBLEM_MEDIA_TYPE, Problem
from index_builder.api.schemas import AS_OF_DESCRIPTION, AS_OF_EXAMPLES, AsOf
from index_builder.engine.definitions import DEFAULT_INDEX_ID


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for problem+json error responses."""
    descriptions = {
        404: "Unknown index, or no built data in the window (the detail says what is built "
        "and how to build it).",
        409: "Conflicts with the current state (e.g. a built-in index), or uses a feature "
        "switched off by a feature flag (`field` names the flag).",
        422: "Invalid input: bad date or timestamp, end before start, a window before the "
        "base date, an `as_of` in the future, malformed body. `field` names the input.",
    }
    return {
        status: {
            "model": Problem,
            "description": descriptions.get(status, "Error."),
            "content": {PROBLEM_MEDIA_TYPE: {}},
        }
        for status in statuses
    }


IndexQuery = Annotated[str, Query(description="Index id (see GET /indices).", examples=["ew100"])]
StartQuery = Annotated[
    dt.date | None,
    Query(description="First date of the window, YYYY-MM-DD (default: the base date)."),
]
EndQuery = Annotated[
    dt.date | None,
    Query(description="Last date of the window, YYYY-MM-DD (default: the last built day)."),
]
AsOfQuery = Annotated[AsOf | None, Query(description=AS_OF_DESCRIPTION, examples=AS_OF_EXAMPLES)]
DEFAULT_INDEX = DEFAULT_INDEX_ID
